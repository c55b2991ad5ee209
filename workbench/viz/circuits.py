"""Figures for the circuits family: patching heatmaps and direct logit attribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots
from torch import Tensor

from workbench.viz import LAYOUT, vertical_marker


def patching_heatmap(grid: Tensor, axes: tuple[str, str], title: str = "activation patching",
                     columns: Sequence[str] | None = None, metric: str = "metric",
                     rows: Sequence[str] | None = None) -> go.Figure:
    """A `[rows cols]` patching result (e.g. `[layer pos]` or `[layer head]`) on a diverging scale centred at 0;
    `columns` and `rows` label the axes (default: indices). Column labels that repeat (a prompt's tokens) are
    prefixed by their index, as a repeated category would merge columns."""
    grid = grid.detach().float().cpu()
    if grid.dim() != 2:
        raise ValueError(f"patching_heatmap: expected a 2-d grid, got shape {tuple(grid.shape)}")
    x = [str(c) for c in columns] if columns is not None else [str(i) for i in range(grid.shape[1])]
    y = [str(r) for r in rows] if rows is not None else [str(i) for i in range(grid.shape[0])]
    if len(x) != grid.shape[1]:
        raise ValueError(f"patching_heatmap: {len(x)} column labels for {grid.shape[1]} columns")
    if len(y) != grid.shape[0] or len(set(y)) < len(y):
        raise ValueError(f"patching_heatmap: rows must be {grid.shape[0]} distinct labels, got {y}")
    if len(set(x)) < len(x):
        x = [f"{i} {c}" for i, c in enumerate(x)]
    bound = float(grid.abs().max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=grid.tolist(), x=x, y=y, colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound, colorbar={"title": metric},
        hovertemplate=f"{axes[0]} %{{y}}<br>{axes[1]} %{{x}}<br>{metric} %{{z:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axes[1], yaxis_title=axes[0], yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category", **LAYOUT)
    return fig


def logit_attribution_bars(attribution: pd.Series, title: str = "direct logit attribution") -> go.Figure:
    """One bar per component (head, MLP, embedding, bias) of a `direct_logit_attribution` result."""
    colors = ["#d62728" if v < 0 else "#1f77b4" for v in attribution.values]
    fig = go.Figure(go.Bar(x=list(attribution.index), y=attribution.values.tolist(), marker_color=colors))
    fig.update_layout(title=title, xaxis_title="component", yaxis_title="logit difference written", **LAYOUT)
    return fig


def logit_lens_figure(lens: pd.Series, title: str = "logit lens") -> go.Figure:
    """A `logit_lens` result: the target's logit read after each layer (the last point is the model's own)."""
    fig = go.Figure(go.Scatter(x=list(lens.index), y=lens.values.tolist(), mode="lines+markers"))
    fig.update_layout(title=title, xaxis_title="residual stream after", yaxis_title="logit of the token",
                      height=340, **LAYOUT)
    return fig


CHANNEL_COLORS = {"q": "#1f77b4", "k": "#d62728", "v": "#2ca02c", "direct": "#7f7f7f"}


def _node_xy(node: str, n_heads: int) -> tuple[float, float]:
    """Layers left to right (input, then each layer's heads and its MLP, then the logits); heads stacked."""
    if node == "input":
        return 0.0, (n_heads - 1) / 2
    if node == "logits":
        return 1e9, (n_heads - 1) / 2  # placed after the last layer by the caller
    if node.startswith("MLP"):
        return 2 * int(node[3:]) + 2, (n_heads - 1) / 2
    layer, _, head = node[1:].partition("H")
    if node.endswith(".attn"):  # a bridge layer's shared attention input
        return 2 * int(node[1:].split(".")[0]) + 1, (n_heads - 1) / 2
    return 2 * int(layer) + 1, float(head)


def circuit_graph_figure(graph, edges: Sequence[tuple[str, str]] | None = None, title: str | None = None,
                         n_heads: int | None = None) -> go.Figure:
    """The circuit as a layered graph: nodes are the input, heads, MLPs and logits; each kept edge is a line
    whose width is its |score| and whose colour says which input of a head it feeds (q, k, v) or "direct"."""
    table = graph.edges()
    if edges is not None:
        wanted = set(edges)
        table = table[[(w, r) in wanted for w, r in zip(table["writer"], table["reader"], strict=True)]]
    n_heads, position = _layout(graph, n_heads)
    widest = float(table["score"].abs().max()) if len(table) else 1.0
    fig = go.Figure()
    for _, row in table.iterrows():
        channel = _channel(row["reader"])
        fig.add_trace(go.Scatter(
            **_edge_path(position, row["writer"], graph.component(row["reader"]), channel), mode="lines",
            line={"width": 1 + 9 * abs(row["score"]) / (widest or 1), "color": CHANNEL_COLORS[channel],
                  "shape": "spline"},
            opacity=0.75, showlegend=False, hoverinfo="text",
            text=f"{row['writer']} → {row['reader']}<br>score {row['score']:.4g}"))
    for channel, color in CHANNEL_COLORS.items():  # legend entries
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": color, "width": 4},
                                 name=channel if channel == "direct" else f"into {channel}"))
    _draw_nodes(fig, graph, position, zip(table["writer"], table["reader"], strict=True))
    kept = f"{len(table)} of {graph.n_edges} edges"
    fig.update_layout(title=title or f"{graph.method} circuit ({kept})", height=160 + 70 * n_heads,
                      xaxis={"visible": False}, yaxis={"visible": False, "range": [n_heads - 0.3, -0.7]}, **LAYOUT)
    return fig


