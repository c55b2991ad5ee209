"""Toy experiments that exercise the core seams: real-valued inputs with MSE and a curriculum, a custom
build, variants compared by a criterion, and a second phase that inserts a module.

Tests register them for their own duration (`registered`); `python -m tests.toys ARGS…` runs the
workbench CLI with them registered, so a test can SIGKILL a real process.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from pydantic import Field
from torch import nn

from workbench import experiments
from workbench.config import Config
from workbench.experiments.base import Criterion, Experiment, ExperimentConfig
from workbench.models import ModelConfig
from workbench.tasks import Batch
from workbench.train import Phase, TrainConfig, masked_mean, position_losses


class RegressionConfig(Config):
    d: int = Field(4, ge=1)
    points: int = Field(8, ge=1)
    every: int = Field(3, ge=1, description="one more active input dimension every this many steps")


class Regression:
    """y_i = w·x_i with a fresh w per sequence; a curriculum activates input dimensions one by one."""

    loss, causal = "mse", False

    def __init__(self, cfg: RegressionConfig):
        self.cfg, self.seq_len = cfg, cfg.points

    def active(self, step: int | None) -> int:
        return self.cfg.d if step is None else min(self.cfg.d, 1 + step // self.cfg.every)

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        x = torch.randn(batch, c.points, c.d, generator=generator)
        x[..., self.active(step):] = 0
        w = torch.randn(batch, c.d, 1, generator=generator)
        y = (x @ w).squeeze(-1)
        return Batch(x, y, torch.ones(batch, c.points, dtype=torch.bool), {"active": torch.tensor(self.active(step))})


class ToyConfig(ExperimentConfig):
    model: ModelConfig = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_input=4, d_output=1, n_ctx=8,
                                     positional="none", mask="bidirectional")
    task: RegressionConfig = RegressionConfig()
    train: TrainConfig = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=2, checkpoint_every=10,
                                     log_every=1, snapshots=8)


class ToyRegression(Experiment):
    name, title, paper, claim = "toy-regression", "Toy regression", "tests", "fits y = w·x"
    Config = ToyConfig
    presets = {"smoke": {}, "quick": {}, "full": {}}
    criteria = [Criterion("fits", "mse", "<=", 100.0, "tests")]

    def task(self, cfg):
        return Regression(cfg.task)

    def build(self, cfg):
        """A custom build (an extra parameter): loading must go through it, not a plain build_model."""
        model = super().build(cfg)
        model.register_parameter("output_scale", nn.Parameter(torch.ones(())))
        return model

    @torch.no_grad()
    def evaluate(self, model, cfg):
        batch = self.task(cfg).sample(64, torch.Generator().manual_seed(1))
        return {"mse": float(masked_mean(position_losses(model, batch, "mse"), batch.loss_mask))}


class ToyVariants(ToyRegression):
    name = "toy-variants"
    presets = {mode: {"variants": {"narrow": {"model": {"d_model": 8}}, "wide": {}}}
               for mode in ("smoke", "quick", "full")}
    criteria = [Criterion("wide no worse than 2× narrow", "wide.mse", "<=", 2.0, "tests", versus="narrow.mse")]


def insert_adapter(model: nn.Module) -> None:
    """Phase 2's setup: a new trainable module applied to the final residual through a permanent hook."""
    model.add_module("adapter", nn.Linear(model.cfg.d_model, model.cfg.d_model))
    model.ln_final.hook_normalized.add_hook(lambda x, hook: x + model.adapter(x), is_permanent=True)


class ToyPhases(ToyRegression):
    name = "toy-phases"

    def phases(self, cfg):
        half = cfg.train.model_copy(update={"steps": cfg.train.steps // 2})
        return [Phase("pretrain", half), Phase("adapt", half.model_copy(update={"lr": 1e-3}), insert_adapter)]

    def loss(self, cfg):
        def named(model, batch):
            mse = masked_mean(position_losses(model, batch, "mse"), batch.loss_mask)
            l1 = sum(p.abs().mean() for p in model.parameters())
            return {"loss": mse + 1e-3 * l1, "mse": mse, "l1": l1}
        return named


TOYS = [ToyRegression(), ToyVariants(), ToyPhases()]


@contextlib.contextmanager
def registered():
    for toy in TOYS:
        experiments.register(toy)
    try:
        yield
    finally:
        for toy in TOYS:
            experiments._REGISTRY.pop(toy.name, None)


if __name__ == "__main__":
    from workbench.cli import main

    with registered():
        sys.exit(main(sys.argv[1:]))
