"""The Experiment contract: config + presets, train, evaluate, criteria as data, figures."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from workbench.config import Config, ConfigError, apply_overrides, flatten
from workbench.models import ModelConfig, build_model
from workbench.runs import Run
from workbench.tasks import Task, check_objective
from workbench.tasks.base import token_names
from workbench.train import LossFn, Phase, Progress, TrainConfig, Trainer, apply_phase_setups

Mode = Literal["smoke", "quick", "full"]
MODES: tuple[Mode, ...] = ("smoke", "quick", "full")
MAX_SEED = 2**63 - 1

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_fits(task: Config, model: ModelConfig) -> None:
    """Raise ValueError (inside a config validator) when a task's sequences do not fit the model: longer than
    its context, tokens beyond its vocabulary, or real-valued tokens of another width than its read-in."""
    if task.seq_len > model.n_ctx:
        raise ValueError(f"task.seq_len={task.seq_len} (tokens a sequence) exceeds model.n_ctx={model.n_ctx}; "
                         "shorten the task or raise model.n_ctx")
    vocab = getattr(task, "d_vocab", None)
    if vocab is not None and not model.d_input and vocab > model.d_vocab:
        raise ValueError(f"the task uses {vocab} tokens; model.d_vocab={model.d_vocab} is too small")
    width = getattr(task, "d_input", None)
    if width is not None and width != model.d_input:
        raise ValueError(f"the task's tokens are {width} wide, so it needs model.d_input={width}; "
                         f"got model.d_input={model.d_input}")


def variant_logs(cfg: ExperimentConfig, run: Run) -> dict[str, list[dict]]:
    """Each variant's training log under its metric prefix ("name."), or the run's own log under ""."""
    return {f"{name}.": run.variant(name).metrics() for name in cfg.variants} or {"": run.metrics()}


def prefixed(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each variant's metrics under its name, as criteria and `combine_metrics` read them: {"a": {"x": 1}} →
    {"a.x": 1}."""
    return {f"{name}.{key}": value for name, metrics in scores.items() for key, value in metrics.items()}


def _nan_or(reduce: Callable[[list[float]], float], values: Iterable[float]) -> float:
    values = list(values)
    return float("nan") if any(math.isnan(v) for v in values) else reduce(values)


def strict_min(values: Iterable[float]) -> float:
    """The smallest value, NaN if any is: a metric made of several must not pass a criterion because one part
    could not be measured (Python's `min` keeps the first item when compared with NaN, so drops a later NaN)."""
    return _nan_or(min, values)


def strict_max(values: Iterable[float]) -> float:
    """The largest value, NaN if any is (see `strict_min`)."""
    return _nan_or(max, values)


def first_step(rows: list[dict], key: str, threshold: float) -> int | None:
    """The first logged step at which `key` reached `threshold` (None: never)."""
    return next((row["step"] for row in rows if row.get(key, float("-inf")) >= threshold), None)


class DeviceConfig(Config):
    """The model section of an experiment whose model's shape follows from its task (a compiled program, the
    attention SVM): only where it runs."""

    device: Literal["cpu", "cuda", "mps", "auto"] = "cpu"


class ExperimentConfig(Config):
    """Every experiment config has these sections; an experiment adds a `task` section.

    `variants` names several models trained in one run, each a set of overrides on this config, e.g.
    `{"learned": {"model": {"positional": "learned"}}, "rotary": {}}`; `--set variants.learned.train.lr=3e-3`
    edits one. Empty: the run trains one model.
    """

    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_variants(self) -> ExperimentConfig:
        for name in self.variants:
            if not VARIANT_NAME.fullmatch(name):
                raise ValueError(f"variants.{name}: a variant name may use letters, digits, '_' and '-' only")
            self.variant(name)  # its overrides must make a valid config
        return self

    @model_validator(mode="after")
    def _task_fits_model(self) -> ExperimentConfig:
        task = self.task_to_fit()
        if task is not None:
            check_fits(task, self.model)
        return self

    def task_to_fit(self) -> Config | None:
        """The task config whose sequences must fit the model: the `task` section when it has sequences (a
        `seq_len`); an experiment whose variants lengthen them returns the longest."""
        task = getattr(self, "task", None)
        return task if hasattr(task, "seq_len") else None

    def variant(self, name: str) -> ExperimentConfig:
        """The config of one variant: this config with the variant's overrides applied (and no variants)."""
        if name not in self.variants:
            raise ConfigError(f"variant {name!r} unknown; this config has: {', '.join(self.variants) or 'none'}")
        base = self.model_copy(update={"variants": {}})
        return apply_overrides(base, flatten(self.variants[name]), label=f"variants.{name}:")


class HeldOutConfig(ExperimentConfig):
    """An experiment scored on held-out data it samples itself (`Experiment.eval_batch`): `eval_batch` items drawn
    with `eval_seed`. A config may change the default size and say what an item is."""

    eval_batch: int = Field(256, ge=1, description="held-out sequences the model is scored on")
    eval_seed: int = Field(12345, ge=0, description="held-out data: differs from the training stream")


