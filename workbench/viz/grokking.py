"""Figures for grokking: accuracy over epochs, the embedding's Fourier spectrum, neuron frequency clusters and
Nanda's progress measures (restricted and excluded loss) over training."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from workbench.viz import LAYOUT, vertical_marker


def grokking_curves(rows: list[dict], epochs_per_step: float = 1.0, marks: dict[str, float] | None = None
                    ) -> go.Figure:
    """Train and test accuracy (left) and loss (right, log) against epoch on a log axis; `marks` (label →
    epoch) draws dotted lines, e.g. where each accuracy first reaches 0.99."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "loss"])
    series = {1: {"train_accuracy": "train", "test_accuracy": "test"}, 2: {"train_loss": "train", "test_loss": "test"}}
    for col, keys in series.items():
        for key, name in keys.items():
            points = [(r["step"] * epochs_per_step, r[key]) for r in rows if key in r and r["step"] > 0]
            fig.add_trace(go.Scatter(x=[e for e, _ in points], y=[v for _, v in points], mode="lines", name=name,
                                     legendgroup=name, showlegend=col == 1,
                                     line={"color": "#1f77b4" if name == "train" else "#d62728"}), row=1, col=col)
    for i, (label, epoch) in enumerate((marks or {}).items()):
        vertical_marker(fig, epoch, label, dash=["dot", "dash", "dashdot"][i % 3], legend=True, row=1, col=1)
    fig.update_xaxes(type="log", title_text="epoch")
    fig.update_yaxes(range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title="grokking: train vs test", height=380, **LAYOUT)
    return fig


def fourier_spectrum(norms: Tensor, labels: Sequence[str], title: str = "W_E in the Fourier basis") -> go.Figure:
    """Norm of each Fourier component (`hooks.fourier.basis_norms`): constant, cos k and sin k as bars by k."""
    norms = norms.detach().float().cpu().tolist()
    fig = go.Figure()
    for kind, color in (("const", "grey"), ("cos", "#1f77b4"), ("sin", "#ff7f0e")):
        chosen = [(label, n) for label, n in zip(labels, norms, strict=True) if label.startswith(kind)]
        fig.add_trace(go.Bar(x=[0 if kind == "const" else int(label.split()[1]) for label, _ in chosen],
                             y=[n for _, n in chosen], name=kind, marker_color=color,
                             hovertext=[label for label, _ in chosen]))
    fig.update_layout(title=title, barmode="group", xaxis_title="frequency k", yaxis_title="norm", **LAYOUT)
    return fig


def neuron_clusters(fractions: Tensor, min_fraction: float = 0.0) -> go.Figure:
    """`hooks.fourier.neuron_frequency_fractions` `[neuron freq]`: each neuron at its key frequency, placed by
    the share of its variance that frequency explains (left), and how many neurons each frequency has (right,
    neurons above `min_fraction` only)."""
    fractions = fractions.detach().float().cpu()
    best, key = fractions.max(-1)
    table = pd.DataFrame({"neuron": range(len(key)), "key": key.tolist(), "fraction": best.tolist()})
    counts = table[table["fraction"] > min_fraction]["key"].value_counts().sort_index()
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.16,
                        subplot_titles=["neurons at their key k", "neurons per key k"])
    fig.add_trace(go.Scatter(x=table["key"], y=table["fraction"], mode="markers", marker={"size": 6, "opacity": 0.6},
                             text=[f"neuron {n}" for n in table["neuron"]], showlegend=False,
                             hovertemplate="%{text}<br>frequency %{x}<br>explained %{y:.2f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=[str(k) for k in counts.index], y=counts.values, showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="key frequency k", row=1, col=1)
    fig.update_xaxes(title_text="key frequency k", type="category", row=1, col=2)
    fig.update_yaxes(title_text="variance share at key k", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text=f"neurons with share > {min_fraction:g}", row=1, col=2)
    fig.update_layout(title="MLP neurons cluster by frequency", height=380, **LAYOUT)
    return fig


def progress_measures(table: pd.DataFrame, epochs_per_step: float = 1.0) -> go.Figure:
    """Loss columns of `table` (one row per snapshot step) against epoch, log-log: train and test loss beside
    the restricted loss (key frequencies only) and the excluded loss (key frequencies removed, train pairs)."""
    fig = go.Figure()
    table = table[table["step"] > 0]
    for column in [c for c in table.columns if c != "step"]:
        fig.add_trace(go.Scatter(x=table["step"] * epochs_per_step, y=table[column], mode="lines+markers",
                                 name=column.replace("_", " ")))
    fig.update_layout(title="progress measures over training (Nanda et al.)", xaxis_title="epoch",
                      yaxis_title="loss (nats)", xaxis_type="log", yaxis_type="log", **LAYOUT)
    return fig
