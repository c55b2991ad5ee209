"""Figures for the circuits family: patching heatmaps and direct logit attribution."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from torch import Tensor

from workbench.viz import LAYOUT


def patching_heatmap(grid: Tensor, axes: tuple[str, str], title: str = "activation patching",
                     columns: Sequence[str] | None = None, metric: str = "metric") -> go.Figure:
    """A `[rows cols]` patching result (e.g. `[layer pos]` or `[layer head]`) on a diverging scale centred at 0;
    `columns` labels the second axis (e.g. the prompt's tokens; each is prefixed by its index, as a repeated
    category would merge columns)."""
    grid = grid.detach().float().cpu()
    if grid.dim() != 2:
        raise ValueError(f"patching_heatmap: expected a 2-d grid, got shape {tuple(grid.shape)}")
    x = list(columns) if columns is not None else list(range(grid.shape[1]))
    if len(x) != grid.shape[1]:
        raise ValueError(f"patching_heatmap: {len(x)} column labels for {grid.shape[1]} columns")
    bound = float(grid.abs().max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=grid.tolist(), x=[f"{i} {c}" if columns is not None else str(c) for i, c in enumerate(x)],  # unique
        y=[str(i) for i in range(grid.shape[0])], colorscale="RdBu", zmid=0,
        zmin=-bound, zmax=bound, colorbar={"title": metric},
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
