"""The experiment catalog: a small explicit registry, filled in one visible place below."""

from __future__ import annotations

from workbench.config import ConfigError
from workbench.experiments.base import Criterion, Experiment, ExperimentConfig

_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    if experiment.name in _REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    _REGISTRY[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown experiment {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


# --- registration: one line per experiment ---
from workbench.experiments.induction import Induction  # noqa: E402

register(Induction())

__all__ = ["Criterion", "Experiment", "ExperimentConfig", "get", "names", "register"]
