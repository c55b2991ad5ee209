"""No-op heads and activation outliers (Bondarenko et al. 2023, "Quantizable Transformers: Removing Outliers by
Helping Attention Heads Do Nothing").

Claim: heads that have nothing to update learn to attend to a low-information token (BOS, a delimiter) whose
value is near zero. Softmax can only approach a weight of exactly one there, so training keeps growing the
scores and the residual stream at those tokens, until a few dimensions hold outliers of hundreds — which break
8-bit quantisation. Two small changes let a head do nothing without outliers: clipped softmax
(clip((ζ − γ)·softmax + γ, 0, 1) reaches exact zeros and ones) and gated attention (a sigmoid gate per head,
computed from the block input, can switch the head's output off). Outliers appear only at a high learning rate
(DESIGN §3), so the recipe trains at lr 1e-2. Each attention kind is trained with two seeds, as variants
`kind-s{seed}` of one run; criteria compare the means over seeds.

Not yet, narrowly: 7 of 8 criteria hold on the quick preset, but clipped softmax lowers the residual ∞-norm only
1.24× (211 vs 261; 1.3× asked). It removes the outliers' *shape* (kurtosis 80 → 10) and most of the W8A8 gap
(0.011 → 0.002), not the largest value. A larger stretch below zero meets all three clipped criteria (the two
clipped variants retrained alone, against the shipped vanilla models): by the paper's rule γ = −α/T with
the α = 12 of its causal-LM (OPT) recipe, γ = −12/64 = −0.1875 (`--set variants.clipped-s0.model.clip_gamma=-0.1875
--set variants.clipped-s1.model.clip_gamma=-0.1875`), the clipped ∞-norm is 176 / 185 (seeds 0 / 1; mean 180, 1.45×
lower), residual kurtosis 7.5, W8A8 gap 0.0021, float loss 3.93; with γ = −0.0625 (α = 4), 213 / 140 (mean 176,
1.48×). DESIGN's recipe fixes γ = −0.03 (calibrated there at 127 / 100), so the shipped run keeps it and reports
the miss.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from pydantic import Field

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.outliers import activation_outliers, dimension_maxima, sink_attention, w8a8_loss
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.language import BOS, DELIMITER, SegmentedLanguage, SegmentedLanguageConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, training_curves

PAPER = "Bondarenko et al. 2023, Quantizable Transformers (clipped softmax, gated attention)"
KINDS = {"vanilla": "softmax", "clipped": "clipped", "gated": "gated"}  # variant kind → model.attention
COLOURS = {"vanilla": "#d62728", "clipped": "#1f77b4", "gated": "#2ca02c"}


def kind_of(variant: str) -> str:
    """`vanilla-s1` → `vanilla`: the variants of one attention kind differ only in seed."""
    return variant.rsplit("-s", 1)[0]


def line_style(variant: str) -> dict:
    """Colour by attention kind; seed 0 solid, other seeds dotted."""
    return {"color": COLOURS.get(kind_of(variant)), "dash": "solid" if variant.endswith("-s0") else "dot"}


def seeded_variants(seeds: tuple[int, ...] = (0, 1)) -> dict[str, dict]:
    return {f"{kind}-s{seed}": {"seed": seed, "model": {"attention": attention}}
            for kind, attention in KINDS.items() for seed in seeds}


class NoOpHeadsConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=4, d_model=64, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=256)
    task: SegmentedLanguageConfig = SegmentedLanguageConfig()
    # A language-model recipe (β₂ 0.95, cosine to 0). With β₂ 0.999 and a floor of 0.1·lr, the residual grows
    # large everywhere instead (∞-norm ~60 at kurtosis ~6 on every variant) and the sinks stay soft.
    train: TrainConfig = TrainConfig(steps=2000, batch_size=16, lr=1e-2, warmup_steps=200, min_lr_ratio=0.0,
                                     betas=(0.9, 0.95), eval_every=500, snapshots=8)
    variants: dict[str, dict] = Field(default_factory=seeded_variants)
    eval_batch: int = Field(64, ge=1, description="held-out sequences for the outlier and quantisation metrics")


def _mean_over_seeds(metrics: dict[str, float], variants: list[str], key: str) -> dict[str, float]:
    out = {}
    for kind in dict.fromkeys(kind_of(v) for v in variants):
        values = [metrics[f"{v}.{key}"] for v in variants if kind_of(v) == kind and f"{v}.{key}" in metrics]
        if values:
            out[f"{kind}.{key}"] = sum(values) / len(values)
    return out


class NoOpHeads(Experiment):
    name = "no-op-heads"
    title = "No-op heads: outliers, and attention that can do nothing"
    paper = PAPER
    claim = ("Heads parking on BOS/delimiters grow residual outliers that break 8-bit quantisation; clipped "
             "softmax and gated attention remove them.")
    Config = NoOpHeadsConfig
    presets = {
        "smoke": {"train.steps": 20, "train.warmup_steps": 5, "train.eval_every": 10, "eval_batch": 8,
                  "variants": seeded_variants((0,))},
        "quick": {},
        "full": {"train.steps": 6000, "variants": seeded_variants((0, 1, 2))},
    }
    criteria = [
        Criterion("vanilla grows outliers: residual ∞-norm ≥ 80", "vanilla.resid_max", ">=", 80, PAPER),
        Criterion("vanilla grows outliers: FFN-output kurtosis ≥ 50", "vanilla.mlp_kurtosis", ">=", 50, PAPER),
        Criterion("clipped: residual kurtosis ≥ 2× lower", "clipped.resid_kurtosis", "<=", 0.5, PAPER,
                  versus="vanilla.resid_kurtosis"),
        Criterion("gated: residual kurtosis ≥ 2× lower", "gated.resid_kurtosis", "<=", 0.5, PAPER,
                  versus="vanilla.resid_kurtosis"),
        Criterion("gated: residual ∞-norm ≥ 2× lower", "gated.resid_max", "<=", 0.5, PAPER,
                  versus="vanilla.resid_max"),
        Criterion("clipped: residual ∞-norm ≥ 1.3× lower", "clipped.resid_max", "<=", 1 / 1.3, PAPER,
                  versus="vanilla.resid_max"),
        Criterion("clipped: W8A8 loss gap ≥ 2× smaller", "clipped.w8a8_gap", "<=", 0.5, PAPER,
                  versus="vanilla.w8a8_gap"),
        Criterion("gated: W8A8 loss gap ≥ 2× smaller", "gated.w8a8_gap", "<=", 0.5, PAPER,
                  versus="vanilla.w8a8_gap"),
    ]
    shipped_snapshots = 4

    def task(self, cfg: NoOpHeadsConfig) -> SegmentedLanguage:
        return SegmentedLanguage(cfg.task)

    def evaluate(self, model, cfg: NoOpHeadsConfig) -> dict[str, float]:
        """Worst layer's residual and FFN-output ∞-norm and kurtosis; the float and W8A8 losses; the largest
        sink attention mass of any head."""
        batch = self.eval_batch(cfg).to(device_of(model))
        outliers = activation_outliers(model, batch.tokens)
        sinks = sink_attention(model, batch.tokens, self.sinks(batch.tokens))
        metrics = {key: max(values) for key, values in outliers.items()}
        metrics.update(w8a8_loss(model, batch))
        metrics["max_sink_mass"] = float(sinks["mass"].max())
        return metrics

    def evaluate_variants(self, models, cfg: NoOpHeadsConfig) -> dict[str, float]:
        metrics = super().evaluate_variants(models, cfg)
        for key in ("resid_max", "resid_kurtosis", "mlp_max", "mlp_kurtosis", "float_loss", "w8a8_gap",
                    "max_sink_mass"):
            metrics.update(_mean_over_seeds(metrics, list(models), key))
        for kind in ("clipped", "gated"):  # the float-loss price of removing the outliers
            if f"{kind}.float_loss" in metrics and "vanilla.float_loss" in metrics:
                metrics[f"{kind}.float_loss_cost"] = metrics[f"{kind}.float_loss"] - metrics["vanilla.float_loss"]
        return metrics

    @staticmethod
    def sinks(tokens: torch.Tensor) -> torch.Tensor:
        return (tokens == BOS) | (tokens == DELIMITER)

    @torch.no_grad()
    def figures(self, model, cfg: NoOpHeadsConfig, run: Run | None = None) -> dict[str, go.Figure]:
        batch = self.eval_batch(cfg).to(device_of(model))
        sinks = sink_attention(model, batch.tokens, self.sinks(batch.tokens))
        figs = {"sink_attention": sink_grid({model.cfg.attention: sinks}),
                "outlier_dimensions": self.dimension_figure({model.cfg.attention: model}, cfg)}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "resid_max", "mlp_kurtosis"])
        return figs

    def figures_variants(self, models, cfg: NoOpHeadsConfig, run: Run | None = None) -> dict[str, go.Figure]:
        first = {}  # one model per kind (its first seed) for the per-model pictures
        for name, model in models.items():
            first.setdefault(kind_of(name), model)
        with torch.no_grad():
            batch = self.eval_batch(cfg).to(device_of(next(iter(models.values()))))
            outliers = {name: activation_outliers(model, batch.tokens) for name, model in models.items()}
            sinks = {kind: sink_attention(model, batch.tokens, self.sinks(batch.tokens)) for kind, model in
                     first.items()}
        figs = {"outliers_by_layer": outliers_by_layer(outliers),
                "sink_attention": sink_grid(sinks),
                "outlier_dimensions": self.dimension_figure(first, cfg)}
        if run is not None:
            rows = {name: run.variant(name).metrics() for name in models}
            if all(rows.values()):
                figs["training"] = variant_curves(rows, "loss")
        return figs

    @torch.no_grad()
    def dimension_figure(self, models: dict, cfg: NoOpHeadsConfig, layer: int = -1) -> go.Figure:
        """Each residual dimension's largest |value| after block `layer` (default the last), at the sinks vs at
        other tokens, one panel per model."""
        fig = make_subplots(rows=len(models), cols=1, shared_xaxes=True, subplot_titles=list(models),
                            vertical_spacing=0.08)
        held_out = self.eval_batch(cfg).tokens  # one sample for every panel
        for row, model in enumerate(models.values(), start=1):
            tokens = held_out.to(device_of(model))
            sinks, block = self.sinks(tokens), layer % model.cfg.n_layers
            for label, where, colour in (("BOS / delimiters", sinks, "#d62728"), ("other tokens", ~sinks, "#7f7f7f")):
                fig.add_trace(go.Bar(y=dimension_maxima(model, tokens, block, where).cpu(), name=label,
                                     marker_color=colour, showlegend=row == 1, legendgroup=label), row=row, col=1)
        fig.update_layout(title=f"outlier dimensions: max |residual| after block {layer % cfg.model.n_layers}",
                          barmode="overlay", height=220 * len(models) + 80, **LAYOUT)
        fig.update_xaxes(title_text="residual dimension", row=len(models), col=1)
        return fig


def outliers_by_layer(outliers: dict[str, dict[str, list[float]]]) -> go.Figure:
    """Residual ∞-norm and kurtosis per layer, one line per variant, coloured by attention kind."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("residual ∞-norm", "residual kurtosis (log)"))
    for name, values in outliers.items():
        layers = list(range(len(values["resid_max"])))
        for col, key in ((1, "resid_max"), (2, "resid_kurtosis")):
            fig.add_trace(go.Scatter(x=layers, y=values[key], name=name, mode="lines+markers", line=line_style(name),
                                     legendgroup=name, showlegend=col == 1), row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_layout(title="activation outliers by layer (held-out text)", **LAYOUT)
    return fig


def sink_grid(sinks: dict[str, dict[str, torch.Tensor]]) -> go.Figure:
    """Per head: attention mass on BOS/delimiters (colour), with the value-norm ratio there in the hover and text:
    a no-op head has high mass and a ratio near 0."""
    fig = make_subplots(rows=1, cols=len(sinks), subplot_titles=list(sinks), horizontal_spacing=0.06)
    for col, s in enumerate(sinks.values(), start=1):
        mass, ratio = s["mass"].cpu(), s["value_norm_ratio"].cpu()
        fig.add_trace(go.Heatmap(z=mass, zmin=0, zmax=1, colorscale="Blues", showscale=col == len(sinks),
                                 text=[[f"{r:.2f}" for r in row] for row in ratio.tolist()], texttemplate="%{text}",
                                 hovertemplate="layer %{y} head %{x}<br>mass on sinks %{z:.2f}<br>"
                                               "value norm at sinks / elsewhere %{text}<extra></extra>",
                                 colorbar={"title": "mass"}), row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, autorange="reversed", row=1, col=col)
    fig.update_layout(title="attention parked on BOS/delimiters<br><sup>colour: attention mass there · text: value "
                            "norm there / elsewhere</sup>", height=360, **LAYOUT)
    fig.update_layout(margin_t=85)  # room for the subtitle above the subplot titles
    return fig


def variant_curves(rows: dict[str, list[dict]], key: str) -> go.Figure:
    fig = go.Figure()
    for name, log in rows.items():
        points = [r for r in log if key in r]
        fig.add_trace(go.Scatter(x=[r["step"] for r in points], y=[r[key] for r in points], name=name, mode="lines",
                                 line=line_style(name)))
    fig.update_layout(title=f"training {key} per variant", xaxis_title="step", yaxis_title=key, **LAYOUT)
    return fig
