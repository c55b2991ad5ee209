"""workbench: train small transformers on a laptop CPU and look inside them.

    >>> import workbench
    >>> result = workbench.run("induction", mode="smoke")      # doctest: +SKIP
    >>> model = workbench.load_model("data/induction")          # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(path):
    """A run directory or `data/<experiment>` → the trained model, ready in eval mode."""
    from workbench.experiments.runner import load

    return load(path)[2]


def run(experiment: str, mode: str = "quick", **kwargs):
    """Train an experiment and return its result dict; kwargs as in `experiments.runner.run`."""
    from workbench.experiments.runner import run as _run

    return _run(experiment, mode=mode, **kwargs)


def load_experiment(experiment: str, mode: str = "shipped", **kwargs):
    """(experiment, config, model): the shipped model, or a freshly trained preset."""
    from workbench.experiments.runner import load_experiment as _load

    return _load(experiment, mode=mode, **kwargs)
