"""Structural probes (Hewitt & Manning 2019, "A Structural Probe for Finding Syntax in Word Representations";
AST-Probe, López et al. 2022).

Claim: a language model's residual stream embeds the parse tree of what it reads: a linear probe recovers each
token's depth, and a linear map B makes squared distances ‖B(h_i − h_j)‖² track distances in the tree. Shown on
Dyck-2 (`tasks/dyck.py`), where the tree is exact: a small LM predicts the type of every closing bracket; per
layer, a ridge probe for depth and a rank-64 distance probe, each beside the same probes on a never-trained model
and, for distance, beside |i − j| (the string distance).

"Depth" is the nesting depth (brackets still open after the token), as DESIGN calibrates it (ρ 0.989), not the
token's level in the distance probe's tree: there a close bracket is a leaf under its open one, two levels below
its nesting depth, so the two rank tokens differently (Spearman ρ 0.88 between them over 256 sampled strings).
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from pydantic import Field

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.icl import activations, residual_hooks
from workbench.hooks.probes import (
    distance_spearman,
    fit_distance_probe,
    pair_distances,
    ridge_predict,
    spearman,
    standardise,
)
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.dyck import CLOSES, NAMES, Dyck, DyckConfig, depths, tree_distances
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, training_curves

PAPER = "Hewitt & Manning 2019, A Structural Probe for Finding Syntax in Word Representations"


class StructuralProbeConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=256, n_ctx=49, d_vocab=5)
    task: DyckConfig = DyckConfig()
    train: TrainConfig = TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup_steps=100, eval_every=250)
    probe_sequences: int = Field(256, ge=4, description="strings the probes are fit on")
    eval_batch: int = Field(128, ge=4, description="held-out strings the probes are scored on")
    rank: int = Field(64, ge=1, description="the distance probe's rank")
    probe_steps: int = Field(300, ge=1, description="Adam steps fitting the distance probe")


class StructuralProbe(Experiment):
    name = "structural-probe"
    title = "Structural probes: the parse tree of Dyck-2 inside a small LM"
    paper = PAPER
    family = "probes"
    claim = ("Linear probes recover each bracket's depth and the tree distance between brackets from the residual "
             "stream, far better than from a random-init model or from string distance.")
    Config = StructuralProbeConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 8, "train.warmup_steps": 5, "train.eval_every": 10,
                  "probe_sequences": 8, "eval_batch": 8, "probe_steps": 5},
        "quick": {},
        "full": {"train.steps": 5000, "task.length": 96, "model.n_ctx": 97, "model.n_layers": 4},
    }
    criteria = [
        Criterion("the model predicts the type of every closing bracket (≥ 0.99)", "close_type_accuracy", ">=",
                  0.99, PAPER),
        Criterion("depth probe ρ ≥ 0.95", "depth_rho", ">=", 0.95, PAPER),
        Criterion("depth probe ≥ random-init control + 0.15", "depth_margin", ">=", 0.15, PAPER),
        Criterion("distance probe ρ ≥ 0.60", "distance_rho", ">=", 0.60, PAPER),
        Criterion("distance probe ≥ random-init control + 0.05", "distance_margin", ">=", 0.05, PAPER),
        Criterion("distance probe ≥ |i − j| + 0.15", "distance_over_string", ">=", 0.15, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: StructuralProbeConfig) -> Dyck:
        return Dyck(cfg.task)

    def strings(self, cfg: StructuralProbeConfig, n: int, seed: int):
        tokens = self.task(cfg).sample(n, torch.Generator().manual_seed(seed)).tokens
        return tokens, torch.stack([tree_distances(t) for t in tokens]).float()

    def data(self, cfg: StructuralProbeConfig):
        return self.memo("data", None, cfg, lambda: (self.strings(cfg, cfg.probe_sequences, cfg.eval_seed + 1),
                                                     self.strings(cfg, cfg.eval_batch, cfg.eval_seed)))

    @torch.no_grad()
    def close_type_accuracy(self, model, cfg: StructuralProbeConfig, tokens: torch.Tensor) -> float:
        """Where the next token closes a bracket: does the model rank the right closing type above the other?"""
        logits = model(tokens.to(device_of(model)))[:, :-1].cpu()
        nxt = tokens[:, 1:]
        closing = (nxt == CLOSES[0]) | (nxt == CLOSES[1])
        pick = logits[..., list(CLOSES)].argmax(-1)
        return float((torch.tensor(CLOSES)[pick] == nxt)[closing].float().mean())

    def probes(self, model, cfg: StructuralProbeConfig) -> list[dict]:
        return self.memo("probes", model, cfg, lambda: self._probes(model, cfg))

    def control_probes(self, cfg: StructuralProbeConfig) -> list[dict]:
        return self.memo("control probes", None, cfg, lambda: self._probes(self.control(cfg), cfg))

    @torch.no_grad()
    def _probes(self, model, cfg: StructuralProbeConfig) -> list[dict]:
        """Depth and distance ρ (Spearman, held out) per layer (−1: the embedding)."""
        (train, train_dist), (test, test_dist) = self.data(cfg)
        names = residual_hooks(model)
        acts = {"train": activations(model, train, names), "test": activations(model, test, names)}
        rows = []
        for layer, name in enumerate(names):
            a, b = acts["train"][name], acts["test"][name]
            flat_a, flat_b = standardise(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
            depth = ridge_predict(flat_a, depths(train).flatten().float(), flat_b)
            with torch.enable_grad():
                B = fit_distance_probe(flat_a.float().view_as(a), train_dist, cfg.rank, cfg.probe_steps)
            predicted = pair_distances(flat_b.float().view_as(b), B)
            rows.append({"layer": layer - 1, "depth_rho": spearman(depth, depths(test).flatten()),
                         "distance_rho": distance_spearman(predicted, test_dist), "B": B})
        return rows

    def evaluate(self, model, cfg: StructuralProbeConfig) -> dict[str, float]:
        (_, _), (test, test_dist) = self.data(cfg)
        positions = torch.arange(test.shape[1]).float()
        string = (positions[:, None] - positions[None, :]).abs().expand_as(test_dist)
        metrics = {"close_type_accuracy": self.close_type_accuracy(model, cfg, test),
                   "string_distance_rho": distance_spearman(string, test_dist)}
        for who, rows in (("", self.probes(model, cfg)), ("control_", self.control_probes(cfg))):
            for kind in ("depth", "distance"):
                best = max(rows, key=lambda r: r[f"{kind}_rho"])
                metrics[f"{who}{kind}_rho"] = best[f"{kind}_rho"]
                if not who:
                    metrics[f"{kind}_best_layer"] = float(best["layer"])
        metrics["depth_margin"] = metrics["depth_rho"] - metrics["control_depth_rho"]
        metrics["distance_margin"] = metrics["distance_rho"] - metrics["control_distance_rho"]
        metrics["distance_over_string"] = metrics["distance_rho"] - metrics["string_distance_rho"]
        return metrics

    def evaluate_during_training(self, model, cfg: StructuralProbeConfig) -> dict[str, float]:
        tokens = self.task(cfg).sample(64, torch.Generator().manual_seed(cfg.eval_seed)).tokens
        return {"close_type_accuracy": self.close_type_accuracy(model, cfg, tokens)}

    @torch.no_grad()
    def tree(self, model, cfg: StructuralProbeConfig, which: int = 0) -> go.Figure:
        """Held-out string `which`: its true tree beside the tree read off the best layer's distance probe."""
        best = max(self.probes(model, cfg), key=lambda r: r["distance_rho"])
        (train, _), (test, test_dist) = self.data(cfg)
        name = residual_hooks(model)[best["layer"] + 1]
        a, b = activations(model, train, [name])[name], activations(model, test[which: which + 1], [name])[name]
        _, flat_b = standardise(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
        predicted = pair_distances(flat_b.float().view_as(b), best["B"])[0]
        return tree_figure(test[which], test_dist[which], predicted, best["layer"])

    def figures(self, model, cfg: StructuralProbeConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {"rho_by_layer": rho_figure(self.probes(model, cfg), self.control_probes(cfg)),
                "tree": self.tree(model, cfg)}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "close_type_accuracy"])
        return figs


