"""Figures for the in-context-learning family: divergence and error curves against baselines."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from workbench.viz import LAYOUT


def kl_by_position(curves: dict[str, Tensor], score_from: int | None = None) -> go.Figure:
    """KL(Bayes ‖ predictor) at each position, one line per predictor; the scored range shaded."""
    fig = go.Figure()
    for name, values in curves.items():
        values = values.detach().float().cpu().tolist()[:-1]  # the last position has no next token
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=values, mode="lines", name=name))
    if score_from is not None:
        fig.add_vrect(x0=score_from, x1=len(values) - 1, fillcolor="grey", opacity=0.08, line_width=0,
                      annotation_text="scored", annotation_position="top left")
    fig.update_layout(title="KL(Bayes ‖ predictor) by position", xaxis_title="position",
                      yaxis_title="KL (nats)", yaxis_type="log", **LAYOUT)
    return fig


def error_curves(table: pd.DataFrame, title: str = "error vs in-context examples") -> go.Figure:
    """Columns of `hooks.icl.regression_error_curves` against k; the model drawn thick."""
    fig = go.Figure()
    for name in [c for c in table.columns if c != "k"]:
        fig.add_trace(go.Scatter(x=table["k"], y=table[name], mode="lines+markers", name=name,
                                 line={"width": 4 if name == "model" else 1.5}))
    fig.update_layout(title=title, xaxis_title="in-context examples k", yaxis_title="squared error / d", **LAYOUT)
    return fig


def probe_r2(table: pd.DataFrame, title: str = "probe R² by layer") -> go.Figure:
    """`hooks.icl.probe_by_layer`'s R² per layer, beside the random-init control."""
    labels = ["embed" if layer < 0 else f"L{layer}" for layer in table["layer"]]
    fig = go.Figure(go.Bar(x=labels, y=table["r2"], name="trained"))
    if "control_r2" in table:
        fig.add_trace(go.Bar(x=labels, y=table["control_r2"], name="random-init control"))
    fig.update_layout(title=title, barmode="group", yaxis_title="held-out R²", yaxis_range=[-0.1, 1], **LAYOUT)
    return fig


def prediction_comparison(table: pd.DataFrame, title: str = "one fresh task: predictions at each k") -> go.Figure:
    """`hooks.icl.fresh_prompt_predictions`: the truth as markers, each predictor as a line."""
    fig = go.Figure(go.Scatter(x=table["k"], y=table["truth"], mode="markers", name="true y",
                               marker={"size": 11, "symbol": "x", "color": "black"}))
    for name in [c for c in table.columns if c not in ("k", "truth")]:
        fig.add_trace(go.Scatter(x=table["k"], y=table[name], mode="lines+markers", name=name,
                                 line={"width": 3 if name == "model" else 1.5}))
    fig.update_layout(title=title, xaxis_title="in-context examples k before the query", yaxis_title="y",
                      **LAYOUT)
    return fig


def accuracy_curves(table: pd.DataFrame, title: str = "accuracy vs in-context examples") -> go.Figure:
    """Accuracy columns against k (the model drawn thick), on a 0.4–1 scale where chance is 0.5."""
    fig = go.Figure()
    for name in [c for c in table.columns if c != "k"]:
        fig.add_trace(go.Scatter(x=table["k"], y=table[name], mode="lines", name=name,
                                 line={"width": 4 if name == "model" else 1.5}))
    fig.update_layout(title=title, xaxis_title="in-context examples k", yaxis_title="accuracy",
                      yaxis_range=[0.4, 1.01], **LAYOUT)
    return fig


def task_diversity_transition(table: pd.DataFrame) -> go.Figure:
    """Loss / D against the number of pretraining tasks M (log scale, M = ∞ drawn at the right): the model on
    new and on pretraining tasks, beside dMMSE (the pool's Bayes estimator) and ridge (the Gaussian one)."""
    table = table.copy()
    finite = table["M"].dropna()
    right = 4 * finite.max() if len(finite) else 1
    table["x"] = table["M"].fillna(right)
    table = table.sort_values("x")
    fig = go.Figure()
    styles = {"loss_true": ("model, new tasks", {"width": 4}),
              "loss_pre": ("model, pretraining tasks", {"width": 4, "dash": "dot"}),
              "dmmse_true": ("dMMSE, new tasks", {"width": 1.5}),
              "dmmse_pre": ("dMMSE, pretraining tasks", {"width": 1.5, "dash": "dot"}),
              "ridge_true": ("ridge, new tasks", {"width": 1.5, "dash": "dash"})}
    for column, (label, line) in styles.items():
        if column in table:
            fig.add_trace(go.Scatter(x=table["x"], y=table[column], mode="lines+markers", name=label, line=line))
    ticks = sorted(table["x"])
    infinite = table["M"].isna().any()
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=["∞" if infinite and t == right else f"{t:g}" for t in ticks])
    fig.update_layout(title="task diversity: loss / D vs number of pretraining tasks M", xaxis_title="M",
                      yaxis_title="squared error / D", **LAYOUT)
    return fig


