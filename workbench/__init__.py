"""workbench: train small transformers on a laptop CPU and look inside them.

    >>> import workbench
    >>> result = workbench.run("induction", mode="smoke")      # doctest: +SKIP
    >>> model = workbench.load_model("data/induction")          # doctest: +SKIP
    >>> early = workbench.load_model("data/induction", step=workbench.snapshots("data/induction")[3])  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, variant: str | None = None, step: int | None = None, device: str | None = None):
    """A run directory or `data/<experiment>` → the trained model (a variant's, a snapshot's), in eval mode."""
    from workbench.experiments.runner import load

    return load(path, variant=variant, step=step, device=device).model


def load(path, variant: str | None = None, step: int | None = None, device: str | None = None):
    """`Loaded(experiment, config, model)` of a run directory or `data/<experiment>` (a variant's, a snapshot's)."""
    from workbench.experiments.runner import load as _load

    return _load(path, variant=variant, step=step, device=device)


def snapshots(path, variant: str | None = None) -> list[int]:
    """The training steps at which a saved run kept model snapshots."""
    from workbench.experiments.runner import snapshots as _snapshots

    return _snapshots(path, variant)


def load_models(path, device: str | None = None):
    """(experiment, config, models): every model of a saved run, a dict by variant when it has variants."""
    from workbench.experiments.runner import load_models as _load_models

    return _load_models(path, device)


def figures(path, device: str | None = None) -> dict:
    """Every figure of a saved run or `data/<experiment>`, drawn now (variants' keys prefixed `name.`)."""
    from workbench.experiments.runner import figures as _figures

    return _figures(path, device)


def experiment_path(experiment: str, mode: str = "shipped", **kwargs):
    """data/<experiment> for mode="shipped"; otherwise train that preset now and return its run directory."""
    from workbench.experiments.runner import experiment_path as _path

    return _path(experiment, mode=mode, **kwargs)


def run(experiment: str, mode: str = "quick", **kwargs):
    """Train an experiment and return its result dict; kwargs as in `experiments.runner.run`."""
    from workbench.experiments.runner import run as _run

    return _run(experiment, mode=mode, **kwargs)


def load_experiment(experiment: str, mode: str = "shipped", **kwargs):
    """`Loaded(experiment, config, model)`: the shipped model, or a freshly trained preset."""
    from workbench.experiments.runner import load_experiment as _load

    return _load(experiment, mode=mode, **kwargs)
