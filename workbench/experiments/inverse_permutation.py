"""Inverse permutation ("On the Impossibility of Inverse Permutation Learning in Transformer Models").

Claim: a causal decoder that must write row i of the inverse permutation at position i cannot, whenever the token
destined for row i comes later: it has not seen it, so it can only guess (1/n_values). Remove the mask and it
learns the task; keep the mask but append scratch tokens (the outputs are read after the whole input) and it
learns it too. Three variants of one run: `causal`, `no-mask`, `scratch`. The figure to look at is accuracy by
output row × source position: under the causal mask the cells above the diagonal sit at chance.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from pydantic import Field

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig, first_step, variant_logs
from workbench.hooks.expressivity import accuracy_by_source
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.permutation import InversePermutation, InversePermutationConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, compare_curves

PAPER = "On the Impossibility of Inverse Permutation Learning in Transformer Models (2025)"


class InversePermutationExperimentConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_ctx=16, d_vocab=129)
    task: InversePermutationConfig = InversePermutationConfig()
    train: TrainConfig = TrainConfig(steps=1000, batch_size=64, lr=1e-3, warmup_steps=50, eval_every=50,
                                     snapshots=8)
    variants: dict[str, dict] = {"causal": {}, "no-mask": {"model": {"mask": "bidirectional"}},
                                 "scratch": {"task": {"scratch": True}}}
    within_steps: int = Field(600, ge=1, description="the unmasked and scratch models must reach 0.95 by this step")
    eval_batch: int = Field(2048, ge=1, description="held-out permutations")

    def task_to_fit(self) -> InversePermutationConfig:
        return self.task.model_copy(update={"scratch": True})  # the scratch variant's sequences are longer


class InversePermutationExperiment(Experiment):
    name = "inverse-permutation"
    title = "Inverse permutation: what a causal mask cannot reach"
    paper = PAPER
    family = "expressivity"
    claim = ("A causal model writing row i at position i cannot know a value that arrives later; without the mask, "
             "or with scratch tokens after the input, it learns the inverse permutation.")
    Config = InversePermutationExperimentConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 16, "train.warmup_steps": 5, "train.eval_every": 10,
                  "eval_batch": 64},
        "quick": {},
        "full": {"train.steps": 3000, "task.n_items": 16, "model.n_ctx": 32, "model.d_vocab": 257},
    }
    criteria = [
        Criterion("causal: rows whose source comes later stay at chance (≤ 1/16 + 0.05)", "causal.later_accuracy",
                  "<=", 1 / 16 + 0.05, PAPER),
        Criterion("causal: the rows it can see are solved (≥ 0.95): the failure is the mask's",
                  "causal.earlier_accuracy", ">=", 0.95, PAPER),
        Criterion("no mask: learned (≥ 0.95) within 600 steps", "no-mask.steps_to_0.95", "<=", 600, PAPER),
        Criterion("scratch tokens: learned (≥ 0.95) within 600 steps", "scratch.steps_to_0.95", "<=", 600, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: InversePermutationExperimentConfig) -> InversePermutation:
        return InversePermutation(cfg.task)

    @torch.no_grad()
    def row_correctness(self, model, cfg: InversePermutationExperimentConfig):
        """Per held-out example and output row: correct or not, and where the row's source token sits."""
        task = self.task(cfg)
        batch = self.eval_batch(cfg).to(device_of(model))
        outputs = task.output_positions().to(device_of(model))
        correct = model(batch.tokens)[:, outputs].argmax(-1) == batch.targets[:, outputs]
        return correct, batch.meta["source"], batch.meta["later"]

    def evaluate(self, model, cfg: InversePermutationExperimentConfig) -> dict[str, float]:
        correct, _, later = self.row_correctness(model, cfg)
        return {"accuracy": float(correct.float().mean()), "later_accuracy": float(correct[later].float().mean()),
                "earlier_accuracy": float(correct[~later].float().mean())}

    def run_metrics(self, cfg: InversePermutationExperimentConfig, run: Run, models=None) -> dict[str, float]:
        """The first step each model reached 0.95 accuracy, from its training log (absent: never)."""
        steps = {prefix: first_step(rows, "accuracy", 0.95) for prefix, rows in variant_logs(cfg, run).items()}
        return {f"{prefix}steps_to_0.95": float(step) for prefix, step in steps.items() if step is not None}

    def figures_variants(self, models, cfg: InversePermutationExperimentConfig, run: Run | None = None
                         ) -> dict[str, go.Figure]:
        grids = {}
        for name, model in models.items():
            correct, source, _ = self.row_correctness(model, cfg.variant(name))
            grids[name] = accuracy_by_source(correct, source).cpu()
        figs = {"by_source": by_source_grids(grids)}
        if run is not None:
            figs["training"] = compare_curves({n: run.variant(n).metrics() for n in models}, ["loss", "accuracy"])
        return figs


def by_source_grids(grids: dict[str, torch.Tensor]) -> go.Figure:
    """Accuracy by output row × source position, one panel per variant: above the diagonal the source is later."""
    fig = make_subplots(rows=1, cols=len(grids), subplot_titles=list(grids), horizontal_spacing=0.06)
    for i, (name, grid) in enumerate(grids.items(), start=1):
        n = grid.shape[0]
        fig.add_trace(go.Heatmap(z=grid.numpy(), x=list(range(n)), y=list(range(n)), zmin=0, zmax=1,
                                 colorscale="Viridis", showscale=i == len(grids),
                                 colorbar={"title": "accuracy"}, name=name,
                                 hovertemplate="row %{y}, source at %{x}<br>accuracy %{z:.2f}<extra>" + name
                                 + "</extra>"), row=1, col=i)
        fig.add_trace(go.Scatter(x=[-0.5, n - 0.5], y=[-0.5, n - 0.5], mode="lines", showlegend=False,
                                 line={"color": "white", "dash": "dot"}, hoverinfo="skip"), row=1, col=i)
        fig.update_xaxes(title_text="source position", range=[-0.5, n - 0.5], row=1, col=i)
        fig.update_yaxes(range=[n - 0.5, -0.5], row=1, col=i, title_text="output row" if i == 1 else None)
    fig.update_layout(title="accuracy by output row and where its value sits (right of the dotted line: later)",
                      height=380, **LAYOUT)
    return fig
