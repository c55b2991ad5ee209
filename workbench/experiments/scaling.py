"""Scaling laws (Henighan et al. 2020, "Scaling Laws for Autoregressive Generative Modeling").

Claim: the converged loss of a model falls with its non-embedding parameter count N as a power law plus a
constant, L(N) = L∞ + (N₀/N)^α, and L∞ is the entropy of the data. Shown on an order-2 Markov language whose
entropy floor is exact (`tasks/language.py`), so the fitted L∞ is checked against the truth. Seven sizes span 68×
in N (d:layers 16:1 … 96:2; DESIGN §3's recipe: pre-LN GPT, tied embeddings, d_head 16, GELU 4×, AdamW β 0.95,
wd 0.1, lr 3e-3·√(64/d), 8M fresh tokens each); three smaller token budgets at d 32, 2 layers give the data axis.

Every size is a variant, so `workbench run scaling` trains them one after another and `workbench sweep scaling`
trains them in parallel on a Ray cluster (local, or an existing one with `--address`); both fit the same law
from the same per-size metrics (`combine_metrics`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict

import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator

from workbench.experiments.base import Criterion, Experiment, HeldOutConfig, prefixed
from workbench.hooks.scaling import PowerLaw, fit_power_law
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.language import Order2Language, Order2LanguageConfig
from workbench.train import TrainConfig
from workbench.viz.scaling import scaling_law_figure

PAPER = "Henighan et al. 2020, Scaling Laws for Autoregressive Generative Modeling"
SIZES = [(16, 1), (24, 1), (32, 1), (32, 2), (48, 2), (64, 2), (96, 2)]  # (d_model, layers): N 3.3k … 224k
DATA_SIZE = (32, 2)
BATCH, SEQ_LEN = 16, 64
FIELDS = ("loss", "excess", "params", "tokens")  # what each size reports, and the fits read


def size_variant(d_model: int, layers: int, steps: int) -> dict:
    """One point of the sweep: d_head 16, GELU 4×, lr 3e-3·√(64/d), 5 % warmup."""
    return {"model": {"d_model": d_model, "n_layers": layers, "n_heads": max(1, d_model // 16), "d_head": 16,
                      "d_mlp": 4 * d_model},
            "train": {"steps": steps, "warmup_steps": max(1, steps // 20), "lr": 3e-3 * math.sqrt(64 / d_model)}}


def sweep_variants(steps: int, data_steps: tuple[int, ...] = (), sizes=SIZES) -> dict[str, dict]:
    variants = {f"d{d}L{n}": size_variant(d, n, steps) for d, n in sizes}
    d, n = DATA_SIZE
    variants |= {f"d{d}L{n}-{s * BATCH * SEQ_LEN // 1024}k": size_variant(d, n, s) for s in data_steps}
    return variants


class ScalingConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=128, tied_embeddings=True,
                                     n_ctx=SEQ_LEN, d_vocab=32)
    task: Order2LanguageConfig = Order2LanguageConfig(seq_len=SEQ_LEN)
    train: TrainConfig = TrainConfig(steps=7812, batch_size=BATCH, lr=3e-3, warmup_steps=390, min_lr_ratio=0.1,
                                     weight_decay=0.1, betas=(0.9, 0.95), log_every=50, snapshots=4)
    # 8M tokens a size; the data axis at d 32, 2 layers: 1M, 2M, 4M (and the size axis's 8M). With 4M, every
    # size spent 500–1350 steps (0.5–1.4M tokens) on the bigram plateau before using the token two back, the
    # smaller ones longest: R² 0.988, L∞ +0.041 over the floor; the 0.5M and 1M data points never left it.
    variants: dict[str, dict] = sweep_variants(7812, (976, 1953, 3906))
    eval_batch: int = Field(2048, ge=1, description="held-out sequences, the same for every size")

    @model_validator(mode="after")
    def _fits_model(self) -> ScalingConfig:
        if self.variants:  # a whole run (one sweep point is a single model, with no variants)
            at_budget = size_axis(self)
            if len(set(at_budget.values())) < 3:
                raise ValueError(f"variants: a fit of L(N) needs ≥ 3 model sizes at the largest token budget; got "
                                 f"{len(set(at_budget.values()))} ({', '.join(at_budget) or 'none'})")
        return self


def size_axis(cfg: ScalingConfig) -> dict[str, tuple[int, int]]:
    """The variants at the largest step count, one per distinct (d_model, layers)."""
    shapes = {}
    for name, overrides in cfg.variants.items():
        model, train = {**cfg.model.model_dump(), **overrides.get("model", {})}, overrides.get("train", {})
        shapes[name] = (train.get("steps", cfg.train.steps), (model["d_model"], model["n_layers"]))
    budget = max(steps for steps, _ in shapes.values())
    return {name: shape for name, (steps, shape) in shapes.items() if steps == budget}


def non_embedding_params(model: torch.nn.Module) -> int:
    """N: every parameter but the token and position embeddings (Kaplan et al.'s count)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("embed.", "pos_embed.")))


def points(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """`{"d16L1.loss": …, "d16L1.params": …}` → `{"d16L1": {"loss": …, "params": …}}`."""
    rows = defaultdict(dict)
    for key, value in metrics.items():
        name, dot, field = key.rpartition(".")
        if dot and field in FIELDS:
            rows[name][field] = value
    return {name: row for name, row in rows.items() if len(row) == len(FIELDS)}


def axes(metrics: dict[str, float]) -> tuple[dict, dict]:
    """The size axis (every variant at the largest token budget) and the data axis (the size trained on the most
    budgets, ≥ 3 of them), each as {variant: row}."""
    rows = points(metrics)
    if not rows:
        return {}, {}
    budget = max(r["tokens"] for r in rows.values())
    size = {n: r for n, r in rows.items() if r["tokens"] == budget}
    by_params = defaultdict(dict)
    for n, r in rows.items():
        by_params[r["params"]][n] = r
    data = max(by_params.values(), key=len)
    return size, data if len({r["tokens"] for r in data.values()}) >= 3 else {}


@functools.lru_cache(maxsize=4)
def language(config_json: str) -> Order2Language:
    """One language per task config (as JSON): every size shares it, and building it runs a power iteration."""
    return Order2Language(Order2LanguageConfig.model_validate_json(config_json))


def entropy_floor(rows: dict[str, dict[str, float]]) -> float:
    """The task's floor, as every size reports it: loss − excess."""
    return next(r["loss"] - r["excess"] for r in rows.values())


def fits(metrics: dict[str, float]) -> tuple[PowerLaw | None, PowerLaw | None]:
    size, data = axes(metrics)
    fit_n = fit_d = None
    if len({r["params"] for r in size.values()}) >= 3:
        fit_n = fit_power_law([r["params"] for r in size.values()], [r["loss"] for r in size.values()], "sizes")
    if data:
        fit_d = fit_power_law([r["tokens"] for r in data.values()], [r["loss"] for r in data.values()], "budgets")
    return fit_n, fit_d


class Scaling(Experiment):
    name = "scaling"
    title = "Scaling laws: loss vs model size and data"
    paper = PAPER
    family = "scaling"
    claim = ("Held-out loss falls as a power law in non-embedding parameters, L(N) = L∞ + (N₀/N)^α, toward the "
             "data's entropy.")
    Config = ScalingConfig
    presets = {
        "smoke": {"variants": sweep_variants(20, sizes=SIZES[:3]), "eval_batch": 32, "train.log_every": 5},
        "quick": {},
        "full": {"variants": sweep_variants(15625, (1953, 3906, 7812))},  # 16M tokens a size
    }
    criteria = [
        Criterion("the power law fits: R² (log L) ≥ 0.99", "r2", ">=", 0.99, PAPER),
        Criterion("L∞ − floor ≥ −0.005 nats", "L_inf_minus_floor", ">=", -0.005, "DESIGN §3 (calibrated)"),
        Criterion("L∞ − floor ≤ +0.035 nats", "L_inf_minus_floor", "<=", 0.035, "DESIGN §3 (calibrated)"),
        Criterion("α ≥ 0.5", "alpha", ">=", 0.5, "DESIGN §3 (calibrated)"),
        Criterion("α ≤ 1.0", "alpha", "<=", 1.0, "DESIGN §3 (calibrated)"),
        Criterion("loss decreases with every step up in N", "loss_decreasing", ">=", 1, PAPER),
    ]
    shipped_snapshots = 0  # ten models: the sizes are the story, not their training steps

    def task(self, cfg: ScalingConfig) -> Order2Language:
        return language(cfg.task.model_dump_json())

    @torch.no_grad()
    def evaluate(self, model, cfg: ScalingConfig) -> dict[str, float]:
        batch = self.eval_batch(cfg).to(model.device)
        logits = model(batch.inputs)
        loss = torch.nn.functional.cross_entropy(logits[batch.loss_mask], batch.targets[batch.loss_mask])
        floor = self.task(cfg).entropy_floor()
        return {"loss": float(loss), "excess": float(loss) - floor, "params": float(non_embedding_params(model)),
                "tokens": float(cfg.train.steps * cfg.train.batch_size * cfg.task.seq_len)}

    def combine_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The fits across sizes (and budgets), from per-variant metrics: `workbench run` and a sweep share it."""
        fit_n, fit_d = fits(metrics)
        if fit_n is None:
            return {}
        size, _ = axes(metrics)
        floor = entropy_floor(size)
        losses = [r["loss"] for r in sorted(size.values(), key=lambda r: r["params"])]
        params = sorted(r["params"] for r in size.values())
        out = {"alpha": fit_n.alpha, "L_inf": fit_n.L_inf, "floor": floor, "L_inf_minus_floor": fit_n.L_inf - floor,
               "r2": fit_n.r2, "loss_decreasing": float(all(a > b for a, b in itertools.pairwise(losses))),
               "N_span": params[-1] / params[0], "sizes": float(len(size))}
        if fit_d is not None:
            out |= {"data_beta": fit_d.alpha, "data_L_inf": fit_d.L_inf, "data_r2": fit_d.r2}
        return out

    def figures_from_metrics(self, metrics: dict[str, float]) -> dict[str, go.Figure]:
        (size, data), (fit_n, fit_d) = axes(metrics), fits(metrics)
        figs = {}
        if size:
            floor = entropy_floor(size)
            figs["size"] = scaling_law_figure([r["params"] for r in size.values()], [r["loss"] for r in size.values()],
                                              fit_n, floor, "non-embedding parameters N", labels=list(size))
        if data:
            figs["data"] = scaling_law_figure([r["tokens"] for r in data.values()], [r["loss"] for r in data.values()],
                                              fit_d, floor, "training tokens D", labels=list(data))
        return figs

    def figures_variants(self, models, cfg: ScalingConfig, run: Run | None = None) -> dict[str, go.Figure]:
        return self.figures_from_metrics(self.evaluate_variants(models, cfg))

    def combine_sweep(self, results: list[dict]) -> dict[str, go.Figure]:
        """A sweep over the sizes draws the same figures from its runs' metrics."""
        if not all(r.get("variant") for r in results):
            return {}  # a grid over other settings, one model a point: nothing to fit
        return self.figures_from_metrics(prefixed({r["variant"]: r["metrics"] for r in results}))
