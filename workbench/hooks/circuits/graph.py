"""The circuit graph: writers (the input, each head, each MLP) feed readers (each head's q, k and v input, each
MLP's input, the logits) through the residual stream, one edge per (writer, reader) pair that the order of
layers allows. A circuit is a set of kept edges; every other edge carries the corrupted run's value of its
writer (MIB's convention), so the empty circuit reproduces the corrupted run and the full one the clean run.

    >>> graph = edge_attribution(model, clean, corrupted, metric)  # doctest: +SKIP
    >>> curve = faithfulness_curve(model, clean, corrupted, metric, graph)  # faithfulness by edge fraction
    >>> area_scores(curve)  # {"cpr": …, "cmd": …}

Our models give each head's q, k and v input a hook point of its own (`set_use_split_qkv_input`); a TL bridge
whose attention cannot split them gets one reader per layer's attention (read before its norm).
We write the intervention here rather than use TL 4.3's edge tools: those score edges but cannot run a circuit
of kept edges at fractional strength, which faithfulness curves, ACDC and path patching all need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from workbench.config import ConfigError
from workbench.device import device_of
from workbench.hooks.circuits.patching import Metric, check_metric, check_pair, has_attn_or_mlp

# Edge fractions at which MIB draws the faithfulness curve.
FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class Ports:
    """Where a model's writers put their output and its readers take their input, as hook points."""

    writers: list[str]  # "input", "L0H1", "MLP0", …
    readers: list[str]  # "L1H3.q", "MLP0", "logits", … ("L1.attn" when heads share one input)
    valid: Bool[Tensor, "writer reader"]  # which edges the order of layers allows
    writer_hooks: list[tuple[str, str, list[int], nn.Module | None]]  # (hook, kind, writer indices, attn module)
    reader_hooks: list[tuple[str, list[int]]]  # (hook, reader indices: one per head for split inputs)
    split_qkv: bool


def _block_parts(model: nn.Module, layer: int) -> tuple[nn.Module | None, bool]:
    block = model.blocks[layer]
    # a block left out (Mamba) would let its output carry the clean run past every cut edge
    if not hasattr(block, "hook_resid_pre") or not has_attn_or_mlp(block):
        raise ConfigError(f"circuit graph: block {layer} ({type(block).__name__}) has no attention or MLP to "
                          "draw edges to (Mamba and looped blocks are not supported)")
    return getattr(block, "attn", None), getattr(block, "mlp", None) is not None


