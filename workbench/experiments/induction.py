"""Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads").

Claim: a 2-layer attention-only transformer trained on sequences with repeated random segments
forms a previous-token head in layer 0 and an induction head in layer 1 that attends from token i
to the token after the previous occurrence of i; with it, the loss on the repeated half collapses.

Two phases. The first is Olsson et al.'s: AdamW on repeated random segments; both heads form near step 250. Adam
makes all four layer-1 heads induction heads, though, each doing part of the job, which no small circuit can
capture (see `induction-circuit`). So `retrain` then re-initialises layer 1 and trains it alone with SGD on segments
with no repeated token: layer 0 keeps its previous-token head and one layer-1 head takes the whole job, forming
again near step 1430. `--set retrain=null` trains the first phase only.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from pydantic import Field, ValidationError, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.attention import attention_patterns, best_head, head_scores
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks import RepeatedTokens, RepeatedTokensConfig
from workbench.train import Phase, TrainConfig, position_losses
from workbench.viz import attention_heatmap, head_score_grid, loss_by_position, training_curves

PAPER = "Olsson et al. 2022, In-context Learning and Induction Heads"


class InductionConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=0, n_ctx=64, d_vocab=64,
                                     positional="rotary")
    task: RepeatedTokensConfig = RepeatedTokensConfig()
    # dense_windows: the heads form within ~100 steps (near step 250), as does the retrained one (near 1430), with
    # the re-initialisation between: those intervals keep a snapshot every 10 steps, so the step slider shows them
    train: TrainConfig = TrainConfig(steps=1000, batch_size=64, lr=1e-3, warmup_steps=100, eval_every=100,
                                     dense_windows=3)
    # Adam forms a sharp previous-token head but makes every layer-1 head an induction head, each doing part of the
    # job. Re-initialising layer 1 and training it alone with SGD, whose steps follow the gradient's size, leaves
    # the job to one head (see `induction-circuit`). None: the one Adam phase of Olsson et al.
    retrain: TrainConfig | None = Field(
        TrainConfig(steps=1500, batch_size=64, optimizer="sgd", lr=0.3, warmup_steps=100, eval_every=100,
                    trainable=("blocks.1.",)),
        description="a second phase: re-initialise the parameters named by retrain.trainable and train them alone")
    retrain_distinct: bool = Field(True, description="the retrain phase draws segments without repeats "
                                   "(task.distinct): with accidental repeats to tell apart, more heads join in")
    eval_batch: int = Field(256, ge=1, description="sequences used to score heads and losses")

    @model_validator(mode="after")
    def _fits_model(self) -> InductionConfig:
        if self.task.d_vocab > self.model.d_vocab:
            raise ValueError(f"task.d_vocab={self.task.d_vocab} exceeds model.d_vocab={self.model.d_vocab}")
        if self.retrain is not None and self.retrain_distinct:
            try:  # the task's own check of distinct segments
                self.retrain_task()
            except ValidationError as e:
                raise ValueError(f"retrain_distinct: {e.errors()[0]['msg'].removeprefix('Value error, ')}; "
                                 "set retrain_distinct=false") from None
        if self.retrain is not None and not self.retrain.trainable:
            raise ValueError("retrain.trainable is empty: name the parameters to re-initialise and train, e.g. "
                             "['blocks.1.'] (or set retrain to null for one phase)")
        return self

    def retrain_task(self) -> RepeatedTokensConfig:
        """The retrain phase's task: `task`, with distinct segments when `retrain_distinct`."""
        distinct = self.task.distinct or self.retrain_distinct
        return RepeatedTokensConfig.model_validate({**self.task.model_dump(), "distinct": distinct})


