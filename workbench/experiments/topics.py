"""Topic structure in the value matrix (Li et al. 2023, "How Do Transformers Learn Topic Structure: Towards a
Mechanistic Understanding").

Claim: trained by masked language modelling on LDA-like documents, a one-layer transformer encodes the topics in
its weights. With attention frozen at uniform, the value path alone carries them: read in token space, W_E W_V W_O
W_U has a block structure, large within a topic and small across topics, so averaging the context's value rows
votes for the words of the document's topics. Shown on disjoint topics (10 × 10 words), beside the same model
untrained. The figure to look at is that matrix with the words sorted by topic.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.expressivity import block_ratio, shuffled_block_ratio, token_ov
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.topics import Topics, TopicsConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, training_curves

PAPER = "Li et al. 2023, How Do Transformers Learn Topic Structure: Towards a Mechanistic Understanding"


class TopicsExperimentConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=1, d_model=64, n_heads=1, n_ctx=32, d_vocab=101, positional="none",
                                     attention="uniform", mask="bidirectional", norm="none")
    task: TopicsConfig = TopicsConfig()
    train: TrainConfig = TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=100,
                                     snapshots=8)
    eval_batch: int = Field(1024, ge=1, description="held-out documents")

    @model_validator(mode="after")
    def _fits_model(self) -> TopicsExperimentConfig:
        if self.model.n_layers != 1 or self.model.n_heads != 1:
            raise ValueError(f"model: the value matrix is read from one head of one layer; got model.n_layers="
                             f"{self.model.n_layers}, model.n_heads={self.model.n_heads} (set both to 1)")
        return self


class TopicsExperiment(Experiment):
    name = "topics"
    title = "Topic structure: a one-layer model's value matrix groups words by topic"
    paper = PAPER
    family = "expressivity"
    claim = ("With attention frozen at uniform, masked-LM training writes the topics into W^V: its same-topic "
             "blocks are several times larger than the rest.")
    Config = TopicsExperimentConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 16, "train.warmup_steps": 5, "train.eval_every": 10,
                  "eval_batch": 64},
        "quick": {},
        "full": {"train.steps": 6000, "task.n_topics": 20, "model.d_vocab": 201},
    }
    criteria = [
        Criterion("W^V (in token space): same-topic blocks ≥ 3× the off-block entries", "block_ratio", ">=", 3.0,
                  PAPER),
        Criterion("with the words' topics shuffled (worst of 20), no such blocks (ratio < 1): the blocks are the "
                  "topics'", "shuffled_block_ratio", "<", 1.0, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: TopicsExperimentConfig) -> Topics:
        return Topics(cfg.task)

    def value_matrix(self, model, cfg: TopicsExperimentConfig) -> torch.Tensor:
        """The head's OV circuit between words (MASK left out) `[word word]`."""
        n = cfg.task.n_words
        return token_ov(model)[:n, :n].cpu()

    @torch.no_grad()
    def evaluate(self, model, cfg: TopicsExperimentConfig) -> dict[str, float]:
        batch = self.eval_batch(cfg).to(device_of(model))
        logits = model(batch.tokens)[batch.loss_mask]
        targets = batch.targets[batch.loss_mask]
        groups, matrix = self.task(cfg).topic_of(), self.value_matrix(model, cfg)
        return {"loss": float(F.cross_entropy(logits, targets)),
                "accuracy": float((logits.argmax(-1) == targets).float().mean()),
                # a reader who knew the document's topics could do no better than uniform over their words
                "topic_oracle_loss": math.log(cfg.task.topics_per_doc * cfg.task.words_per_topic),
                "block_ratio": block_ratio(matrix, groups),
                "shuffled_block_ratio": shuffled_block_ratio(matrix, groups)}

    def run_metrics(self, cfg: TopicsExperimentConfig, run: Run, models=None) -> dict[str, float]:
        """The untrained control's block ratio (seed + 1), reported beside the trained one (near 0: random
        weights have no sign along any grouping, so it is no test, only a reference)."""
        return {"control_block_ratio": block_ratio(self.value_matrix(self.control(cfg), cfg),
                                                   self.task(cfg).topic_of())}

    def figures(self, model, cfg: TopicsExperimentConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {"value_matrix": value_matrix_figure(self.value_matrix(model, cfg), cfg.task.words_per_topic)}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "block_ratio"])
        return figs


def value_matrix_figure(matrix: torch.Tensor, words_per_topic: int) -> go.Figure:
    """The token-space value matrix, words sorted by topic, topic boundaries drawn."""
    n = matrix.shape[0]
    names = [f"t{w // words_per_topic}w{w % words_per_topic}" for w in range(n)]
    bound = float(matrix.abs().max())
    fig = go.Figure(go.Heatmap(z=matrix.numpy(), x=names, y=names, colorscale="RdBu", zmid=0, zmin=-bound,
                               zmax=bound, colorbar={"title": "Δ logit"},
                               hovertemplate="attending to %{y}<br>adds %{z:.2f} to the logit of %{x}<extra></extra>"))
    for edge in range(words_per_topic, n, words_per_topic):
        for kind in ("h", "v"):
            line = {"line_color": "#444", "line_width": 0.5, "opacity": 0.4}
            if kind == "h":
                fig.add_hline(y=edge - 0.5, **line)
            else:
                fig.add_vline(x=edge - 0.5, **line)
    fig.update_layout(title="W_E W_V W_O W_U between words, sorted by topic: the blocks are the topics",
                      xaxis_title="logit of word", yaxis_title="attended word", yaxis_autorange="reversed",
                      xaxis_showticklabels=False, yaxis_showticklabels=False, width=620, height=580, **LAYOUT)
    return fig