def accuracy_over_training(rows: list[dict], keys: dict[str, str], title: str, mark_step: int | None = None
                           ) -> go.Figure:
    """Scores in [0, 1] logged during training (`keys`: log key → legend name), one line each, against step:
    the abrupt in-context jump of bursty training shows here. `mark_step` draws a dotted line."""
    fig = go.Figure()
    for key, name in keys.items():
        points = [(r["step"], r[key]) for r in rows if key in r]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=name, marker={"size": 4}))
    if mark_step is not None:
        fig.add_vline(x=mark_step, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title="training step", yaxis_title="accuracy / attention",
                      yaxis_range=[-0.02, 1.02],
                      **LAYOUT)
    return fig


def split_accuracies(table: pd.DataFrame, title: str = "accuracy on each test set") -> go.Figure:
    """Grouped bars: one group per test set (rows), one bar per model or variant (columns)."""
    fig = go.Figure([go.Bar(x=table.index, y=table[name], name=name, text=table[name].round(3), textposition="outside")
                     for name in table.columns])
    fig.update_layout(title=title, barmode="group", yaxis_title="accuracy", yaxis_range=[0, 1.1], **LAYOUT)
    return fig


def error_by_iteration(table: pd.DataFrame, trained_loops: int) -> go.Figure:
    """A looped model's error after each iteration (thick), baselines as flat lines, and the number of
    iterations it was trained with marked: past it, the curve shows whether the model extrapolates."""
    fig = go.Figure()
    for name in [c for c in table.columns if c != "iteration"]:
        fig.add_trace(go.Scatter(x=table["iteration"], y=table[name], mode="lines+markers" if name == "model" else
                                 "lines", name=name, line={"width": 4 if name == "model" else 1.5,
                                                           "dash": None if name == "model" else "dash"}))
    fig.add_vline(x=trained_loops, line_dash="dot", line_color="grey", annotation_text="trained loops b")
    fig.update_layout(title="error / d at k = 2d by loop iteration", xaxis_title="iteration", yaxis_title="error / d",
                      yaxis_type="log", **LAYOUT)
    return fig


def class_error_curves(tables: dict[str, pd.DataFrame], titles: dict[str, str] | None = None) -> go.Figure:
    """One panel per prompt class: error / d against k for the model (thick) and each baseline, the class's
    optimum dashed; a log scale, where a constant ratio is a constant gap."""
    titles = titles or {}
    cols = min(2, len(tables))  # a 2-wide grid stays readable in a half-width dashboard column
    rows = -(-len(tables) // cols)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes="all", horizontal_spacing=0.06, vertical_spacing=0.14,
                        subplot_titles=[titles.get(name, name) for name in tables])
    names = list(dict.fromkeys(c.removesuffix(" (optimal)") for t in tables.values() for c in t.columns if c != "k"))
    colours = dict(zip(names, px.colors.qualitative.Plotly, strict=False))
    shown = set()
    for i, table in enumerate(tables.values()):
        row, col = divmod(i, cols)
        for column in [c for c in table.columns if c != "k"]:
            name = column.removesuffix(" (optimal)")
            fig.add_trace(go.Scatter(x=table["k"], y=table[column], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=name not in shown,
                                     line={"width": 4 if name == "model" else 1.5, "color": colours[name],
                                           "dash": "dash" if column.endswith("(optimal)") else "solid"}),
                          row=row + 1, col=col + 1)
            shown.add(name)
        if row == rows - 1:
            fig.update_xaxes(title_text="examples k", row=row + 1, col=col + 1)
    fig.update_yaxes(type="log")
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text="squared error / d", row=row, col=1)
    fig.update_layout(title="error by prompt class (dashed: the class's optimal predictor)", height=120 + 260 * rows,
                      **LAYOUT)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.08 * 2 / rows},
                      margin={**LAYOUT["margin"], "b": 90})
    return fig
