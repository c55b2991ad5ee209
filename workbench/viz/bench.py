"""Figures for `workbench bench` results (the dict `workbench.bench.run_bench` returns / writes).

Plotly only; nothing here imports streamlit. Each builder takes the result dict and returns a `go.Figure`.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.viz import LAYOUT


def _label(row: dict) -> str:
    return f"{row['config']} · {row['batch']}x{row['seq']}"


def _threshold(result: dict, metric: str, default: float) -> float:
    return next((t["threshold"] for t in result.get("targets", []) if t["metric"] == metric), default)


def train_ratios(result: dict) -> go.Figure:
    """ours/plain and bridge/plain step-time ratios per config × shape, with the ours/plain target dashed."""
    rows = result["train_step"]
    labels = [_label(r) for r in rows]
    fig = go.Figure()
    for key in ("ours/plain", "bridge/plain"):
        fig.add_trace(go.Bar(
            x=labels, y=[r["ratios"][key] for r in rows], name=key,
            text=[None if r["ratios"][key] is None else f"{r['ratios'][key]:.2f}" for r in rows],
            hovertemplate="%{x}<br>" + key + " %{y:.3f}<extra></extra>",
        ))
    target = _threshold(result, "ours/plain", 1.05)
    fig.add_hline(y=target, line_dash="dash", annotation_text=f"target ours/plain ≤ {target}")
    fig.update_layout(title="training step time relative to plain PyTorch (median)", barmode="group",
                      yaxis_title="× plain", height=380, **LAYOUT)
    return fig


def cache_costs(result: dict) -> go.Figure:
    """run_with_cache variants: time relative to a plain forward, and the bytes they cache."""
    cache = result["cache"]
    names = [v["variant"] for v in cache["variants"]]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["time / plain forward", "cache size (MB)"])
    fig.add_trace(go.Bar(x=names, y=[v["time_ratio"] for v in cache["variants"]], name="time ratio",
                         hovertemplate="%{x}<br>%{y:.3f} × forward<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[v["cache_bytes"] / 2**20 for v in cache["variants"]], name="cache MB",
                         text=[f"{v['names_cached']} names" for v in cache["variants"]],
                         hovertemplate="%{x}<br>%{y:.1f} MB, %{text}<extra></extra>"), row=1, col=2)
    target = _threshold(result, "time_ratio", 1.1)
    fig.add_hline(y=target, line_dash="dash", row=1, col=1, annotation_text=f"1-name target ≤ {target}")
    fig.update_layout(title=f"run_with_cache costs ({cache['config']}, {cache['batch']}x{cache['seq']})",
                      showlegend=False, height=380, **LAYOUT)
    return fig


def mfu(result: dict) -> go.Figure:
    """Model FLOPs utilisation of our model's training step against this machine's matmul peak."""
    rows = result["mfu"]["rows"]
    fig = go.Figure(go.Bar(
        x=[_label(r) for r in rows], y=[100 * r["mfu"] for r in rows],
        text=[f"{r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s" for r in rows],
        hovertemplate="%{x}<br>MFU %{y:.1f}%<br>%{text}<extra></extra>",
    ))
    peak = result["mfu"]["peak"]["peak_flops_per_s"] / 1e9
    fig.update_layout(title=f"MFU of a training step (peak {peak:.1f} GFLOP/s float32 matmul)",
                      yaxis_title="% of peak", height=380, **LAYOUT)
    return fig


def ratio_history(results: list[dict]) -> go.Figure:
    """ours/plain over successive bench results (oldest first), one line per config × shape."""
    series: dict[str, tuple[list[str], list[float]]] = {}
    for result in results:
        for row in result["train_step"]:
            xs, ys = series.setdefault(_label(row), ([], []))
            xs.append(result["timestamp"])
            ys.append(row["ratios"]["ours/plain"])
    fig = go.Figure([go.Scatter(x=xs, y=ys, mode="lines+markers", name=label) for label, (xs, ys) in series.items()])
    if results:
        target = _threshold(results[-1], "ours/plain", 1.05)
        fig.add_hline(y=target, line_dash="dash", annotation_text=f"target ≤ {target}")
    fig.update_layout(title="ours/plain over time", xaxis_title="run", yaxis_title="× plain", height=360, **LAYOUT)
    return fig
