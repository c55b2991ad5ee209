"""Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads").

Claim: a 2-layer attention-only transformer trained on sequences with repeated random segments
forms a previous-token head in layer 0 and an induction head in layer 1 that attends from token i
to the token after the previous occurrence of i; with it, the loss on the repeated half collapses.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator

from workbench.experiments.base import Criterion, Experiment, ExperimentConfig
from workbench.hooks.attention import attention_patterns, best_head, head_scores
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks import RepeatedTokens, RepeatedTokensConfig
from workbench.train import TrainConfig, Trainer, token_losses
from workbench.viz import attention_heatmap, head_score_grid, loss_by_position, training_curves

PAPER = "Olsson et al. 2022, In-context Learning and Induction Heads"


class InductionConfig(ExperimentConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=0, n_ctx=64, d_vocab=64,
                                     positional="rotary")
    task: RepeatedTokensConfig = RepeatedTokensConfig()
    train: TrainConfig = TrainConfig(steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, eval_every=100)
    eval_batch: int = Field(256, ge=1, description="sequences used to score heads and losses")
    eval_seed: int = Field(12345, ge=0, description="held-out data: differs from the training stream")

    @model_validator(mode="after")
    def _fits_model(self) -> InductionConfig:
        if self.task.seq_len > self.model.n_ctx:
            raise ValueError(f"task.seq_len={self.task.seq_len} exceeds model.n_ctx={self.model.n_ctx}")
        if self.task.d_vocab > self.model.d_vocab:
            raise ValueError(f"task.d_vocab={self.task.d_vocab} exceeds model.d_vocab={self.model.d_vocab}")
        return self


class Induction(Experiment):
    name = "induction"
    title = "Induction heads"
    paper = PAPER
    claim = "A previous-token head (layer 0) and an induction head (layer 1) form; repeat loss collapses."
    Config = InductionConfig
    presets = {
        "smoke": {"train.steps": 30, "train.batch_size": 16, "train.eval_every": 10, "eval_batch": 32},
        "quick": {},
        "full": {"model.d_model": 128, "train.steps": 4000, "task.seq_len": 128, "model.n_ctx": 128,
                 "task.max_segment": 63},
    }
    criteria = [
        Criterion("induction head in layer 1", "induction_score_layer1", ">=", 0.8, PAPER),
        Criterion("previous-token head in layer 0", "prev_token_score_layer0", ">=", 0.8, PAPER),
        Criterion("repeat loss ≤ 30% of first-half loss", "repeat_loss_ratio", "<=", 0.3, PAPER),
    ]

    def task(self, cfg: InductionConfig) -> RepeatedTokens:
        return RepeatedTokens(cfg.task)

    def train(self, cfg, run, callback=None, resume_from=None, progress_bar=True):
        model = self.build(cfg)
        small = cfg.model_copy(update={"eval_batch": min(64, cfg.eval_batch)})
        trainer = Trainer(model, self.task(cfg), cfg.train, cfg.seed, run=run,
                          evaluate=lambda m: self.evaluate(m, small), callback=callback, progress_bar=progress_bar)
        if resume_from:
            trainer.restore(resume_from)
        return trainer.fit()

    def eval_batch(self, cfg: InductionConfig, segment: int | None = None):
        task_cfg = cfg.task if segment is None else cfg.task.model_copy(
            update={"min_segment": segment, "max_segment": segment})
        return RepeatedTokens(task_cfg).sample(cfg.eval_batch, torch.Generator().manual_seed(cfg.eval_seed))

    @torch.no_grad()
    def evaluate(self, model, cfg: InductionConfig) -> dict[str, float]:
        # Canonical measurement (Olsson et al.; TL's head detector): BOS + r + r at the longest segment.
        # On variable-length training text, accidental repeats of random tokens also count as
        # "previous occurrences", and a good model rightly hedges on those; see the notebook.
        batch = self.eval_batch(cfg, segment=cfg.task.max_segment)
        scores = head_scores(model, batch.tokens)
        last = model.cfg.n_layers - 1
        losses = token_losses(model, batch)
        first = float(losses[batch.meta["first_half"]].mean())
        repeat = float(losses[batch.meta["repeat_half"]].mean())
        return {
            f"induction_score_layer{last}": best_head(scores, "induction", last)[1],
            "prev_token_score_layer0": best_head(scores, "previous_token", 0)[1],
            "loss_first_half": first,
            "loss_repeat_half": repeat,
            "repeat_loss_ratio": repeat / first,
        }

    @torch.no_grad()
    def figures(self, model, cfg: InductionConfig, run: Run | None = None) -> dict[str, go.Figure]:
        segment = cfg.task.max_segment
        batch = self.eval_batch(cfg, segment)
        scores = head_scores(model, batch.tokens)
        last = model.cfg.n_layers - 1
        head, _ = best_head(scores, "induction", last)
        pattern = attention_patterns(model, batch.tokens[:1], [last])[last][0, head]
        per_position = token_losses(model, batch).mean(0)[: 2 * segment]
        figs = {
            "attention_map": attention_heatmap(pattern, batch.tokens[0].tolist(), f"layer {last} head {head}"),
            "induction_scores": head_score_grid(scores, "induction"),
            "previous_token_scores": head_score_grid(scores, "previous_token"),
            "loss_by_position": loss_by_position(per_position, boundaries={"repeat starts": segment}),
        }
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", f"induction_score_layer{last}",
                                                               "prev_token_score_layer0"])
        return figs
