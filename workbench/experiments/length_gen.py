"""Length generalisation by positional encoding (Kazemnejad et al. 2023, "The Impact of Positional Encoding on
Length Generalization in Transformers").

Claim: how a decoder encodes position decides whether it copes with sequences longer than any it was trained on.
Learned absolute positions fail outright beyond the training length (the embeddings of later positions were
never trained); relative schemes (rotary, ALiBi, T5-style relative bias) and no encoding at all (NoPE, causal
masking alone) degrade gradually. Shown on copying: one model per encoding, as variants of one run, trained on
copies of at most `task.max_len` symbols and tested at longer ones. DESIGN §3 warns that at this scale the order
among the non-learned encodings is not stable (at 2 layers NoPE cannot fit and ALiBi leads): the criteria ask
only that learned fails and some other encoding does clearly better.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig, strict_max, strict_min
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.copy import Copy, CopyConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, training_curves, vertical_marker

PAPER = "Kazemnejad et al. 2023, The Impact of Positional Encoding on Length Generalization in Transformers"
ENCODINGS = ("learned", "rotary", "alibi", "relative-bias", "none")
COLOURS = ("#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")  # one per encoding, learned grey


class LengthGenConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=4, d_model=64, n_heads=4, d_mlp=256, n_ctx=96, d_vocab=35)
    task: CopyConfig = CopyConfig()
    train: TrainConfig = TrainConfig(steps=4000, batch_size=64, lr=1e-3, warmup_steps=100, eval_every=500,
                                     snapshots=8)
    variants: dict[str, dict] = {name: {"model": {"positional": name}} for name in ENCODINGS}
    test_lengths: list[int] = Field([16, 24, 32, 40], min_length=1, description="copy lengths tested")
    eval_batch: int = Field(256, ge=1, description="sequences per test length")

    @model_validator(mode="after")
    def _fits_model(self) -> LengthGenConfig:
        need = 2 * max([*self.test_lengths, self.task.max_len]) + 2
        if need > self.model.n_ctx:
            raise ValueError(f"testing copies of {max(self.test_lengths)} symbols needs model.n_ctx ≥ {need}; "
                             f"got {self.model.n_ctx}")
        return self


class LengthGen(Experiment):
    name = "length-gen"
    title = "Length generalisation: which positional encoding copies beyond its training length"
    paper = PAPER
    claim = "Learned positions fail beyond the training length; rotary, ALiBi, relative bias and NoPE degrade less."
    Config = LengthGenConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 16, "train.warmup_steps": 5, "train.eval_every": 10,
                  "eval_batch": 16},
        "quick": {},
        "full": {"train.steps": 10000, "model.d_model": 128},
    }
    criteria = [
        Criterion("every encoding copies at the training length (≥ 0.95 token accuracy at 16)", "min_accuracy.L16",
                  ">=", 0.95, PAPER),
        Criterion("learned positions fail beyond it (≤ 0.6 at 24)", "learned.accuracy.L24", "<=", 0.6, PAPER),
        Criterion("learned positions: no exact copy at 24", "learned.exact.L24", "<=", 0.0, PAPER),
        Criterion("the best other encoding is ≥ 0.2 better at 24", "best_other_margin.L24", ">=", 0.2, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: LengthGenConfig) -> Copy:
        return Copy(cfg.task)

    def eval_batch(self, cfg: LengthGenConfig, size: int | None = None, length: int | None = None):
        """Held-out copies: the training distribution of lengths, or exactly `length` symbols each."""
        task_cfg = cfg.task if length is None else cfg.task.model_copy(update={"min_len": length, "max_len": length})
        return Copy(task_cfg).sample(size or cfg.eval_batch, torch.Generator().manual_seed(cfg.eval_seed))

    @torch.no_grad()
    def copy_correct(self, model, cfg: LengthGenConfig, length: int, size: int | None = None) -> torch.Tensor:
        """`[batch length]`: whether each copied symbol is predicted (greedy, teacher-forced) at `length`."""
        batch = self.eval_batch(cfg, size, length).to(device_of(model))
        logits = model(batch.tokens)
        correct = logits.argmax(-1) == batch.targets
        return correct[:, length + 1: 2 * length + 1]  # the scored positions: SEP … the copy's last-but-one

    def evaluate(self, model, cfg: LengthGenConfig) -> dict[str, float]:
        metrics = {}
        for length in cfg.test_lengths:
            correct = self.copy_correct(model, cfg, length)
            metrics[f"accuracy.L{length}"] = float(correct.float().mean())
            metrics[f"exact.L{length}"] = float(correct.all(-1).float().mean())
        return metrics

    def evaluate_variants(self, models, cfg: LengthGenConfig) -> dict[str, float]:
        metrics = super().evaluate_variants(models, cfg)
        for length in cfg.test_lengths:
            scores = {name: metrics[f"{name}.accuracy.L{length}"] for name in models}
            metrics[f"min_accuracy.L{length}"] = strict_min(scores.values())
            others = [v for name, v in scores.items() if name != "learned"]
            if "learned" in scores and others:
                metrics[f"best_other_margin.L{length}"] = strict_max(others) - scores["learned"]
        return metrics

    @torch.no_grad()
    def figures(self, model, cfg: LengthGenConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = self.figures_of({model.cfg.positional: model}, cfg)
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", f"accuracy.L{cfg.task.max_len}",
                                                               f"accuracy.L{max(cfg.test_lengths)}"])
        return figs

    def figures_variants(self, models, cfg: LengthGenConfig, run: Run | None = None) -> dict[str, go.Figure]:
        with torch.no_grad():
            return self.figures_of(models, cfg)

    def figures_of(self, models: dict, cfg: LengthGenConfig) -> dict[str, go.Figure]:
        correct = {name: {length: self.copy_correct(model, cfg, length, min(cfg.eval_batch, 128))
                          for length in cfg.test_lengths} for name, model in models.items()}
        longest = max(cfg.test_lengths)
        return {"accuracy_vs_length": accuracy_vs_length(correct, cfg.task.max_len),
                "accuracy_by_position": accuracy_by_position({n: c[longest] for n, c in correct.items()},
                                                             cfg.task.max_len)}

    @torch.no_grad()
    def position_figure(self, models: dict, cfg: LengthGenConfig, length: int) -> go.Figure:
        """Accuracy per copied symbol at `length`, one line per encoding."""
        correct = {name: self.copy_correct(model, cfg, length, min(cfg.eval_batch, 128))
                   for name, model in models.items()}
        return accuracy_by_position(correct, cfg.task.max_len)


def accuracy_vs_length(correct: dict[str, dict[int, torch.Tensor]], trained: int) -> go.Figure:
    """Token accuracy (solid) and exact-copy rate (dotted) per encoding and copy length."""
    fig = go.Figure()
    for i, (name, by_length) in enumerate(correct.items()):
        colour = COLOURS[i % len(COLOURS)]
        x = list(by_length)
        fig.add_trace(go.Scatter(x=x, y=[float(c.float().mean()) for c in by_length.values()], name=name,
                                 mode="lines+markers", line={"color": colour}, legendgroup=name))
        fig.add_trace(go.Scatter(x=x, y=[float(c.all(-1).float().mean()) for c in by_length.values()],
                                 name=f"{name} exact copy", mode="lines+markers", legendgroup=name,
                                 line={"color": colour, "dash": "dot"}))
    vertical_marker(fig, trained, "longest trained")
    fig.update_layout(title="copying beyond the training length: token accuracy (solid), exact copies (dotted)",
                      xaxis_title="symbols to copy", yaxis_title="accuracy", yaxis_range=[0, 1.02], **LAYOUT)
    return fig


def accuracy_by_position(correct: dict[str, torch.Tensor], trained: int) -> go.Figure:
    """Accuracy of each copied symbol by its index (`correct`: `[batch length]` per encoding), where each
    encoding breaks."""
    fig = go.Figure()
    for i, (name, hits) in enumerate(correct.items()):
        fig.add_trace(go.Scatter(x=list(range(1, hits.shape[1] + 1)), y=hits.float().mean(0).cpu(), name=name,
                                 mode="lines", line={"color": COLOURS[i % len(COLOURS)]}))
    vertical_marker(fig, trained + 0.5, "beyond the longest trained copy")
    length = next(iter(correct.values())).shape[1]
    fig.update_layout(title=f"where copying breaks: accuracy per copied symbol, copies of {length}",
                      xaxis_title="index of the copied symbol", yaxis_title="accuracy", yaxis_range=[0, 1.02],
                      **LAYOUT)
    return fig