@dataclass(frozen=True)
class Criterion:
    """A number the reproduction must reach, with the paper it comes from: `metric op threshold`, or, with
    `versus`, `metric op threshold × versus` (one metric against another, e.g. variant A's vs variant B's).

    `modes` names the presets whose verdict it counts in (None: all). A claim the quick preset cannot reach on a
    CPU is still measured and reported there, but only a full run is judged on it."""

    name: str
    metric: str
    op: Literal[">=", "<=", ">", "<"]
    threshold: float
    reference: str
    versus: str | None = None
    modes: tuple[Mode, ...] | None = None

    @property
    def symbol(self) -> str:
        return {">=": "≥", "<=": "≤", ">": ">", "<": "<"}[self.op]

    @property
    def needs(self) -> str:
        where = f" (judged in {', '.join(self.modes)} runs)" if self.modes else ""
        return f"{self.symbol} {self.threshold:.4g}" + (f" × {self.versus}" if self.versus else "") + where

    def check(self, metrics: dict[str, Any], mode: str | None = None) -> dict:
        value = metrics.get(self.metric)
        other = metrics.get(self.versus) if self.versus else None
        bound = self.threshold if self.versus is None else None if other is None else self.threshold * other
        passed = value is not None and bound is not None and bool(_OPS[self.op](value, bound))
        return {"name": self.name, "metric": self.metric, "op": self.op, "threshold": self.threshold,
                "versus": self.versus, "bound": bound, "value": value, "passed": passed,
                "counts": mode is None or self.modes is None or mode in self.modes, "reference": self.reference}


def verdict(criteria: list[dict]) -> bool:
    """A result passes when every criterion that counts in its preset passes."""
    return all(c["passed"] for c in criteria if c.get("counts", True))


