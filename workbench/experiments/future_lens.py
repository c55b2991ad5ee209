"""Future Lens (Pal et al. 2023, "Future Lens: Anticipating Subsequent Tokens from a Single Hidden State").

Claim: a language model's hidden state at position t encodes more than the next token: a linear probe reads the
token at t+2 and t+3 from it, better than any predictor from the last tokens alone can. Shown on a hidden-state
language (96 states emit 8 tokens, so the token does not tell the state; `tasks/hidden_states.py`), where the
exact optimum is computable by forward filtering: the model nearly reaches it for the next token, and linear
softmax probes per layer and offset beat the bigram and trigram predictors of the same offset; a never-trained
model of the same build does not.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from pydantic import Field, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig, strict_max
from workbench.hooks.icl import activations, residual_hooks
from workbench.hooks.probes import softmax_probe_accuracy
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.hidden_states import HiddenStates, HiddenStatesConfig, ngram_accuracy
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, training_curves

PAPER = "Pal et al. 2023, Future Lens: Anticipating Subsequent Tokens from a Single Hidden State"
OFFSETS = (1, 2, 3)


class FutureLensConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=3, d_model=64, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=8)
    task: HiddenStatesConfig = HiddenStatesConfig()
    train: TrainConfig = TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=100, eval_every=250)
    score_from: int = Field(8, ge=1, description="score positions t ≥ this (the context has settled)")
    probe_sequences: int = Field(512, ge=8, description="sequences the probes are fit on")
    probe_iterations: int = Field(100, ge=1, description="L-BFGS iterations fitting each probe")
    eval_batch: int = Field(256, ge=8, description="held-out sequences the probes and the model are scored on")

    @model_validator(mode="after")
    def _fits_model(self) -> FutureLensConfig:
        if self.score_from + max(OFFSETS) >= self.task.seq_len:
            raise ValueError(f"score_from={self.score_from}: a probe {max(OFFSETS)} tokens ahead needs positions "
                             f"before task.seq_len={self.task.seq_len}; lower score_from or lengthen the sequences")
        return self


class FutureLens(Experiment):
    name = "future-lens"
    title = "Future Lens: one hidden state anticipates the tokens after next"
    paper = PAPER
    family = "probes"
    claim = ("Linear probes on a hidden state read the token 2 and 3 ahead better than the best predictor from the "
             "last two tokens; a random-init model's states do not.")
    Config = FutureLensConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 8, "train.warmup_steps": 5, "train.eval_every": 10,
                  "probe_sequences": 16, "eval_batch": 16, "probe_iterations": 5},
        "quick": {},
        "full": {"train.steps": 6000, "model.n_layers": 4, "model.d_model": 128, "model.d_mlp": 512},
    }
    criteria = [
        Criterion("next-token accuracy within 2 points of the exact oracle", "next_token_gap", "<=", 0.02, PAPER),
        Criterion("best probe at t+2 ≥ trigram + 7 points", "probe_margin_2", ">=", 0.07, PAPER),
        Criterion("best probe at t+3 ≥ trigram + 5 points", "probe_margin_3", ">=", 0.05, PAPER),
        Criterion("the random-init control's best probe ≤ trigram (t+2 and t+3)", "control_margin", "<=", 0.0, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: FutureLensConfig) -> HiddenStates:
        return HiddenStates(cfg.task)

    def tokens(self, cfg: FutureLensConfig, n: int, seed: int) -> torch.Tensor:
        return self.task(cfg).sample(n, torch.Generator().manual_seed(seed)).tokens

    @torch.no_grad()
    def next_token(self, model, cfg: FutureLensConfig, tokens: torch.Tensor) -> float:
        logits = model(tokens.to(device_of(model)))[:, cfg.score_from: -1].cpu()
        return float((logits.argmax(-1) == tokens[:, cfg.score_from + 1:]).float().mean())

    def baselines(self, cfg: FutureLensConfig) -> dict[str, float]:
        """The oracle, trigram and bigram accuracy at each offset, on the held-out sequences (they depend on the
        config alone: computed once for evaluation and figures)."""
        return self.memo("baselines", None, cfg, lambda: self._baselines(cfg))

    def _baselines(self, cfg: FutureLensConfig) -> dict[str, float]:
        task, test = self.task(cfg), self.tokens(cfg, cfg.eval_batch, cfg.eval_seed)
        counted = self.tokens(cfg, max(cfg.probe_sequences, 4 * cfg.eval_batch), cfg.eval_seed + 1)
        out = {}
        for k in OFFSETS:
            future = test[:, cfg.score_from + k:]
            oracle = task.oracle(test, k)[:, cfg.score_from: test.shape[1] - k].argmax(-1)
            out[f"oracle_{k}"] = float((oracle == future).float().mean())
            for name, context in (("bigram", 1), ("trigram", 2)):
                out[f"{name}_{k}"] = ngram_accuracy(counted, test, cfg.task.n_tokens, context, k, cfg.score_from)
        return out

    def probes(self, model, cfg: FutureLensConfig) -> list[dict]:
        """Probe accuracy for each layer (−1: the embedding) and offset."""
        return self.memo("probes", model, cfg, lambda: self._probes(model, cfg))

    def control_probes(self, cfg: FutureLensConfig) -> list[dict]:
        return self.memo("control probes", None, cfg, lambda: self._probes(self.control(cfg), cfg))

    @torch.no_grad()
    def _probes(self, model, cfg: FutureLensConfig) -> list[dict]:
        train, test = self.tokens(cfg, cfg.probe_sequences, cfg.eval_seed + 2), self.tokens(cfg, cfg.eval_batch,
                                                                                             cfg.eval_seed)
        names = residual_hooks(model)
        acts = {split: activations(model, tokens, names) for split, tokens in (("train", train), ("test", test))}
        rows = []
        for layer, name in enumerate(names):
            for k in OFFSETS:
                (x_train, y_train), (x_test, y_test) = (
                    ahead(acts[split][name], tokens, cfg.score_from, k) for split, tokens in (("train", train),
                                                                                           ("test", test)))
                with torch.enable_grad():
                    accuracy = softmax_probe_accuracy(x_train, y_train, x_test, y_test, cfg.task.n_tokens,
                                                      steps=cfg.probe_iterations)
                rows.append({"layer": layer - 1, "offset": k, "accuracy": accuracy})
        return rows

    def evaluate(self, model, cfg: FutureLensConfig) -> dict[str, float]:
        base = self.baselines(cfg)
        metrics = {"next_token_accuracy": self.next_token(model, cfg, self.tokens(cfg, cfg.eval_batch, cfg.eval_seed)),
                   **base}
        metrics["next_token_gap"] = base["oracle_1"] - metrics["next_token_accuracy"]
        for who, rows in (("probe", self.probes(model, cfg)), ("control", self.control_probes(cfg))):
            for k in OFFSETS:
                best = max((r for r in rows if r["offset"] == k), key=lambda r: r["accuracy"])
                metrics[f"{who}_best_{k}"] = best["accuracy"]
                if who == "probe":
                    metrics[f"probe_best_layer_{k}"] = float(best["layer"])
        for k in (2, 3):
            metrics[f"probe_margin_{k}"] = metrics[f"probe_best_{k}"] - base[f"trigram_{k}"]
        metrics["control_margin"] = strict_max(metrics[f"control_best_{k}"] - base[f"trigram_{k}"] for k in (2, 3))
        return metrics

    def evaluate_during_training(self, model, cfg: FutureLensConfig) -> dict[str, float]:
        return {"next_token_accuracy": self.next_token(model, cfg, self.tokens(cfg, 64, cfg.eval_seed))}

    def figures(self, model, cfg: FutureLensConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {"probes": probe_figure(self.probes(model, cfg), self.control_probes(cfg), self.baselines(cfg))}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "next_token_accuracy"])
        return figs


def ahead(acts: torch.Tensor, tokens: torch.Tensor, start: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals at positions start … end−k, each paired with the token k ahead of it."""
    feats = acts[:, start: tokens.shape[1] - k]
    return feats.reshape(-1, feats.shape[-1]), tokens[:, start + k:].reshape(-1)


