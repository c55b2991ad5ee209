"""In-context bigrams on random Markov chains (Edelman et al. 2024, "The Evolution of Statistical
Induction Heads: In-Context Learning Markov Chains"; "On Learning Markov Chains").

Claim: trained on sequences that each come from a fresh random Markov chain, a 2-layer attention-only
transformer learns the Bayes-optimal in-context estimator — bigram counts over the context — through a
statistical induction head: layer 0 attends to the previous token, and layer 1 attends to the tokens
that followed earlier occurrences of the current token, averaging them into a count.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.attention import attention_patterns, best_head, head_scores
from workbench.hooks.icl import bigram_bayes, kl_divergence, unigram_counts
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.markov import MarkovChains, MarkovConfig
from workbench.train import TrainConfig
from workbench.viz import attention_heatmap, head_score_grid, training_curves
from workbench.viz.icl import kl_by_position

PAPER = "Edelman et al. 2024, The Evolution of Statistical Induction Heads"


class MarkovExperimentConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=32, n_heads=1, d_mlp=0, norm="none", n_ctx=100, d_vocab=3,
                                     positional="relative-bias")
    task: MarkovConfig = MarkovConfig()
    train: TrainConfig = TrainConfig(steps=1200, batch_size=64, lr=3e-3, warmup_steps=50, min_lr_ratio=1.0,
                                     eval_every=100)
    score_from: int = Field(50, ge=0, description="KL is averaged over predictions at positions ≥ this")

    @model_validator(mode="after")
    def _fits_model(self) -> MarkovExperimentConfig:
        if self.task.states != self.model.d_vocab:
            raise ValueError(f"task.states={self.task.states} must equal model.d_vocab={self.model.d_vocab}")
        if self.score_from >= self.task.seq_len - 1:
            raise ValueError(f"score_from={self.score_from} leaves no positions of task.seq_len={self.task.seq_len}")
        return self


class ICLMarkov(Experiment):
    name = "icl-markov"
    title = "In-context bigrams (Markov chains)"
    paper = PAPER
    family = "icl"
    claim = "A 2-layer transformer matches the Bayes bigram estimator via a statistical induction head."
    Config = MarkovExperimentConfig
    presets = {
        "smoke": {"train.steps": 30, "train.eval_every": 10, "eval_batch": 32, "task.seq_len": 40,
                  "model.n_ctx": 40, "score_from": 20},
        "quick": {},
        "full": {"train.steps": 4000, "task.states": 5, "model.d_vocab": 5, "model.d_model": 64},
    }
    criteria = [
        Criterion("close to the Bayes estimator", "kl_to_bayes", "<=", 0.05, PAPER),
        Criterion("far better than unigram counts", "kl_to_bayes", "<=", 0.4, PAPER, versus="kl_unigram_to_bayes"),
        Criterion("layer 1 reads what followed the current token", "statistical_induction_score", ">=", 0.7, PAPER),
        Criterion("layer 0 attends to the previous token", "prev_token_score", ">=", 0.2, PAPER),
    ]

    def task(self, cfg: MarkovExperimentConfig) -> MarkovChains:
        return MarkovChains(cfg.task)

    @torch.no_grad()
    def divergences(self, model, cfg: MarkovExperimentConfig, batch) -> dict[str, torch.Tensor]:
        """KL(Bayes ‖ ·) at every position, for the model and the unigram baseline."""
        tokens = batch.tokens.to(device_of(model))
        bayes = bigram_bayes(batch.tokens, cfg.task.states, alpha=cfg.task.concentration)
        predicted = model(tokens).softmax(-1).cpu()
        return {"model": kl_divergence(bayes, predicted).mean(0),
                "unigram": kl_divergence(bayes, unigram_counts(batch.tokens, cfg.task.states)).mean(0)}

    @torch.no_grad()
    def evaluate(self, model, cfg: MarkovExperimentConfig) -> dict[str, float]:
        batch = self.eval_batch(cfg)
        kl = self.divergences(model, cfg, batch)
        scored = slice(cfg.score_from, cfg.task.seq_len - 1)  # the last position has no next token
        scores = head_scores(model, batch.tokens.to(device_of(model)))
        last = model.cfg.n_layers - 1
        return {
            "kl_to_bayes": float(kl["model"][scored].mean()),
            "kl_unigram_to_bayes": float(kl["unigram"][scored].mean()),
            # attention to the tokens right after earlier occurrences of the current token (any occurrence)
            "statistical_induction_score": best_head(scores, "generalised_induction", last).value,
            "prev_token_score": best_head(scores, "previous_token", range(last)).value,
        }

    @torch.no_grad()
    def figures(self, model, cfg: MarkovExperimentConfig, run: Run | None = None) -> dict[str, go.Figure]:
        batch = self.eval_batch(cfg)
        tokens = batch.tokens.to(device_of(model))
        kl = self.divergences(model, cfg, batch)
        scores = head_scores(model, tokens)
        last = model.cfg.n_layers - 1
        patterns = attention_patterns(model, tokens[:1, :40])
        figs = {
            "kl_by_position": kl_by_position({"model": kl["model"], "unigram counts": kl["unigram"]},
                                             cfg.score_from),
            "statistical_induction_scores": head_score_grid(scores, "generalised_induction"),
            "previous_token_scores": head_score_grid(scores, "previous_token"),
            "layer0_attention": attention_heatmap(patterns[0][0, 0], tokens[0, :40].tolist(), "layer 0 head 0"),
            f"layer{last}_attention": attention_heatmap(patterns[last][0, 0], tokens[0, :40].tolist(),
                                                        f"layer {last} head 0"),
        }
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "kl_to_bayes", "statistical_induction_score",
                                                               "prev_token_score"])
        return figs