class Experiment:
    """Subclass per phenomenon; register it in `workbench/experiments/__init__.py`.

    The default `train` builds the model, runs a `Trainer` over `task(cfg)` through `phases(cfg)` with the
    task's named loss (or `loss(cfg)`), and resumes from the run's latest checkpoint. Experiments with
    variants get each variant's config (`cfg.variant(name)`) in `train`, and all models in
    `evaluate_variants` / `figures_variants` (defaults: per-variant metrics prefixed `name.`).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    claim: ClassVar[str]
    family: ClassVar[str] = "attention"  # which hook family's page shows it: attention | icl | …
    hooked: ClassVar[bool] = True  # its models are hooked Transformers, which the model pages open
    Config: ClassVar[type[ExperimentConfig]]
    presets: ClassVar[dict[Mode, dict[str, Any]]]  # dotted overrides on top of Config() defaults
    criteria: ClassVar[list[Criterion]]
    # Snapshots `ship` copies into data/ (float16): per run, shared by its variants, at least 4 each; 0: none.
    shipped_snapshots: ClassVar[int] = 8
    # Other files a run (or each variant) writes beside its model, which `ship` copies too (e.g. a fitted SAE).
    artifacts: ClassVar[tuple[str, ...]] = ()

    def memo(self, what: str, model: nn.Module | None, cfg: ExperimentConfig, compute: Callable[[], Any]) -> Any:
        """`compute()` once per (what, model object, config): evaluating a run and drawing its figures ask for the
        same costly analysis (discovery, probes). The last few results are kept, each with its model, so a new
        model that happens to reuse a freed one's id is never served a stale result."""
        store = self.__dict__.setdefault("_memo", {})
        key = (what, id(model), cfg.model_dump_json())
        if key in store and store[key][0] is model:
            return store[key][1]
        value = compute()
        store[key] = (model, value)
        while len(store) > 32:  # rasp: six models, each with its discovery and evaluation
            store.pop(next(iter(store)))
        return value

    def config(self, mode: Mode = "quick", overrides: dict[str, Any] | None = None,
               seed: int | None = None) -> ExperimentConfig:
        if mode not in self.presets:
            raise ConfigError(f"mode {mode!r} unknown for {self.name}; choose one of {', '.join(self.presets)}")
        cfg = apply_overrides(self.Config(), self.presets[mode])
        if seed is not None:
            overrides = {**(overrides or {}), "seed": seed}
        cfg = apply_overrides(cfg, overrides or {})
        for one in [cfg.variant(v) for v in cfg.variants] or [cfg]:
            check_objective(self.task(one), one.model)
        return cfg

    def task(self, cfg: ExperimentConfig) -> Task:
        raise NotImplementedError

    def sample_prompt(self, cfg: ExperimentConfig, seed: int = 0) -> Tensor:
        """One sequence `[1 pos]` from the experiment's task: what the dashboard shows by default."""
        return self.task(cfg).sample(1, torch.Generator().manual_seed(seed)).inputs

    def eval_batch(self, cfg: HeldOutConfig, size: int | None = None):
        """Held-out data: `size` (default `cfg.eval_batch`) sequences from the task, seeded by `cfg.eval_seed`
        so they differ from the training stream; at step None, i.e. past any curriculum."""
        return self.task(cfg).sample(size or cfg.eval_batch, torch.Generator().manual_seed(cfg.eval_seed))

    def circuit_prompts(self, cfg: ExperimentConfig, n: int = 16) -> tuple[Tensor, Tensor, Tensor] | None:
        """For the circuits tools: `n` clean token prompts `[n pos]`, corrupted ones of the same shape that break
        the behaviour, and the positions `[k]` whose next token a metric scores. None: the experiment has none."""
        return None

    def build(self, cfg: ExperimentConfig) -> nn.Module:
        model = build_model(cfg.model, seed=cfg.seed)
        if not cfg.model.d_input:  # token models read and write tokens as the task names them
            model.token_names = token_names(self.task(cfg), cfg.model.d_vocab)
        return model

    def control(self, cfg: ExperimentConfig) -> nn.Module:
        """A never-trained model of the same build (seed + 1): the baseline a probe or score must beat."""
        return self.build_trained(cfg.model_copy(update={"seed": cfg.seed + 1})).eval()

    def phases(self, cfg: ExperimentConfig) -> list[Phase]:
        """Training phases; one by default. A phase's setup may insert modules (see `train.Phase`)."""
        return [Phase("train", cfg.train)]

    def build_trained(self, cfg: ExperimentConfig, step: int | None = None) -> nn.Module:
        """The architecture the model has at `step` (default: the end): `build` plus the setups of the
        phases started before it. Loading weights into it is the caller's job."""
        model = self.build(cfg)
        apply_phase_setups(model, self.phases(cfg), step)
        return model

    def loss(self, cfg: ExperimentConfig) -> LossFn | None:
        """A custom loss (e.g. with named components); None trains with the task's named loss."""
        return None

    def evaluate_during_training(self, model: nn.Module, cfg: ExperimentConfig) -> dict[str, float]:
        """`evaluate` on a held-out batch capped at 64 (a config's `eval_batch`), so periodic evaluation is cheap."""
        if isinstance(cfg, HeldOutConfig):
            cfg = cfg.model_copy(update={"eval_batch": min(64, cfg.eval_batch)})
        return self.evaluate(model, cfg)

    def train(self, cfg: ExperimentConfig, run: Run | None, callback: Callable[[Progress], None] | None = None,
              progress_bar: bool = True) -> nn.Module:
        trainer = Trainer(self.build(cfg), self.task(cfg), self.phases(cfg), cfg.seed, run=run,
                          loss_fn=self.loss(cfg), evaluate=lambda m: self.evaluate_during_training(m, cfg),
                          callback=callback, progress_bar=progress_bar)
        return trainer.fit()

    def evaluate(self, model: nn.Module, cfg: ExperimentConfig) -> dict[str, float]:
        raise NotImplementedError

    def evaluate_variants(self, models: dict[str, nn.Module], cfg: ExperimentConfig) -> dict[str, float]:
        """All variants' metrics, each prefixed `name.`; override to add metrics that compare variants."""
        metrics = prefixed(self.variant_scores(models, cfg))
        return metrics | self.combine_metrics(metrics)

    def variant_scores(self, models: dict[str, nn.Module], cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
        """`evaluate` of each trained variant, memoised so that figures drawing the same numbers reuse them."""
        scores = {}
        for name, model in models.items():
            one = cfg.variant(name)
            scores[name] = self.memo("evaluate", model, one, lambda: self.evaluate(model, one))  # noqa: B023
        return scores

    def combine_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics computed across variants from their prefixed metrics alone (a fit over model sizes), so that a
        sweep training the variants on a cluster (`workbench sweep`) reports them too. None by default."""
        return {}

    def run_metrics(self, cfg: ExperimentConfig, run: Run, models: nn.Module | dict[str, nn.Module]
                    ) -> dict[str, float]:
        """Metrics read from the run's files — its training log (`run.metrics()`; a variant's under
        `run.variant(name)`), or artifacts it saved (`artifacts`) — merged into the result whenever a run is
        evaluated, shipped data included. None by default."""
        return {}

    def figures(self, model: nn.Module, cfg: ExperimentConfig, run: Run | None = None) -> dict[str, go.Figure]:
        return {}

    def figures_variants(self, models: dict[str, nn.Module], cfg: ExperimentConfig,
                         run: Run | None = None) -> dict[str, go.Figure]:
        return {f"{name}.{key}": fig for name, model in models.items()
                for key, fig in self.figures(model, cfg.variant(name), run and run.variant(name)).items()}

    def combine_sweep(self, results: list[dict]) -> dict[str, go.Figure]:
        """Figures drawn across a sweep's runs (each a result dict: config, metrics, …); none by default."""
        return {}

    def check(self, metrics: dict[str, Any], mode: str | None = None) -> list[dict]:
        return [c.check(metrics, mode) for c in self.criteria]
