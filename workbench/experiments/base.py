"""The Experiment contract: config + presets, train, evaluate, criteria as data, figures."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import plotly.graph_objects as go
import torch
from pydantic import Field
from torch import Tensor, nn

from workbench.config import Config, ConfigError, apply_overrides
from workbench.models import ModelConfig, Transformer, build_model
from workbench.runs import Run
from workbench.tasks import Task
from workbench.train import Progress, TrainConfig

Mode = Literal["smoke", "quick", "full"]
MODES: tuple[Mode, ...] = ("smoke", "quick", "full")
MAX_SEED = 2**63 - 1

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


class ExperimentConfig(Config):
    """Every experiment config has these sections; an experiment adds a `task` section."""

    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class Criterion:
    """A number the reproduction must reach: `metric op threshold`, with the paper it comes from."""

    name: str
    metric: str
    op: Literal[">=", "<=", ">", "<"]
    threshold: float
    reference: str

    @property
    def symbol(self) -> str:
        return {">=": "≥", "<=": "≤", ">": ">", "<": "<"}[self.op]

    def check(self, metrics: dict[str, Any]) -> dict:
        value = metrics.get(self.metric)
        passed = value is not None and bool(_OPS[self.op](value, self.threshold))
        return {"name": self.name, "metric": self.metric, "op": self.op, "threshold": self.threshold,
                "value": value, "passed": passed, "reference": self.reference}


class Experiment:
    """Subclass per phenomenon; register it in `workbench/experiments/__init__.py`."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    claim: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]
    presets: ClassVar[dict[Mode, dict[str, Any]]]  # dotted overrides on top of Config() defaults
    criteria: ClassVar[list[Criterion]]

    def config(self, mode: Mode = "quick", overrides: dict[str, Any] | None = None,
               seed: int | None = None) -> ExperimentConfig:
        if mode not in self.presets:
            raise ConfigError(f"mode {mode!r} unknown for {self.name}; choose one of {', '.join(self.presets)}")
        cfg = apply_overrides(self.Config(), self.presets[mode])
        if seed is not None:
            overrides = {**(overrides or {}), "seed": seed}
        return apply_overrides(cfg, overrides or {})

    def task(self, cfg: ExperimentConfig) -> Task:
        raise NotImplementedError

    def sample_prompt(self, cfg: ExperimentConfig, seed: int = 0) -> Tensor:
        """One sequence `[1 pos]` from the experiment's task: what the dashboard shows by default."""
        return self.task(cfg).sample(1, torch.Generator().manual_seed(seed)).tokens

    def build(self, cfg: ExperimentConfig) -> nn.Module:
        return build_model(cfg.model, seed=cfg.seed)

    def train(self, cfg: ExperimentConfig, run: Run | None, callback: Callable[[Progress], None] | None = None,
              resume_from: str | None = None, progress_bar: bool = True) -> Transformer:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, cfg: ExperimentConfig) -> dict[str, float]:
        raise NotImplementedError

    def figures(self, model: nn.Module, cfg: ExperimentConfig, run: Run | None = None) -> dict[str, go.Figure]:
        return {}

    def check(self, metrics: dict[str, Any]) -> list[dict]:
        return [c.check(metrics) for c in self.criteria]
