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


def names(family: str | None = None) -> list[str]:
    """Registered experiments, in registration order; only one hook family's if `family` is given."""
    return [name for name, exp in _REGISTRY.items() if family is None or exp.family == family]


# --- registration: one line per experiment ---
from workbench.experiments.attention_spans import AttentionSpans  # noqa: E402
from workbench.experiments.bursty import Bursty  # noqa: E402
from workbench.experiments.codebook import Codebook  # noqa: E402
from workbench.experiments.cot_parity import CoTParity  # noqa: E402
from workbench.experiments.future_lens import FutureLens  # noqa: E402
from workbench.experiments.grokking import Grokking  # noqa: E402
from workbench.experiments.icl_boolean import ICLBoolean  # noqa: E402
from workbench.experiments.icl_linear import ICLLinear  # noqa: E402
from workbench.experiments.icl_markov import ICLMarkov  # noqa: E402
from workbench.experiments.icl_mixture import ICLMixture  # noqa: E402
from workbench.experiments.induction import Induction  # noqa: E402
from workbench.experiments.induction_circuit import InductionCircuit  # noqa: E402
from workbench.experiments.inverse_permutation import InversePermutationExperiment  # noqa: E402
from workbench.experiments.length_gen import LengthGen  # noqa: E402
from workbench.experiments.looped import Looped  # noqa: E402
from workbench.experiments.mamba import Mamba  # noqa: E402
from workbench.experiments.no_op_heads import NoOpHeads  # noqa: E402
from workbench.experiments.rasp import Rasp  # noqa: E402
from workbench.experiments.scaling import Scaling  # noqa: E402
from workbench.experiments.set_prompting import SetPrompting  # noqa: E402
from workbench.experiments.ssmax import SSMax  # noqa: E402
from workbench.experiments.structural_probe import StructuralProbe  # noqa: E402
from workbench.experiments.super_weight import SuperWeight  # noqa: E402
from workbench.experiments.svm import SVM  # noqa: E402
from workbench.experiments.task_diversity import TaskDiversity  # noqa: E402
from workbench.experiments.topics import TopicsExperiment  # noqa: E402
from workbench.experiments.universal import Universal  # noqa: E402

register(Induction())
register(ICLLinear())
register(ICLMarkov())
register(ICLBoolean())
register(TaskDiversity())
register(Bursty())
register(Looped())
register(Codebook())
register(Grokking())
register(InductionCircuit())
register(SetPrompting())
register(SSMax())
register(NoOpHeads())
register(LengthGen())
register(Mamba())
register(InversePermutationExperiment())
register(CoTParity())
register(TopicsExperiment())
register(SVM())
register(Rasp())
register(FutureLens())
register(StructuralProbe())
register(SuperWeight())
register(AttentionSpans())
register(Scaling())
register(ICLMixture())
register(Universal())

__all__ = ["Criterion", "Experiment", "ExperimentConfig", "get", "names", "register"]