class Induction(Experiment):
    name = "induction"
    title = "Induction heads"
    paper = PAPER
    claim = "A previous-token head and, above it, an induction head form; the loss on the repeat collapses."
    Config = InductionConfig
    presets = {
        "smoke": {"train.steps": 30, "train.batch_size": 16, "train.eval_every": 10, "eval_batch": 32,
                  "retrain.steps": 20, "retrain.batch_size": 16, "retrain.eval_every": 10},
        "quick": {},
        "full": {"model.d_model": 128, "train.steps": 4000, "task.seq_len": 128, "model.n_ctx": 128,
                 "task.max_segment": 63},
    }
    criteria = [
        Criterion("induction head after layer 0", "induction_score", ">=", 0.8, PAPER),
        Criterion("previous-token head below it", "prev_token_score", ">=", 0.8, PAPER),
        Criterion("repeat loss ≤ 30% of first-half loss", "repeat_loss_ratio", "<=", 0.3, PAPER),
    ]

    def task(self, cfg: InductionConfig) -> RepeatedTokens:
        return RepeatedTokens(cfg.task)

    def phases(self, cfg: InductionConfig) -> list[Phase]:
        first = Phase("train", cfg.train)
        if cfg.retrain is None:
            return [first]
        return [first, Phase("retrain", cfg.retrain, setup=lambda model: model.reinit(cfg.retrain.trainable),
                             task=RepeatedTokens(cfg.retrain_task()))]

    def eval_batch(self, cfg: InductionConfig, segment: int | None = None):
        """Held-out data: the training distribution of segment lengths, or `BOS r r` at one `segment`."""
        task_cfg = cfg.task if segment is None else cfg.task.model_copy(
            update={"min_segment": segment, "max_segment": segment})
        return RepeatedTokens(task_cfg).sample(cfg.eval_batch, torch.Generator().manual_seed(cfg.eval_seed))

    @torch.no_grad()
    def evaluate(self, model, cfg: InductionConfig) -> dict[str, float]:
        # Head scores on canonical `BOS r r` at the longest segment (Olsson et al.; ARENA): `induction` is
        # the stripe score; `generalised_induction` also counts accidental repeats inside r.
        canonical = self.eval_batch(cfg, segment=cfg.task.max_segment).to(device_of(model))
        scores = head_scores(model, canonical.tokens, segment=cfg.task.max_segment)
        # A 1-layer model has no layer above a previous-token head: its best head is reported, and its
        # previous-token score is nan, which fails the criterion (as it should).
        induction = best_head(scores, "induction", range(min(1, model.cfg.n_layers - 1), model.cfg.n_layers))
        # Loss ratio on the training distribution of segment lengths: at one fixed length the first
        # repeated token is predictable from its position alone, which flatters the ratio.
        train_dist = self.eval_batch(cfg).to(device_of(model))
        train_scores = head_scores(model, train_dist.tokens, segment=train_dist.meta["segment"])
        first, repeat = self.half_losses(model, train_dist)
        first_fixed, repeat_fixed = self.half_losses(model, canonical)
        return {
            "induction_score": induction.value,
            "induction_layer": induction.layer,
            "prev_token_score": best_head(scores, "previous_token", range(induction.layer)).value
            if induction.layer else float("nan"),
            "generalised_induction_score": best_head(scores, "generalised_induction", induction.layer).value,
            "induction_score_train_dist": best_head(train_scores, "induction", induction.layer).value,
            "loss_first_half": first,
            "loss_repeat_half": repeat,
            "repeat_loss_ratio": repeat / first,
            "repeat_loss_ratio_max_segment": repeat_fixed / first_fixed,
        }

    def circuit_prompts(self, cfg: InductionConfig, n: int = 16):
        """Clean `BOS r r` at the longest segment; corrupted with the first half resampled, so nothing repeats;
        scored at each repeated token (predicting its successor)."""
        seg = cfg.task.max_segment
        clean = self.eval_batch(cfg.model_copy(update={"eval_batch": n}), segment=seg).tokens
        corrupted = clean.clone()
        g = torch.Generator().manual_seed(cfg.eval_seed + 1)
        corrupted[:, 1:seg + 1] = torch.randint(1, cfg.task.d_vocab, (n, seg), generator=g)
        return clean, corrupted, torch.arange(seg + 1, 2 * seg)

    @staticmethod
    def half_losses(model, batch) -> tuple[float, float]:
        losses = position_losses(model, batch)
        return float(losses[batch.meta["first_half"]].mean()), float(losses[batch.meta["repeat_half"]].mean())

    @torch.no_grad()
    def figures(self, model, cfg: InductionConfig, run: Run | None = None) -> dict[str, go.Figure]:
        segment = cfg.task.max_segment
        batch = self.eval_batch(cfg, segment).to(device_of(model))
        scores = head_scores(model, batch.tokens, segment=segment)
        best = best_head(scores, "induction", range(min(1, model.cfg.n_layers - 1), model.cfg.n_layers))
        pattern = attention_patterns(model, batch.tokens[:1], [best.layer])[best.layer][0, best.head]
        per_position = position_losses(model, batch).mean(0)[: 2 * segment]
        title = f"layer {best.layer} head {best.head}"
        figs = {
            "attention_map": attention_heatmap(pattern, batch.tokens[0].tolist(), title),
            "induction_scores": head_score_grid(scores, "induction"),
            "previous_token_scores": head_score_grid(scores, "previous_token"),
            "loss_by_position": loss_by_position(per_position, boundaries={"repeat starts": segment}),
        }
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "induction_score", "prev_token_score"])
        return figs