def rho_figure(rows: list[dict], control: list[dict]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=["depth (ridge probe)", "tree distance (rank-r probe)"],
                        shared_yaxes=True)
    for col, kind in enumerate(("depth", "distance"), start=1):
        for label, table, style in (("trained model", rows, {"color": "#1f77b4"}),
                                    ("random-init control", control, {"color": "#7f7f7f", "dash": "dot"})):
            fig.add_trace(go.Scatter(x=[r["layer"] for r in table], y=[r[f"{kind}_rho"] for r in table],
                                     mode="lines+markers", name=label, line=style, legendgroup=label,
                                     showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text="layer (−1: embedding)", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="Spearman ρ (held out)", row=1, col=1)
    fig.update_layout(title="structural probes by layer", height=380, legend={"orientation": "h", "y": -0.25},
                      **LAYOUT)
    return fig


def minimum_spanning_tree(distances: torch.Tensor) -> list[tuple[int, int]]:
    """Prim's algorithm on a full distance matrix: how H&M read a tree off a distance probe."""
    n = distances.shape[0]
    inside, edges = {0}, []
    while len(inside) < n:
        i, j = min(((i, j) for i in inside for j in range(n) if j not in inside),
                   key=lambda e: float(distances[e[0], e[1]]))
        inside.add(j)
        edges.append((i, j))
    return edges


def tree_figure(tokens: torch.Tensor, true: torch.Tensor, predicted: torch.Tensor, layer: int) -> go.Figure:
    """One string's tree: true edges as arcs above the brackets, the predicted tree (the minimum spanning tree of
    the probe's distances) below; an edge in both is drawn solid on both sides."""
    true_edges = {tuple(sorted(e)) for e in (true == 1).nonzero().tolist()}
    found = {tuple(sorted(e)) for e in minimum_spanning_tree(predicted)}
    fig = go.Figure()
    for edges, side, colour, name in ((true_edges, 1, "#1f77b4", "true tree"),
                                      (found, -1, "#ff7f0e", "probe's tree (MST)")):
        for k, (i, j) in enumerate(sorted(edges)):
            xs = torch.linspace(i, j, 20)
            ys = side * (0.3 + 0.12 * (j - i) ** 0.8) * (1 - ((xs - i) / max(j - i, 1) * 2 - 1) ** 2)
            dashed = side < 0 and (i, j) not in true_edges
            fig.add_trace(go.Scatter(x=xs.tolist(), y=ys.tolist(), mode="lines", legendgroup=name, name=name,
                                     showlegend=k == 0, line={"color": colour, "dash": "dot" if dashed else "solid"},
                                     hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=list(range(len(tokens))), y=[0] * len(tokens), mode="text",
                             text=[NAMES[t] for t in tokens.tolist()], textfont={"size": 13}, showlegend=False,
                             hoverinfo="skip"))
    agree = len(true_edges & found) / max(1, len(true_edges))
    fig.update_layout(title=f"one string's tree: true (above), layer-{layer} probe's (below)<br><sup>the probe's: "
                      f"spanning tree of its distances, solid where true · {agree:.0%} of true edges found</sup>",
                      height=420, xaxis={"visible": False},
                      yaxis={"visible": False}, legend={"orientation": "h", "y": -0.05}, **LAYOUT)
    return fig
