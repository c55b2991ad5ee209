"""Attention as an SVM (Tarzanagh et al. 2023, "Transformers as Support Vector Machines"; "Max-Margin Token
Selection in Attention Mechanism").

Claim: trained by (normalised) gradient descent, the attention weights W of a single layer grow without bound and
their direction converges to the max-margin solution that separates the token each sequence selects from the
others — an SVM on tokens. Shown on 10 independent problems (n 6 sequences, T 8 tokens, d 10): the cosine between
W and the SVM's solution (scipy's SLSQP; its KKT conditions are checked) over training. Which tokens get selected
is GD's choice: the paper's global result (the highest-scoring token of every sequence) needs extra conditions,
and without them GD may settle on a locally-optimal selection. Both are reported: the cosine to the SVM of the
tokens selected (the claim), and how many problems selected the highest-scoring tokens everywhere.

Not a Transformer: the model is W alone (`hooks.svm.AttentionSVM`), so the model pages do not list it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import plotly.graph_objects as go
import torch
from pydantic import Field
from tqdm.auto import tqdm

from workbench.config import Config
from workbench.experiments.base import Criterion, DeviceConfig, Experiment, ExperimentConfig
from workbench.hooks.svm import AttentionSVM, attention_svm, cosine, kkt_residuals
from workbench.models.io import load_weights, save_weights
from workbench.runs import Run
from workbench.train import CHECKPOINT_FORMAT, Progress, TrainConfig
from workbench.viz import LAYOUT

PAPER = "Tarzanagh et al. 2023, Transformers as Support Vector Machines"
CONVERGED = 0.99


class TokenSelectionConfig(Config):
    problems: int = Field(10, ge=1, description="independent problems (seeds of the data)")
    n: int = Field(6, ge=1, description="sequences a problem")
    tokens: int = Field(8, ge=2, description="tokens a sequence (the first is also the query)")
    d: int = Field(10, ge=1, description="token dimension")


class SVMConfig(ExperimentConfig):
    model: DeviceConfig = DeviceConfig()  # the model is W [d d] per problem; its shape follows the task
    task: TokenSelectionConfig = TokenSelectionConfig()
    train: TrainConfig = TrainConfig(steps=2000, lr=0.1, log_every=20, warmup_steps=0, grad_clip=None, snapshots=0)


class SVM(Experiment):
    name = "svm"
    title = "Attention as an SVM: GD selects tokens with the maximum margin"
    paper = PAPER
    family = "expressivity"
    hooked = False
    claim = ("Normalised GD on a single attention layer's W converges in direction to the max-margin SVM that "
             "separates the selected tokens.")
    Config = SVMConfig
    presets = {
        "smoke": {"train.steps": 50, "train.log_every": 10, "task.problems": 3},
        "quick": {},
        "full": {"train.steps": 10000, "train.log_every": 50, "task.problems": 50},
    }
    criteria = [
        Criterion(f"cos(W, W_mm) > {CONVERGED} in ≥ 9 of 10 problems", "converged_fraction", ">=", 0.9, PAPER),
        Criterion("the SVM solutions meet their KKT conditions (stationarity residual ≤ 1e-4)",
                  "kkt_stationarity", "<=", 1e-4, PAPER),
    ]
    shipped_snapshots = 0

    def task(self, cfg: SVMConfig) -> TokenSelectionConfig:
        return cfg.task

    def build(self, cfg: SVMConfig) -> AttentionSVM:
        t = cfg.task
        return AttentionSVM(t.problems, t.n, t.tokens, t.d, seed=cfg.seed)

    def solutions(self, model: AttentionSVM, chosen: torch.Tensor) -> torch.Tensor:
        """The max-margin W of each problem for its `chosen` tokens `[problem n]`."""
        return torch.stack([attention_svm(model.X[p].cpu(), chosen[p].cpu()) for p in range(model.X.shape[0])])

    def train(self, cfg: SVMConfig, run: Run | None, callback: Callable[[Progress], None] | None = None,
              progress_bar: bool = True) -> AttentionSVM:
        """Normalised GD; W is kept every `log_every` steps and, at the end, compared with the SVM of the tokens
        finally selected, so the log holds the cosine over training."""
        model, c = self.build(cfg), cfg.train
        kept = {0: model.W.detach().clone()}
        if run is not None and run.checkpoints():  # resume: W and the history so far (GD here draws no randomness)
            saved = load_weights(run.checkpoints()[-1])
            kept = dict(zip(saved["history.steps"].tolist(), saved["history.W"], strict=True))
            with torch.no_grad():
                model.W.copy_(saved["model.W"])
        start = max(kept)
        for step in tqdm(range(start + 1, c.steps + 1), initial=start, total=c.steps, desc="normalised GD",
                         disable=not progress_bar):
            model.normalised_step(c.lr)
            if step % c.log_every == 0 or step == c.steps:
                kept[step] = model.W.detach().clone()
            if run is not None and step % c.checkpoint_every == 0:
                save_checkpoint(run, model, kept, step)
            if callback is not None and step in kept:
                with torch.no_grad():
                    callback(Progress(step, c.steps, float(model.loss().mean()), c.lr))
        if run is not None:
            target = self.solutions(model, model.selected())
            for step, W in kept.items():
                cos = cosine(W, target) if step else torch.zeros(len(W))
                run.log({"step": step, "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                         **{f"cos_{p}": float(v) for p, v in enumerate(cos)}})
        return model

    @torch.no_grad()
    def evaluate(self, model: AttentionSVM, cfg: SVMConfig) -> dict[str, float]:
        selected, top = model.selected(), model.token_scores.argmax(-1)
        solutions = self.solutions(model, selected)
        local = cosine(model.W, solutions)
        top_everywhere = (selected == top).all(-1)
        kkt = [kkt_residuals(model.X[p].cpu(), selected[p].cpu(), solutions[p]) for p in range(len(selected))]
        return {"converged_fraction": float((local > CONVERGED).float().mean()), "cos_min": float(local.min()),
                "cos_median": float(local.median()),
                "top_token_fraction": float(top_everywhere.double().mean()),
                "cos_top_svm_median": float(cosine(model.W, self.solutions(model, top)).median()),
                "loss": float(model.loss().mean()), "W_norm": float(model.W.flatten(1).norm(dim=1).mean()),
                "kkt_stationarity": max(k["stationarity"] for k in kkt),
                "kkt_primal_violation": max(k["primal_violation"] for k in kkt)}

    def figures(self, model: AttentionSVM, cfg: SVMConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {}
        if run is not None and run.metrics():
            top = (model.selected() == model.token_scores.argmax(-1)).all(-1).tolist()
            figs["cosine"] = cosine_over_training(run.metrics(), top)
        return figs


def save_checkpoint(run: Run, model: AttentionSVM, kept: dict[int, torch.Tensor], step: int) -> None:
    """W and the history of W logged so far, in the trainer's checkpoint format (so a checkpoint loads as a model)."""
    meta = {"workbench": json.dumps({"format": CHECKPOINT_FORMAT, "step": step, "phase": "train"})}
    steps = [s for s in kept if s <= step]
    save_weights({"model.W": model.W, "history.W": torch.stack([kept[s] for s in steps]),
                  "history.steps": torch.tensor(steps)}, run.path / "checkpoints" / f"step-{step}.safetensors", meta)


