"""Task diversity and the emergence of in-context learning (Raventós et al. 2023, "Pretraining task
diversity and the emergence of non-Bayesian in-context learning for regression").

Claim: trained on noisy linear regression whose tasks w come from a finite pool of M, a transformer
behaves like the Bayes estimator for that pool (dMMSE) when M is small — good on pretraining tasks, bad on
new ones — and, past a task-diversity threshold, like ridge regression, the Bayes estimator for Gaussian
tasks, solving new tasks in context. The quick run trains M = 4, 16 and ∞ as variants; a sweep over M
(`workbench sweep task-diversity --grid task.M=4,16,64,256,1024,inf`) draws the whole transition.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import torch
from pydantic import Field

from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.icl import baseline_predictions, model_predictions
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.regression import LinearRegression, RegressionConfig
from workbench.train import TrainConfig
from workbench.viz import training_curves
from workbench.viz.icl import task_diversity_transition

PAPER = "Raventós et al. 2023, Pretraining task diversity and the emergence of non-Bayesian ICL"


class DiversityConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=256, d_input=5, d_output=1, n_ctx=16)
    task: RegressionConfig = RegressionConfig(d=4, n_points=8, noise=math.sqrt(0.125), M=16, dims_start=1,
                                              dims_every=300)
    train: TrainConfig = TrainConfig(steps=6000, batch_size=128, lr=1e-3, warmup_steps=300, min_lr_ratio=0.1,
                                     eval_every=1000)
    variants: dict[str, dict] = {"M4": {"task": {"M": 4}}, "M16": {"task": {"M": 16}}, "Minf": {"task": {"M": None}}}
    eval_batch: int = Field(2048, ge=1)


class TaskDiversity(Experiment):
    name = "task-diversity"
    title = "Task diversity: from dMMSE to ridge"
    paper = PAPER
    family = "icl"
    claim = "Few pretraining tasks: the model is its pool's Bayes estimator (dMMSE); many: ridge, solving new ones."
    Config = DiversityConfig
    presets = {
        "smoke": {"train.steps": 30, "train.batch_size": 16, "train.eval_every": 15, "train.warmup_steps": 5,
                  "task.dims_every": 10, "eval_batch": 64},
        "quick": {},
        "full": {"task.d": 8, "task.n_points": 16, "task.noise": 0.5, "model.d_input": 9, "model.n_ctx": 32,
                 "model.n_layers": 8, "model.d_model": 256, "model.n_heads": 8, "model.d_mlp": 1024,
                 "train.steps": 500000, "train.batch_size": 256},
    }
    criteria = [
        Criterion("M=4 fits its pool like dMMSE", "M4.loss_pre", "<=", 1.25, PAPER, versus="M4.dmmse_pre"),
        Criterion("M=4 fails on new tasks", "M4.loss_true", ">=", 0.8, PAPER),
        Criterion("M=∞ solves new tasks like ridge", "Minf.loss_true", "<=", 1.25, PAPER, versus="Minf.ridge_true"),
        Criterion("M=16 better on new tasks than M=4 by 0.2", "gap_4_16", ">", 0.2, PAPER),
        Criterion("M=16 worse than M=∞ by 0.05", "gap_16_inf", ">", 0.05, PAPER),
    ]

    def task(self, cfg: DiversityConfig) -> LinearRegression:
        return LinearRegression(cfg.task)

    def losses(self, model, cfg: DiversityConfig) -> dict[str, float]:
        """Squared error / D averaged over positions, on pretraining-pool tasks (pre) and fresh Gaussian tasks
        (true), for the model and the two Bayes estimators: dMMSE (this pool's prior) and ridge (Gaussian)."""
        pool_task = self.task(cfg)
        fresh_task = LinearRegression(cfg.task.model_copy(update={"M": None}))
        noise, d, out = cfg.task.noise, cfg.task.d, {}
        for split, task in (("pre", pool_task), ("true", fresh_task)):
            batch = task.sample(cfg.eval_batch, torch.Generator().manual_seed(cfg.eval_seed))
            x, y = batch.meta["x"], batch.meta["y"]
            out[f"loss_{split}"] = float(((model_predictions(model, batch) - y) ** 2).mean() / d)
            out[f"ridge_{split}"] = float(((baseline_predictions(x, y, "ridge", noise) - y) ** 2).mean() / d)
            if pool_task.pool is not None:
                dmmse = baseline_predictions(x, y, "dmmse", noise, pool_task.pool)
                out[f"dmmse_{split}"] = float(((dmmse - y) ** 2).mean() / d)
        return out

    @torch.no_grad()
    def evaluate(self, model, cfg: DiversityConfig) -> dict[str, float]:
        return self.losses(model, cfg)

    def evaluate_variants(self, models, cfg: DiversityConfig) -> dict[str, float]:
        metrics = super().evaluate_variants(models, cfg)
        if {"M4", "M16", "Minf"} <= models.keys():
            metrics["gap_4_16"] = metrics["M4.loss_true"] - metrics["M16.loss_true"]
            metrics["gap_16_inf"] = metrics["M16.loss_true"] - metrics["Minf.loss_true"]
        return metrics

    def figures(self, model, cfg: DiversityConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "loss_pre", "loss_true"])
        return figs

    def figures_variants(self, models, cfg: DiversityConfig, run: Run | None = None) -> dict[str, go.Figure]:
        rows = [{"M": cfg.variant(name).task.M, **self.losses(model, cfg.variant(name))}
                for name, model in models.items()]
        return {"transition": task_diversity_transition(pd.DataFrame(rows)),
                **super().figures_variants(models, cfg, run)}

    def combine_sweep(self, results: list[dict]) -> dict[str, go.Figure]:
        """A sweep over task.M draws the transition from its runs' metrics."""
        rows = [{"M": r["config"]["task"]["M"], **r["metrics"]} for r in results]
        return {"transition": task_diversity_transition(pd.DataFrame(rows))}