def _layout(graph, n_heads: int | None) -> tuple[int, dict[str, tuple[float, float]]]:
    n_heads = n_heads or 1 + max((int(w.split("H")[1]) for w in graph.writers if w.startswith("L") and "H" in w),
                                 default=0)
    last = max(_node_xy(w, n_heads)[0] for w in graph.writers) + 1
    position = {}
    for node in [*graph.writers, *(graph.component(r) for r in graph.readers)]:
        x, y = _node_xy(node, n_heads)
        position[node] = (last if node == "logits" else x, y)
    return n_heads, position


def _channel(reader: str) -> str:
    return reader[-1] if reader[-2:] in (".q", ".k", ".v") else "direct"


def _edge_path(position: dict, writer: str, target: str, channel: str) -> dict:
    (x0, y0), (x1, y1) = position[writer], position[target]
    y1 += {"q": -0.08, "k": 0.0, "v": 0.08}.get(channel, 0.0)  # a head's three inputs enter side by side
    return {"x": [x0, (x0 + x1) / 2, x1], "y": [y0, (y0 + y1) / 2 + 0.15 * (x1 - x0 > 2), y1]}


def _draw_nodes(fig: go.Figure, graph, position: dict, edges) -> None:
    used = {n for w, r in edges for n in (w, graph.component(r))}
    nodes = [n for n in position if n in used or n in ("input", "logits")]
    fig.add_trace(go.Scatter(
        x=[position[n][0] for n in nodes], y=[position[n][1] for n in nodes], mode="markers", text=nodes,
        marker={"size": 16, "color": "white", "line": {"width": 2, "color": "#333"}},
        hoverinfo="text", showlegend=False))
    for n in nodes:  # labels as annotations: their backing keeps them readable where thick edges pass
        fig.add_annotation(x=position[n][0], y=position[n][1], text=n, showarrow=False, yshift=17,
                           bgcolor="rgba(255, 255, 255, 0.85)", borderpad=1, font={"size": 11})


GRADE_COLORS = {"found and true": "#2ca02c", "found only": "#ff7f0e", "missed": "#d62728"}


def circuit_comparison_figure(graph, found: Tensor, true: Tensor, title: str | None = None) -> go.Figure:
    """A found circuit against the true one on the same layered graph: edges found and true (green), found only
    (orange), true but missed (red, dashed); hover shows each edge's reader and score."""
    n_heads, position = _layout(graph, None)
    fig, drawn = go.Figure(), []
    for kind, mask in (("found and true", found & true), ("found only", found & ~true), ("missed", true & ~found)):
        for i, (w, r) in enumerate(mask.nonzero().tolist()):
            writer, reader = graph.writers[w], graph.readers[r]
            drawn.append((writer, reader))
            fig.add_trace(go.Scatter(
                **_edge_path(position, writer, graph.component(reader), _channel(reader)), mode="lines",
                line={"width": 4, "color": GRADE_COLORS[kind], "shape": "spline",
                      "dash": "dash" if kind == "missed" else "solid"},
                opacity=0.8, name=kind, legendgroup=kind, showlegend=i == 0, hoverinfo="text",
                text=f"{writer} → {reader} ({kind})<br>score {float(graph.scores[w, r]):.4g}"))
    _draw_nodes(fig, graph, position, drawn)
    counts = {kind: int(mask.sum()) for kind, mask in (("found", found), ("true", true), ("both", found & true))}
    fig.update_layout(title=title or f"{graph.method}: {counts['both']} of {counts['true']} true edges found, "
                      f"{counts['found'] - counts['both']} extra", height=200 + 70 * n_heads,
                      xaxis={"visible": False}, yaxis={"visible": False, "range": [n_heads - 0.3, -0.7]},
                      legend={"orientation": "h", "y": -0.1}, **LAYOUT)
    return fig