def ports(model: nn.Module, split_qkv: bool | None = None) -> Ports:
    """The graph of `model`. `split_qkv` (default: whenever the model offers `set_use_split_qkv_input`) gives
    each head three readers (q, k, v); otherwise a layer's heads share one reader."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if split_qkv is None:
        split_qkv = _offers_split_qkv(model)
    writers, w_order = ["input"], [0]
    readers, r_order = [], []
    writer_hooks = [("blocks.0.hook_resid_pre", "resid", [0], None)]
    reader_hooks = []
    for layer in range(n_layers):
        attn, has_mlp = _block_parts(model, layer)
        if attn is not None:
            first = len(readers)
            if split_qkv:
                for channel in "qkv":
                    readers += [f"L{layer}H{h}.{channel}" for h in range(n_heads)]
                    reader_hooks.append((f"blocks.{layer}.attn.hook_{channel}_input",
                                         list(range(len(readers) - n_heads, len(readers)))))
            else:
                readers.append(f"L{layer}.attn")
                reader_hooks.append((f"blocks.{layer}.ln1.hook_in", [first]))
            r_order += [2 * layer + 1] * (len(readers) - first)
            writer_hooks.append((f"blocks.{layer}.attn.hook_z", "z", list(range(len(writers), len(writers) + n_heads)),
                                 attn))
            writers += [f"L{layer}H{h}" for h in range(n_heads)]
            w_order += [2 * layer + 1] * n_heads
        if has_mlp:
            readers.append(f"MLP{layer}")
            r_order.append(2 * layer + 2)
            reader_hooks.append((f"blocks.{layer}.hook_mlp_in" if split_qkv else f"blocks.{layer}.ln2.hook_in",
                                 [len(readers) - 1]))
            writer_hooks.append((f"blocks.{layer}.hook_mlp_out", "resid", [len(writers)], None))
            writers.append(f"MLP{layer}")
            w_order.append(2 * layer + 2)
    readers.append("logits")
    r_order.append(2 * n_layers + 1)
    reader_hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", [len(readers) - 1]))
    missing = [name for name, *_ in writer_hooks + reader_hooks if name not in model.hook_dict]
    if missing:
        raise ConfigError(f"circuit graph: the model has no hook point {missing[0]!r}"
                          + ("" if split_qkv else " (without split q/k/v inputs a layer's attention is read at "
                                                  "ln1.hook_in, as on a TL bridge)"))
    valid = torch.tensor(w_order)[:, None] < torch.tensor(r_order)[None, :]
    return Ports(writers, readers, valid, writer_hooks, reader_hooks, split_qkv)


def _offers_split_qkv(model: nn.Module) -> bool:
    try:
        with _switches(model, split_qkv=True):
            return True
    except NotImplementedError:  # a bridge whose attention computes q, k, v from one input
        return False


@contextmanager
def _switches(model: nn.Module, split_qkv: bool) -> Iterator[None]:
    """TL's switches that give each head's input (and each MLP's) a hook point, restored afterwards."""
    if not split_qkv:
        yield
        return
    saved = (model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in)
    try:
        model.set_use_split_qkv_input(True)
        model.set_use_hook_mlp_in(True)
        yield
    finally:
        model.set_use_split_qkv_input(saved[0])
        model.set_use_hook_mlp_in(saved[1])


def node_of(reader: str) -> str:
    """The node a reader belongs to: "L1H3.k" → "L1H3"; "MLP0", "logits" and "L1.attn" are their own."""
    return reader.rsplit(".", 1)[0] if reader[-2:] in (".q", ".k", ".v") else reader


@dataclass
class CircuitGraph:
    """Scored edges of a model's circuit graph: `scores[w, r]` estimates m(edge w→r corrupted) − m(clean run)
    (negative for an edge the metric needs); nan where no edge exists. ACDC also records which edges it `kept`."""

    writers: list[str]
    readers: list[str]
    scores: Float[Tensor, "writer reader"]
    method: str
    clean_metric: float
    corrupted_metric: float
    kept: Bool[Tensor, "writer reader"] | None = None
    info: dict = field(default_factory=dict)

    @property
    def valid(self) -> Bool[Tensor, "writer reader"]:
        return ~self.scores.isnan()

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def edges(self) -> pd.DataFrame:
        """One row per edge, the most important (largest |score|) first."""
        w, r = self.valid.nonzero(as_tuple=True)
        frame = pd.DataFrame({"writer": [self.writers[i] for i in w.tolist()],
                              "reader": [self.readers[i] for i in r.tolist()],
                              "score": self.scores[w, r].tolist()})
        if self.kept is not None:
            frame["kept"] = self.kept[w, r].tolist()
        return frame.reindex(frame["score"].abs().sort_values(ascending=False, kind="stable").index
                             ).reset_index(drop=True)

    def top(self, k: int) -> Bool[Tensor, "writer reader"]:
        """The `k` edges with the largest |score|, as a mask."""
        if not 0 <= k <= self.n_edges:
            raise ConfigError(f"top: k={k} must be between 0 and the graph's {self.n_edges} edges")
        flat = self.scores.abs().nan_to_num(nan=-1.0).flatten()
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[order] = True
        return mask.view_as(self.scores)

    def node_scores(self) -> pd.Series:
        """Node-level attribution: each writer's edges summed (its whole output corrupted, to first order)."""
        return pd.Series(self.scores.nan_to_num(0.0).sum(1).numpy(), index=self.writers)

    def component(self, reader: str) -> str:
        return node_of(reader)


# --- running a circuit ---
@dataclass
class CircuitRun:
    """A clean/corrupted pair prepared for running circuits: the corrupted run's writer outputs are cached once,
    then `metric(keep)` runs the clean input with every edge outside `keep` carrying its corrupted value."""

    model: nn.Module
    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    metric_fn: Metric
    ports: Ports
    corrupted_outputs: Float[Tensor, "batch pos writer d_model"] = None
    clean_metric: float = math.nan
    corrupted_metric: float = math.nan

    @classmethod
    def prepare(cls, model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                split_qkv: bool | None = None) -> CircuitRun:
        check_pair(clean, corrupted)
        device = device_of(model)
        run = cls(model, clean.to(device), corrupted.to(device), metric, ports(model, split_qkv))
        with torch.no_grad():
            logits, run.corrupted_outputs = run.writer_outputs(run.corrupted)
            run.corrupted_metric = check_metric(metric, logits)
            run.clean_metric = check_metric(metric, model(run.clean))
        return run

    @property
    def gap(self) -> float:
        return self.clean_metric - self.corrupted_metric

    def _writer_hooks(self, outputs: Tensor) -> list:
        def store(indices: list[int], kind: str, attn: nn.Module | None) -> Callable:
            def hook(act: Tensor, hook) -> None:
                value = torch.einsum("bphd,hdm->bphm", act, attn.W_O) if kind == "z" else act[:, :, None]
                outputs[:, :, indices] = value.detach()
            return hook
        return [(name, store(idx, kind, attn)) for name, kind, idx, attn in self.ports.writer_hooks]

    def writer_outputs(self, tokens: Tensor) -> tuple[Tensor, Float[Tensor, "batch pos writer d_model"]]:
        batch, pos = tokens.shape
        dtype = next(self.model.parameters()).dtype
        outputs = torch.zeros(batch, pos, len(self.ports.writers), self.model.cfg.d_model, device=tokens.device,
                              dtype=dtype)
        with _switches(self.model, self.ports.split_qkv):
            logits = self.model.run_with_hooks(tokens, fwd_hooks=self._writer_hooks(outputs))
        return logits, outputs

    @torch.no_grad()
    def logits(self, keep: Float[Tensor, "writer reader"]) -> Float[Tensor, "batch pos d_vocab"]:
        """The clean run with edge w→r carrying (1 − keep[w, r]) of the corrupted change of its writer's output
        (keep is a 0/1 mask for a circuit; fractions interpolate, which finite differences use)."""
        ablate = (1 - keep.to(self.corrupted_outputs)) * self.ports.valid.to(self.corrupted_outputs)
        current = self.corrupted_outputs.clone()

        def patch(indices: list[int]) -> Callable:
            weights = ablate[:, indices]  # [writer, readers of this hook]

            def hook(act: Tensor, hook) -> Tensor:
                delta = torch.einsum("bpwd,wr->bprd", current - self.corrupted_outputs, weights)
                return act - (delta if act.dim() == 4 else delta[:, :, 0])
            return hook

        hooks = self._writer_hooks(current) + [(name, patch(idx)) for name, idx in self.ports.reader_hooks]
        with _switches(self.model, self.ports.split_qkv):
            return self.model.run_with_hooks(self.clean, fwd_hooks=hooks)

    def metric(self, keep: Tensor) -> float:
        return float(self.metric_fn(self.logits(keep)))

    def faithfulness(self, keep: Tensor) -> float:
        """f = (m(C) − m(∅)) / (m(N) − m(∅)): 1 when the circuit recovers the clean metric, 0 at the corrupted."""
        return (self.metric(keep) - self.corrupted_metric) / self.gap

    def check_gap(self, who: str) -> None:
        if abs(self.gap) < 1e-9:
            raise ConfigError(f"{who}: the metric is the same on the clean and corrupted runs "
                              f"({self.clean_metric:.4g}); nothing to recover")


def _prepared(model, clean, corrupted, metric, who: str, split_qkv: bool | None = None) -> CircuitRun:
    run = CircuitRun.prepare(model, clean, corrupted, metric, split_qkv)
    run.check_gap(who)
    return run


# --- faithfulness curves and MIB's scores ---
def check_fraction(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{name}={value}: a fraction of edges must be in (0, 1]")


def faithfulness_curve(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric, graph: CircuitGraph,
                       fractions: tuple[float, ...] = FRACTIONS, run: CircuitRun | None = None) -> pd.DataFrame:
    """Faithfulness of the circuit made of the top-scored edges at each fraction of all edges (rounded down, at
    least one edge), starting from the empty circuit (0 edges). Columns: fraction, edges, faithfulness."""
    for f in fractions:
        check_fraction("fractions", f)
    run = run or _prepared(model, clean, corrupted, metric, "faithfulness_curve")
    counts = sorted({0, *(max(1, math.floor(f * graph.n_edges + 1e-9)) for f in fractions)})
    rows = [{"fraction": k / graph.n_edges, "edges": k, "faithfulness": run.faithfulness(graph.top(k))}
            for k in counts]
    return pd.DataFrame(rows)


def area_scores(curve: pd.DataFrame) -> dict[str, float]:
    """MIB's two scores over the edge fraction in [0, 1]: CPR = ∫ f (higher is better) and CMD = ∫ |1 − f|
    (lower is better); the trapezoid rule between the measured points."""
    x, f = curve["fraction"].to_numpy(), curve["faithfulness"].to_numpy()
    return {"cpr": float(np.trapezoid(f, x)), "cmd": float(np.trapezoid(np.abs(1 - f), x))}


def faithfulness_at(curve: pd.DataFrame, max_fraction: float) -> float:
    """The faithfulness of the largest measured circuit with at most `max_fraction` of the edges."""
    within = curve[curve["fraction"] <= max_fraction + 1e-12]
    return float(within["faithfulness"].iloc[-1])


def smallest_circuit(run: CircuitRun, graph: CircuitGraph, target: float = 0.8) -> int | None:
    """The fewest top-scored edges whose circuit reaches faithfulness `target`, by bisection (faithfulness
    grows with the edges kept, though not always monotonically, so this is the first size bisection finds);
    None if even the full graph falls short."""
    if run.faithfulness(graph.top(graph.n_edges)) < target:
        return None
    low, high = 0, graph.n_edges  # f(low) < target ≤ f(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if run.faithfulness(graph.top(mid)) >= target else (mid, high)
    return high