def probe_figure(rows: list[dict], control: list[dict], baselines: dict[str, float]) -> go.Figure:
    """Probe accuracy by layer, one panel per offset, beside the bigram, trigram and oracle of that offset."""
    fig = make_subplots(rows=1, cols=len(OFFSETS), subplot_titles=[f"token t+{k}" for k in OFFSETS],
                        shared_yaxes=True)
    for i, k in enumerate(OFFSETS, start=1):
        for label, table, style in (("trained model", rows, {"color": "#1f77b4"}),
                                    ("random-init control", control, {"color": "#7f7f7f", "dash": "dot"})):
            points = [r for r in table if r["offset"] == k]
            fig.add_trace(go.Scatter(x=[r["layer"] for r in points], y=[r["accuracy"] for r in points],
                                     mode="lines+markers", name=label, line=style, legendgroup=label,
                                     showlegend=i == 1), row=1, col=i)
        for name, colour in (("oracle", "#2ca02c"), ("trigram", "#d62728"), ("bigram", "#ff7f0e")):
            label = {"annotation_text": name, "annotation_position": "top left"} if i == 1 else {}
            fig.add_hline(y=baselines[f"{name}_{k}"], line_dash="dash", line_color=colour, row=1, col=i, **label)
        fig.update_xaxes(title_text="layer (−1: embedding)", dtick=1, row=1, col=i)
    fig.update_yaxes(title_text="probe accuracy (held out)", row=1, col=1)
    fig.update_layout(title="linear probes read tokens ahead from one hidden state", height=400,
                      legend={"orientation": "h", "y": -0.25}, **LAYOUT)
    return fig
