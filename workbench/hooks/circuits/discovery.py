"""Circuit discovery on the circuit graph: edge attribution patching (EAP), EAP with integrated gradients
(EAP-IG), ACDC-style pruning, path patching, and weight-based composition scores.

Scores follow the noising convention of Syed et al. and Hanna et al.: an edge's score estimates
m(that edge carries the corrupted value) − m(clean run), so the edges a metric needs score below zero and
discovery ranks edges by |score|. TL 4.3's `attribution_patch` scores the same edges in the denoising
convention: ours on (corrupted, clean) equals TL's on (clean, corrupted).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens.utilities.matrix import composition_scores as tl_composition_scores

from workbench.config import ConfigError
from workbench.hooks.circuits.graph import (
    CircuitGraph,
    CircuitRun,
    _prepared,
    _switches,
    area_scores,
    faithfulness_at,
    faithfulness_curve,
    node_of,
    smallest_circuit,
)
from workbench.hooks.circuits.patching import Metric, _folded


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def edge_attribution(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric, ig_steps: int = 1,
                     split_qkv: bool | None = None) -> CircuitGraph:
    """Score every edge w→r by (out_w(corrupted) − out_w(clean)) · ∂m/∂in_r, summed over batch and positions.

    `ig_steps=1` is EAP (Syed et al.): the gradient on the clean run. `ig_steps=n>1` is EAP-IG (Hanna et al.
    2024): the gradient averaged over n inputs on the straight line from the corrupted input embedding to the
    clean one (α = 1/n, 2/n, …, 1), which corrects EAP where the metric is not linear in the edge."""
    if not isinstance(ig_steps, int) or ig_steps < 1:
        raise ConfigError(f"ig_steps={ig_steps!r}: the number of integration steps must be an integer ≥ 1")
    with _eval(model):
        run = CircuitRun.prepare(model, clean, corrupted, metric, split_qkv)
        with torch.no_grad():
            _, clean_outputs = run.writer_outputs(run.clean)
        delta = run.corrupted_outputs - clean_outputs  # [batch pos writer d_model]
        grads = delta.new_zeros(*delta.shape[:2], len(run.ports.readers), delta.shape[-1])
        start, end = run.corrupted_outputs[:, :, 0], clean_outputs[:, :, 0]  # the input writer: embeddings
        for k in range(1, ig_steps + 1):
            grads += _reader_gradients(run, start + (k / ig_steps) * (end - start)) / ig_steps
    scores = torch.einsum("bpwd,bprd->wr", delta, grads)  # the metric averages over the batch itself
    scores = scores.detach().cpu().masked_fill(~run.ports.valid, float("nan"))
    return CircuitGraph(run.ports.writers, run.ports.readers, scores, "EAP" if ig_steps == 1 else "EAP-IG",
                        run.clean_metric, run.corrupted_metric, info={"ig_steps": ig_steps})


def _reader_gradients(run: CircuitRun, embeddings: Tensor) -> Tensor:
    """∂m/∂(each reader's input) [batch pos reader d_model] on the clean run with the input embeddings given."""
    seen: list[tuple[Tensor, list[int]]] = []

    def set_input(act, hook):
        return embeddings.detach().clone().requires_grad_(True)  # a leaf: gradients flow even if weights are frozen

    def keep(indices):
        def hook(act, hook):
            act = act.clone()  # q, k and v may arrive as one tensor: each reader needs its own gradient
            seen.append((act, indices))
            return act
        return hook

    hooks = [("blocks.0.hook_resid_pre", set_input)] + [(n, keep(idx)) for n, idx in run.ports.reader_hooks]
    with torch.enable_grad(), _switches(run.model, run.ports.split_qkv):
        value = run.metric_fn(run.model.run_with_hooks(run.clean, fwd_hooks=hooks))
        grads = torch.autograd.grad(value, [act for act, _ in seen], allow_unused=True)
    out = embeddings.new_zeros(*embeddings.shape[:2], len(run.ports.readers), embeddings.shape[-1])
    for (_, indices), grad in zip(seen, grads, strict=True):
        if grad is not None:
            out[:, :, indices] = grad if grad.dim() == 4 else grad[:, :, None]
    return out


def _owners(graph_writers: list[str], reader: str) -> list[int]:
    """The writers that make up a reader's node: "L1H3.k" → L1H3, "L1.attn" → layer 1's heads, "logits" → none."""
    if reader == "logits":
        return []
    if reader.endswith(".attn"):
        return [i for i, w in enumerate(graph_writers) if w.startswith(reader[:-5] + "H")]
    return [graph_writers.index(reader.split(".")[0])]


@torch.no_grad()
def acdc(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric, threshold: float = 0.01,
         split_qkv: bool | None = None, progress: bool = True) -> CircuitGraph:
    """ACDC (Conmy et al. 2023): from the full graph, visit readers from the logits down and, for each incoming
    edge, corrupt it; keep it corrupted (pruned) when the metric falls by less than `threshold` of the
    clean−corrupted gap, else restore it. Edges into nodes that no longer feed anything are pruned unvisited.
    The graph's scores are the change each test measured (0 for unvisited edges); `kept` is the circuit."""
    if not 0 <= threshold <= 1:
        raise ConfigError(f"threshold={threshold}: ACDC's threshold is a fraction of the clean−corrupted metric "
                          "gap, in [0, 1]")
    with _eval(model):
        run = _prepared(model, clean, corrupted, metric, "acdc", split_qkv)
        valid = run.ports.valid
        keep, scores = valid.clone(), torch.full(valid.shape, float("nan"))
        current = run.metric(keep)
        bar = tqdm(total=int(valid.sum()), desc="ACDC", disable=not progress, leave=False)
        for r in reversed(range(len(run.ports.readers))):
            incoming = valid[:, r].nonzero().flatten().tolist()
            owners = _owners(run.ports.writers, run.ports.readers[r])
            if owners and not keep[owners].any():  # this node feeds nothing kept: its inputs cannot matter
                keep[:, r], scores[incoming, r] = False, 0.0
                bar.update(len(incoming))
                continue
            for w in reversed(incoming):
                keep[w, r] = False
                value = run.metric(keep)
                scores[w, r] = value - current
                if (current - value) / run.gap < threshold:
                    current = value
                else:
                    keep[w, r] = True
                bar.update(1)
        bar.close()
    return CircuitGraph(run.ports.writers, run.ports.readers, scores, "ACDC", run.clean_metric,
                        run.corrupted_metric, kept=keep, info={"threshold": threshold})


METHODS = ("EAP", "EAP-IG", "ACDC")
MIN_GAP_SHARE = 0.1  # over training: below this share of the final model's gap, the behaviour has not formed yet


def discover(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric, method: str = "EAP-IG",
             ig_steps: int = 10, threshold: float = 0.01, progress: bool = False) -> CircuitGraph:
    """One of `METHODS` by name: EAP, EAP-IG with `ig_steps`, or ACDC at `threshold`."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r}; choose one of {', '.join(METHODS)}")
    if method == "ACDC":
        return acdc(model, clean, corrupted, metric, threshold, progress=progress)
    return edge_attribution(model, clean, corrupted, metric, ig_steps=ig_steps if method == "EAP-IG" else 1)


def discover_all(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                 methods: tuple[str, ...] = METHODS, ig_steps: int = 10, threshold: float = 0.01,
                 run: CircuitRun | None = None) -> tuple[dict[str, CircuitGraph], dict[str, pd.DataFrame]]:
    """Each of `methods`' scored graph and its faithfulness curve (on `run`, prepared once, if given)."""
    run = run or _prepared(model, clean, corrupted, metric, "discover_all")
    graphs = {m: discover(model, clean, corrupted, metric, m, ig_steps, threshold) for m in methods}
    curves = {m: faithfulness_curve(model, clean, corrupted, metric, g, run=run) for m, g in graphs.items()}
    return graphs, curves


def method_scores(run: CircuitRun, graphs: dict[str, CircuitGraph], curves: dict[str, pd.DataFrame],
                  max_fraction: float = 0.1, target: float = 0.8) -> dict[str, float]:
    """Each method's CPR, CMD, faithfulness within `max_fraction` of the edges and the edges it needs for `target`
    (NaN if even the full graph falls short), as `METHOD.name`; and `faithfulness_at_max_fraction`, the best
    method's."""
    scores = {}
    for method, curve in curves.items():
        area = area_scores(curve)
        needed = smallest_circuit(run, graphs[method], target)
        scores |= {f"{method}.cpr": area["cpr"], f"{method}.cmd": area["cmd"],
                   f"{method}.faithfulness_at_max_fraction": faithfulness_at(curve, max_fraction),
                   f"{method}.edges_for_{target}": math.nan if needed is None else needed}
    scores["faithfulness_at_max_fraction"] = max(scores[f"{m}.faithfulness_at_max_fraction"] for m in curves)
    return scores


def formed_gap(final: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric) -> float:
    """The gap a snapshot must reach for its behaviour to count as formed: `MIN_GAP_SHARE` of the final model's."""
    return MIN_GAP_SHARE * abs(CircuitRun.prepare(final, clean, corrupted, metric).gap)


def discovery_scores(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                     methods: tuple[str, ...] = METHODS, ig_steps: int = 10, threshold: float = 0.01,
                     max_fraction: float = 0.1, min_gap: float = 0.0) -> dict[str, float]:
    """The clean − corrupted `gap` and, if its size is at least `min_gap`, each method's `method_scores` on `model`:
    one row of a circuit's history when mapped over a run's snapshots (`hooks.over_training`). Below `min_gap`
    the behaviour has not formed and faithfulness, a ratio over that gap, means little."""
    run = CircuitRun.prepare(model, clean, corrupted, metric)
    if abs(run.gap) < max(min_gap, 1e-9):
        return {"gap": run.gap}
    graphs, curves = discover_all(model, clean, corrupted, metric, methods, ig_steps, threshold, run)
    n_edges = next(iter(graphs.values())).n_edges
    return {"gap": run.gap, "n_edges": n_edges} | method_scores(run, graphs, curves, max_fraction)


def _reader_columns(readers: list[str], name: str) -> list[int]:
    """A reader ("L1H3.k", "MLP0", "logits") or a head's three readers ("L1H3")."""
    columns = [i for i, r in enumerate(readers) if name in (r, node_of(r))]
    if not columns:
        raise ConfigError(f"receiver {name!r} is not in the circuit graph; readers: {', '.join(readers)}")
    return columns


@torch.no_grad()
def path_patching(model: nn.Module, clean: Tensor, corrupted: Tensor, metric: Metric,
                  senders: list[str] | None = None, receivers: list[str] | None = None,
                  split_qkv: bool | None = None) -> pd.DataFrame:
    """Path patching (Wang et al. 2023; Goldowsky-Dill et al.): for each sender and receiver, the fraction of
    the clean−corrupted metric gap lost when only the direct path sender → receiver carries the corrupted
    sender (everything else clean). A receiver is a reader ("L1H3.k") or a head ("L1H3": its q, k and v)."""
    with _eval(model):
        run = _prepared(model, clean, corrupted, metric, "path_patching", split_qkv)
        writers, readers, valid = run.ports.writers, run.ports.readers, run.ports.valid
        senders = senders or writers[1:]
        receivers = receivers or list(dict.fromkeys(map(node_of, readers)))  # each node once, in graph order
        unknown = [s for s in senders if s not in writers]
        if unknown:
            raise ConfigError(f"sender {unknown[0]!r} is not in the circuit graph; writers: {', '.join(writers)}")
        table = pd.DataFrame(math.nan, index=senders, columns=receivers)
        for receiver in receivers:
            columns = _reader_columns(readers, receiver)
            for sender in senders:
                w = writers.index(sender)
                if not valid[w, columns].any():
                    continue
                keep = valid.clone()
                keep[w, columns] = False
                table.loc[sender, receiver] = (run.clean_metric - run.metric(keep)) / run.gap
    return table


def composition_scores(model: nn.Module, kind: str = "k") -> pd.DataFrame:
    """Elhage et al.'s Q-, K- or V-composition between every head (rows) and every head of a later layer
    (columns): ‖W_OV¹ · M²‖_F / (‖W_OV¹‖_F ‖M²‖_F) with M² = W_QK (q), W_QKᵀ (k) or W_OV (v), on the weights
    with norms folded in (rotary and biases are outside W_QK, as in TL's `all_composition_scores`)."""
    if kind not in ("q", "k", "v"):
        raise ConfigError(f"composition_scores: kind={kind!r}; choose q, k or v")
    folded = _folded(model)
    right = {"q": folded.QK, "k": folded.QK.T, "v": folded.OV}[kind]
    scores = tl_composition_scores(folded.OV, right)  # [layer head layer head]
    n_layers, n_heads = scores.shape[:2]
    names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
    grid = scores.detach().reshape(n_layers * n_heads, n_layers * n_heads).cpu()
    later = torch.arange(n_layers).repeat_interleave(n_heads)
    grid = grid.masked_fill(later[:, None] >= later[None, :], float("nan"))
    return pd.DataFrame(grid.numpy(), index=names, columns=names)