def cosine_over_training(rows: list[dict], top: list[bool]) -> go.Figure:
    """cos(W_t, W_mm) per problem against step (log axis), coloured by whether the problem selected the
    highest-scoring token of every sequence."""
    fig = go.Figure()
    for p, is_top in enumerate(top):
        points = [(r["step"], r[f"cos_{p}"]) for r in rows if r["step"] > 0 and f"cos_{p}" in r]
        kind = "selected the top-score tokens" if is_top else "a locally-optimal selection"
        fig.add_trace(go.Scatter(x=[s for s, _ in points], y=[c for _, c in points], mode="lines",
                                 name=kind, legendgroup=kind, showlegend=p == top.index(is_top),
                                 line={"color": "#1f77b4" if is_top else "#ff7f0e", "width": 1.5},
                                 hovertemplate=f"problem {p}<br>step %{{x}}<br>cos %{{y:.4f}}<extra></extra>"))
    fig.add_hline(y=CONVERGED, line_dash="dot", annotation_text=f"{CONVERGED}")
    fig.update_layout(title="cos(W, W_mm): the direction of W converges to the SVM of the tokens it selects",
                      xaxis={"type": "log", "title": "normalised GD step"}, yaxis_title="cosine",
                      height=400, **LAYOUT)
    return fig
