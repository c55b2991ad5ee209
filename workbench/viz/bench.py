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


def _height(bars: int) -> int:
    """Horizontal bars: labels stay readable whatever their number (ticks never crowd)."""
    return 140 + 34 * bars


def train_ratios(result: dict) -> go.Figure:
    """ours/plain and bridge/plain step-time ratios per config × shape (horizontal: the labels are long), with
    the ours/plain target dashed."""
    rows = result["train_step"]
    labels = [_label(r) for r in rows]
    fig = go.Figure()
    for key in ("ours/plain", "bridge/plain"):
        values = [r["ratios"][key] for r in rows]
        fig.add_trace(go.Bar(y=labels, x=values, name=key, orientation="h",  # values on hover: labels at the
                             hovertemplate="%{y}<br>" + key + " %{x:.3f}<extra></extra>"))  # target line would clash
    target = _threshold(result, "ours/plain", 1.05)
    fig.add_vline(x=target, line_dash="dash")  # named in the title: an annotation would sit on a bar
    fig.update_layout(title=f"training step time relative to plain PyTorch (median; dashed: target ours/plain ≤ "
                            f"{target})", barmode="group",
                      xaxis_title="× plain", yaxis_autorange="reversed", height=_height(2 * len(rows)),
                      legend={"orientation": "h", "y": -0.15}, **LAYOUT)
    return fig


def cache_costs(result: dict) -> go.Figure:
    """run_with_cache variants: time relative to a plain forward, and the bytes they cache."""
    cache = result["cache"]
    names = [v["variant"] for v in cache["variants"]]
    target = _threshold(result, "time_ratio", 1.1)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"time / plain forward (dashed: 1-name target ≤ {target})",
                                                        "cache size (MB)"],
                        shared_yaxes=True, horizontal_spacing=0.08)
    fig.add_trace(go.Bar(y=names, x=[v["time_ratio"] for v in cache["variants"]], orientation="h",
                         hovertemplate="%{y}<br>%{x:.3f} × forward<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(y=names, x=[v["cache_bytes"] / 2**20 for v in cache["variants"]], orientation="h",
                         customdata=[v["names_cached"] for v in cache["variants"]],
                         hovertemplate="%{y}<br>%{x:.1f} MB, %{customdata} names<extra></extra>"), row=1, col=2)
    fig.add_vline(x=target, line_dash="dash", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"run_with_cache costs ({cache['config']}, {cache['batch']}x{cache['seq']})",
                      showlegend=False, height=_height(len(names)), **LAYOUT)
    return fig


def mfu(result: dict) -> go.Figure:
    """Model FLOPs utilisation of our model's training step against this machine's matmul peak."""
    rows = result["mfu"]["rows"]
    fig = go.Figure(go.Bar(
        y=[_label(r) for r in rows], x=[100 * r["mfu"] for r in rows], orientation="h",
        text=[f"{100 * r['mfu']:.1f}% · {r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s" for r in rows],
        textposition="outside", cliponaxis=False, hovertemplate="%{y}<br>MFU %{x:.1f}%<extra></extra>",
    ))
    peak = result["mfu"]["peak"]["peak_flops_per_s"] / 1e9
    fig.update_layout(title=f"MFU of a training step (peak {peak:.1f} GFLOP/s float32 matmul)",
                      xaxis_title="% of peak", yaxis_autorange="reversed", height=_height(len(rows)),
                      margin={"l": 50, "r": 160, "t": 50, "b": 40}, template=LAYOUT["template"])
    return fig


def mamba_scan(result: dict) -> go.Figure:
    """Training-step time of one Mamba layer (sequential and parallel scan) and one attention layer by length."""
    rows = result["mamba_scan"]["rows"]
    fig = go.Figure([go.Scatter(x=[r["seq"] for r in rows], y=[r["seconds"][name]["median"] * 1e3 for r in rows],
                                mode="lines+markers", name=name,
                                hovertemplate="length %{x}<br>%{y:.1f} ms<extra>" + name + "</extra>")
                     for name in ("mamba sequential", "mamba parallel", "attention")])
    m = result["mamba_scan"]
    fig.update_layout(title=f"Mamba scan: training step by length ({m['config']}, batch {m['batch']})",
                      xaxis_title="sequence length", yaxis_title="ms per step (median)", xaxis_type="log",
                      yaxis_type="log", height=380, **LAYOUT)
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
