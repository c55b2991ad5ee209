"""Mixed attention spans (Zhang et al. 2023, MASFormer: "Efficient Long-Range Transformers: You Need to Attend More,
but Not Necessarily at Every Layer").

Claim: most layers can attend locally (a sliding window) as long as a few attend globally; one global layer of
four recovers most of an all-global model's long-range ability at a fraction of the attention cost. Shown on a
long-gap copy (8 symbols of 16, 230 filler tokens, a separator, then the copy; `tasks/copy.py` with `gap`): with
windows of 32 in every layer no query can reach the symbols (4 windows see 124 tokens back, the gap is 230), so
all-local sits at chance; all-global copies. Three variants of one run: `all-local`, `one-global` (layer 0
global, the rest windowed), `all-global`; each reports its accuracy and its attention cost.

The paper's claim is not reached in quick mode, and is not robust; as the issue rules, it is judged in full runs
(`modes=("full",)`) and its quick value reported. DESIGN's calibration put the global layer second and saw
0.06–0.17 after 600–1000 steps; it listed "global layer first" as an untested fix. With the global layer first, a
600-step run copied perfectly (1.00 by step 350) but all-global stayed on its plateau (0.16); over 1000 steps (the
quick preset, shipped) all-global copies (1.00 by step 400) and one-global plateaus at 0.69: 0.69× all-global,
not 0.9×.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.copy import Copy, CopyConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, compare_curves

PAPER = "Zhang et al. 2023, MASFormer: Efficient Long-Range Transformers (mixed attention spans)"
WINDOW = 32


def attention_pairs(n_ctx: int, windows: list[int]) -> int:
    """Query-key pairs a causal model scores over all its layers (its attention cost, up to a constant)."""
    q = torch.arange(n_ctx)
    return int(sum((q + 1).clamp(max=w if w else n_ctx).sum() for w in windows))


class AttentionSpansConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=4, d_model=64, n_heads=4, d_mlp=256, n_ctx=256, d_vocab=19)
    task: CopyConfig = CopyConfig(n_symbols=16, min_len=8, max_len=8, gap=230)
    # 1000 steps: over a 600-step schedule all-global stayed on its plateau (0.16) in one run of two
    train: TrainConfig = TrainConfig(steps=1000, batch_size=16, lr=3e-3, warmup_steps=50, eval_every=50,
                                     snapshots=4)
    variants: dict[str, dict] = {"all-local": {"model": {"window": WINDOW}},
                                 "one-global": {"model": {"window": [0, WINDOW, WINDOW, WINDOW]}},
                                 "all-global": {"model": {"window": 0}}}


class AttentionSpans(Experiment):
    name = "attention-spans"
    title = "Mixed attention spans: how many layers must see far?"
    paper = PAPER
    claim = ("With sliding windows everywhere a long-gap copy is out of reach; all-global attention copies; the "
             "paper's claim is that one global layer of four recovers most of it at a fraction of the cost.")
    Config = AttentionSpansConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 4, "train.warmup_steps": 2, "train.eval_every": 10,
                  "eval_batch": 8},
        "quick": {},
        "full": {"train.steps": 3000, "train.lr": 1e-3},
    }
    criteria = [
        Criterion("all-local (windows of 32) stays at chance (≤ 1/16 + 0.03)", "all-local.accuracy", "<=",
                  1 / 16 + 0.03, PAPER),
        Criterion("all-global copies (≥ 0.9)", "all-global.accuracy", ">=", 0.9, PAPER),
        # The rule: not reached in quick mode on a CPU (0.69×), so judged in full runs, reported in quick.
        Criterion("one global layer (the first) recovers ≥ 0.9× all-global", "one-global.accuracy", ">=", 0.9,
                  PAPER, versus="all-global.accuracy", modes=("full",)),
    ]
    shipped_snapshots = 4

    def task(self, cfg: AttentionSpansConfig) -> Copy:
        return Copy(cfg.task)

    @torch.no_grad()
    def evaluate(self, model, cfg: AttentionSpansConfig) -> dict[str, float]:
        batch = self.eval_batch(cfg).to(device_of(model))
        right = (model(batch.tokens).argmax(-1) == batch.targets)[batch.loss_mask]
        windows = model.cfg.per_layer(model.cfg.window)
        cost = attention_pairs(model.cfg.n_ctx, windows) / attention_pairs(model.cfg.n_ctx, [0] * len(windows))
        return {"accuracy": float(right.float().mean()), "attention_cost": cost}

    def combine_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        if "one-global.accuracy" in metrics and "all-global.accuracy" in metrics:
            return {"one_global_share": metrics["one-global.accuracy"] / max(metrics["all-global.accuracy"], 1e-9)}
        return {}

    def figures_variants(self, models, cfg: AttentionSpansConfig, run: Run | None = None) -> dict[str, go.Figure]:
        scores = self.variant_scores(models, cfg)
        fig = go.Figure()
        fig.add_trace(go.Bar(x=list(scores), y=[s["accuracy"] for s in scores.values()], name="copy accuracy",
                             text=[f"{s['accuracy']:.2f}" for s in scores.values()], textposition="outside"))
        fig.add_trace(go.Bar(x=list(scores), y=[s["attention_cost"] for s in scores.values()],
                             name="attention cost (share of all-global)", marker_pattern_shape="/",
                             text=[f"{s['attention_cost']:.2f}" for s in scores.values()], textposition="outside"))
        # the chance line's label goes in the subtitle: on the plot, the bars hide it
        fig.add_hline(y=1 / cfg.task.n_symbols, line_dash="dot")
        fig.update_layout(title=f"long-gap copy (gap {cfg.task.gap}, windows of {WINDOW}): accuracy and attention "
                          f"cost<br><sup>dotted: chance, 1/{cfg.task.n_symbols}</sup>", barmode="group",
                          yaxis_range=[0, 1.15], height=380, **LAYOUT)
        figs = {"accuracy": fig}
        if run is not None:
            figs["training"] = compare_curves({n: run.variant(n).metrics() for n in models}, ["loss", "accuracy"])
        return figs