def faithfulness_figure(curves: dict[str, pd.DataFrame], scores: dict[str, dict] | None = None,
                        mark_fraction: float | None = None) -> go.Figure:
    """Faithfulness against the number of edges kept, one line per method (CPR and CMD in the legend)."""
    fig = go.Figure()
    for method, curve in curves.items():
        label = method
        if scores and method in scores:
            label += f" (CPR {scores[method]['cpr']:.2f}, CMD {scores[method]['cmd']:.2f})"
        shown = curve[curve["edges"] > 0]
        fig.add_trace(go.Scatter(x=shown["edges"], y=shown["faithfulness"], mode="lines+markers", name=label,
                                 customdata=shown["fraction"],
                                 hovertemplate="%{x} edges (%{customdata:.1%})<br>faithfulness %{y:.3f}"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="#999")
    total = max((int(c["edges"].max()) for c in curves.values()), default=1)
    if mark_fraction is not None:
        vertical_marker(fig, max(1.0, mark_fraction * total), f"{mark_fraction:.0%} of edges")
    fig.update_xaxes(range=[-0.05, math.log10(total) + 0.05])
    fig.update_layout(title="faithfulness vs edges kept", xaxis_title="edges kept (log scale)", xaxis_type="log",
                      yaxis_title="faithfulness (0 corrupted, 1 clean)", legend={"x": 0.01, "y": 0.99}, **LAYOUT)
    return fig


def circuit_over_training_figure(table: pd.DataFrame, max_fraction: float, target: float = 0.8) -> go.Figure:
    """Discovery at each snapshot of training (rows of `discovery_scores` with a `step`): each method's
    faithfulness within `max_fraction` of the edges and the edges it needs for `target`; and, where the table has
    them (`InductionCircuit.circuit_over_training`), the share of the gap each layer-0 head's key paths carry."""
    found = table[table["step"] > 0].dropna(subset=["faithfulness_at_max_fraction"])  # step 0: no log position
    methods = [c.removesuffix(".faithfulness_at_max_fraction") for c in table.columns
               if c.endswith(".faithfulness_at_max_fraction")]
    keys = [c for c in table.columns if c.endswith(".key_paths")]  # InductionCircuit's: which heads the keys read
    fig = make_subplots(rows=3 if keys else 2, cols=1, shared_xaxes=True, vertical_spacing=0.07, subplot_titles=[
        f"faithfulness of the top {max_fraction:.0%} of edges", f"edges needed for faithfulness {target}",
        *(["gap share through later heads' keys (path patching)"] if keys else [])])
    for i, method in enumerate(methods):
        color = {"color": qualitative.Plotly[i % len(qualitative.Plotly)]}
        fig.add_trace(go.Scatter(x=found["step"], y=found[f"{method}.faithfulness_at_max_fraction"], name=method,
                                 mode="lines+markers", line=color, legendgroup=method), row=1, col=1)
        fig.add_trace(go.Scatter(x=found["step"], y=found[f"{method}.edges_for_{target}"], name=method,
                                 mode="lines+markers", line=color, legendgroup=method, showlegend=False), row=2, col=1)
    fig.add_hline(y=target, line_dash="dot", line_color="#999", row=1, col=1)
    if len(found):
        fig.add_hline(y=max_fraction * found["n_edges"].max(), line_dash="dot", line_color="#999", row=2, col=1,
                      annotation_text=f"{max_fraction:.0%} of edges", annotation_position="bottom right")
    for i, column in enumerate(keys):
        fig.add_trace(go.Scatter(x=found["step"], y=found[column], name=column.split(".")[0], mode="lines+markers",
                                 line={"dash": "dash", "color": qualitative.Dark2[i % len(qualitative.Dark2)]}),
                      row=3, col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="training step (log scale)", row=3 if keys else 2, col=1)
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=1)
    fig.update_layout(title="discovery at each snapshot of training", height=760 if keys else 540, **LAYOUT)
    return fig
