"""Plotly figure builders shared by notebooks, dashboard and experiments. They return `go.Figure`
and never show it; nothing here imports streamlit or ipywidgets."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import NotebookRenderer  # no public base for custom HTML renderers
from plotly.subplots import make_subplots
from torch import Tensor


class OfflineNotebookRenderer(NotebookRenderer):
    """plotly's notebook renderer without its two costs for shared notebooks: the MathJax script it loads from a
    CDN for every figure, and plotly.js loaded again (megabytes) whenever a figure renders through
    `_repr_mimebundle_`; `notebook_setup` loads plotly.js once instead."""

    def activate(self) -> None:
        pass

    def to_mimebundle(self, fig_dict) -> dict[str, str]:
        return {"text/html": figure_html(fig_dict, self.config)}


def figure_html(fig, config: dict | None = None) -> str:
    """A figure as an HTML fragment for a page that already has plotly.js (`notebook_setup` puts it there)."""
    return pio.to_html(fig, config=config, include_plotlyjs=False, include_mathjax=False, full_html=False,
                       default_width="100%", default_height=525, validate=False)


def notebook_setup() -> None:
    """Render figures interactively in JupyterLab *and* in exported HTML, with plotly.js embedded once (by this
    call) and nothing fetched from a CDN, so shared executed notebooks show their figures offline."""
    from IPython.display import HTML, display
    from plotly.offline import get_plotlyjs

    pio.renderers["workbench_offline"] = OfflineNotebookRenderer()
    pio.renderers.default = "plotly_mimetype+workbench_offline"
    config = "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
    display(HTML(f"{config}<script>{get_plotlyjs()}</script>"))


LAYOUT = {"template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 50, "b": 40}}


# Roughly how many pixels a title character takes in the dashboard's theme, and a subtitle's (`<sup>`) share of it
TITLE_CHAR_PX, SUBTITLE_SCALE = 8.0, 0.7


def _wrapped(line: str, chars: int) -> str:
    """One title line broken at spaces to `chars` visible characters; a `<sup>…</sup>` line stays small."""
    sup = re.fullmatch(r"<sup>(.*)</sup>", line)
    text, width = (sup.group(1), int(chars / SUBTITLE_SCALE)) if sup else (line, chars)
    if "<" in text or len(text) <= width:  # other markup: leave it whole rather than break inside a tag
        return line
    parts = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    return "<br>".join(f"<sup>{p}</sup>" for p in parts) if sup else "<br>".join(parts)


def fit_to_width(fig: go.Figure, width: int) -> go.Figure:
    """A copy of `fig` for a column `width` pixels wide (the dashboard's side-by-side figures): a title too long
    for it is broken into lines, with room made above the plot, and a legend at the side that would squeeze the
    plot to a sliver moves below it. Plotly clips a long title instead of wrapping it."""
    fitted = go.Figure(fig)
    title = fitted.layout.title.text or ""
    lines = "<br>".join(_wrapped(line, int(width / TITLE_CHAR_PX)) for line in title.split("<br>"))
    if lines != title:
        rows = lines.split("<br>")
        small = sum(row.startswith("<sup>") for row in rows)
        needed = 30 + 22 * (len(rows) - small) + 14 * small  # one plain line: about LAYOUT's 50
        top = fitted.layout.margin.t if fitted.layout.margin.t is not None else LAYOUT["margin"]["t"]
        fitted.update_layout(title_text=lines, margin_t=max(top, needed))
    names = [t.name for t in fitted.data if t.name and t.showlegend is not False]
    side_legend = fitted.layout.legend.orientation != "h" and fitted.layout.showlegend is not False
    if side_legend and len(names) > 1 and 40 + 7 * max(map(len, names)) > 0.3 * width:
        fitted.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.3, "yanchor": "top"})
    return fitted


def vertical_marker(fig: go.Figure, x: float, label: str = "", y: tuple[float, float] = (0.0, 1.0),
                    dash: str = "dash", legend: bool = False, **subplot) -> None:
    """A vertical line at data coordinate `x`, drawn as a trace: `add_vline` is a shape, and shapes on a log
    axis take log10 coordinates (x = 8 lands at 10⁸). The label sits beside the line's middle, or in the legend;
    `subplot` is `row=…, col=…` in a figure made with subplots."""
    middle = (y[0] + y[1]) / 2
    text = None if legend else ["", f" {label}", ""]
    fig.add_trace(go.Scatter(x=[x, x, x], y=[y[0], middle, y[1]], mode="lines" if legend else "lines+text",
                             text=text, textposition="middle right", name=label, showlegend=legend, cliponaxis=False,
                             line={"dash": dash, "color": "grey", "width": 1}, hoverinfo="skip"), **subplot)


def attention_heatmap(
    pattern: Tensor, labels: Sequence[str | int] | None = None, title: str = "attention"
) -> go.Figure:
    """Pattern `[q k]` as a heatmap; token labels on both axes, hover shows the weight."""
    pattern = pattern.detach().float().cpu()
    n = pattern.shape[0]
    labels = [f"{i}:{t}" for i, t in enumerate(labels)] if labels is not None else [str(i) for i in range(n)]
    fig = go.Figure(go.Heatmap(
        z=pattern.numpy(), x=labels[: pattern.shape[1]], y=labels[:n], colorscale="Blues", zmin=0, zmax=1,
        hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="key", yaxis_title="query", yaxis_autorange="reversed",
                      width=560, height=520, **LAYOUT)
    return fig


def activation_figure(values: Tensor, name: str, tokens: Sequence[str] | None = None, histogram: bool = False
                      ) -> go.Figure:
    """One hook point's activation on a prompt: a heatmap of its first axis (positions, when there is one per
    token) against everything else flattened (heads × features), or a histogram of all its values."""
    values = values.detach().float().cpu()
    if histogram:
        fig = go.Figure(go.Histogram(x=values.flatten().numpy(), nbinsx=80))
        fig.update_layout(title=f"{name}: {values.numel()} values", xaxis_title="value", yaxis_title="count",
                          height=360, **LAYOUT)
        return fig
    grid = values.reshape(values.shape[0], -1) if values.dim() > 1 else values[:, None]
    rows = [f"{i}:{t}" for i, t in enumerate(tokens)] if tokens is not None and len(tokens) == len(grid) else \
        [str(i) for i in range(len(grid))]
    limit = float(grid.abs().max()) or 1.0
    fig = go.Figure(go.Heatmap(z=grid.numpy(), y=rows, colorscale="RdBu", zmid=0, zmin=-limit, zmax=limit,
                               hovertemplate="%{y}<br>feature %{x}<br>%{z:.3f}<extra></extra>"))
    shape = " × ".join(map(str, values.shape))
    fig.update_layout(title=f"{name} [{shape}]", xaxis_title="feature" + (" (trailing axes flattened)"
                      if values.dim() > 2 else ""), yaxis_autorange="reversed", height=min(900, 140 + 14 * len(rows)),
                      **LAYOUT)
    return fig


def head_score_grid(scores: pd.DataFrame, score: str) -> go.Figure:
    """Layer × head grid of one score column from `hooks.attention.head_scores`."""
    grid = scores.pivot(index="layer", columns="head", values=score)
    fraction = score != "entropy"  # attention fractions share one 0–1 scale, so noise never looks bright
    fig = go.Figure(go.Heatmap(
        z=grid.values, x=[f"H{h}" for h in grid.columns], y=[f"L{layer}" for layer in grid.index],
        colorscale="Viridis", zmin=0 if fraction else None, zmax=1 if fraction else None,
        text=grid.round(2).values, texttemplate="%{text}",
        hovertemplate="%{y} %{x}<br>" + score + " %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=f"{score.replace('_', ' ')} score by head", height=120 + 60 * len(grid), **LAYOUT)
    return fig


def loss_by_position(losses: Tensor, boundaries: dict[str, int] | None = None) -> go.Figure:
    """Mean loss at each position, with vertical markers (e.g. where the repeat starts)."""
    values = losses.detach().float().cpu().tolist()
    fig = go.Figure(go.Scatter(x=list(range(len(values))), y=values, mode="lines+markers", name="loss"))
    for label, x in (boundaries or {}).items():
        fig.add_vline(x=x - 0.5, line_dash="dash", annotation_text=label)
    fig.update_layout(title="loss by position", xaxis_title="position", yaxis_title="loss (nats)", **LAYOUT)
    return fig


def metric_panels(keys: Sequence[str], log_x: bool, height: int) -> tuple[go.Figure, list[dict]]:
    """A figure with one panel per metric key against step, at most two a row (the dashboard shows training curves
    in half- and third-width columns, where three in a row leave each too narrow to read), `height` tall per row
    plus 250 px for each further row; and each key's `row=…, col=…`."""
    cols = min(max(len(keys), 1), 2)
    rows = -(-max(len(keys), 1) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(keys), vertical_spacing=0.22 if rows > 1 else None)
    cells = [{"row": i // cols + 1, "col": i % cols + 1} for i in range(len(keys))]
    for at in cells:
        fig.update_xaxes(title_text="step", type="log" if log_x else "linear", **at)
    fig.update_layout(height=height + 250 * (rows - 1))
    return fig, cells


def training_curves(rows: list[dict], keys: Sequence[str], at_step: int | None = None, log_x: bool = False
                    ) -> go.Figure:
    """One panel per metric key, against step (log-scaled with `log_x`: early phase changes get room); keys
    missing from the log are skipped; `at_step` marks a step (the snapshot a step slider shows; step 0 at 1 on a
    log axis) on every panel."""
    keys = [k for k in keys if any(k in r for r in rows)]
    fig, cells = metric_panels(keys, log_x, height=320)
    for key, at in zip(keys, cells, strict=True):
        points = [(r["step"], r[key]) for r in rows if key in r]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=key), **at)
        if at_step is not None and points:
            values = [p[1] for p in points]
            vertical_marker(fig, max(at_step, 1), "", (min(values), max(values)), **at)
    fig.update_layout(title="training", showlegend=False, **LAYOUT)
    return fig


