"""Scaling-law figures: loss against model size or data on log-log axes, the fitted power law, the entropy
floor, and the residuals of the fit below."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.hooks.scaling import PowerLaw
from workbench.viz import LAYOUT


def scaling_law_figure(x, loss, fit: PowerLaw | None, floor: float, what: str, labels=None) -> go.Figure:
    """`x` (non-embedding parameters, or training tokens) against the loss, with L∞ + (x₀/x)^α and the floor.
    Residuals are of log L, the quantity fitted."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=x, y=loss, mode="markers", name="trained models", marker_size=9,
                             text=labels, hovertemplate="%{text}<br>%{x:.3s}: %{y:.4f} nats<extra></extra>"),
                  row=1, col=1)
    span = np.geomspace(x.min() / 1.5, x.max() * 3, 200)
    fig.add_trace(go.Scatter(x=span, y=np.full_like(span, floor), mode="lines", name=f"entropy floor {floor:.4f}",
                             line={"dash": "dot", "color": "gray"}), row=1, col=1)
    title = f"loss vs {what}"
    if fit is not None:
        fig.add_trace(go.Scatter(x=span, y=fit(span), mode="lines", name="L∞ + (x₀/x)^α", line_color="crimson"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=np.log(loss) - np.log(fit(x)), mode="markers", name="residual (log L)",
                                 marker_color="crimson", showlegend=False), row=2, col=1)
        fig.add_hline(y=0, line_color="gray", row=2, col=1)
        title += (f"<br><sup>fit: α {fit.alpha:.2f}, L∞ {fit.L_inf:.4f} (floor {fit.L_inf - floor:+.4f}), "
                  f"R² {fit.r2:.4f}</sup>")
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", title_text=what, row=2, col=1)
    fig.update_yaxes(type="log", title_text="held-out loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="residual", row=2, col=1)
    fig.update_layout(title=title, height=520, **LAYOUT)
    return fig