def compare_curves(series: dict[str, list[dict]], keys: Sequence[str], log_x: bool = False) -> go.Figure:
    """Several runs' training logs overlaid: one panel per metric key, one colour per run (the same in every
    panel); keys no run logged are skipped."""
    keys = [k for k in keys if any(k in r for rows in series.values() for r in rows)]
    fig, cells = metric_panels(keys, log_x, height=380)
    palette = pio.templates["plotly_white"].layout.colorway
    for i, (key, at) in enumerate(zip(keys, cells, strict=True)):
        for j, (label, rows) in enumerate(series.items()):
            points = [(r["step"], r[key]) for r in rows if key in r]
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=label,
                                     legendgroup=label, showlegend=i == 0, mode="lines",
                                     line={"color": palette[j % len(palette)]}), **at)
    fig.update_layout(title="training", legend={"orientation": "h", "y": -0.25}, **LAYOUT)
    return fig


def score_over_training(table: pd.DataFrame, score: str, at_step: int | None = None, log_x: bool = False
                        ) -> go.Figure:
    """One line per head of a head score against training step, from `hooks.over_training(path, head_scores)`;
    `at_step` marks a step."""
    fig = go.Figure()
    for (layer, head), rows in table.groupby(["layer", "head"]):
        fig.add_trace(go.Scatter(x=rows["step"], y=rows[score], mode="lines+markers", name=f"L{layer}H{head}",
                                 marker={"size": 4}))
    if at_step is not None and len(table):
        vertical_marker(fig, max(at_step, 1), "", (table[score].min(), table[score].max()))
    fig.update_layout(title=f"{score.replace('_', ' ')} score by head over training", xaxis_title="step",
                      xaxis_type="log" if log_x else "linear", yaxis_title=score, height=360, **LAYOUT)
    return fig
