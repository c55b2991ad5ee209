"""Grading a discovered circuit against a known one (a compiled model's): edge precision and recall at a
threshold, and ROC AUC over all thresholds, as InterpBench reports them."""

from __future__ import annotations

import torch
from jaxtyping import Bool
from torch import Tensor

from workbench.config import ConfigError
from workbench.hooks.circuits.graph import CircuitGraph


def edge_mask(graph: CircuitGraph, edges: list[tuple[str, str]]) -> Bool[Tensor, "writer reader"]:
    """A set of (writer, reader) edges as a mask over the graph; an edge the graph lacks is an error."""
    mask = torch.zeros(len(graph.writers), len(graph.readers), dtype=torch.bool)
    for writer, reader in edges:
        if writer not in graph.writers or reader not in graph.readers:
            raise ConfigError(f"edge {writer} → {reader} is not in the circuit graph")
        mask[graph.writers.index(writer), graph.readers.index(reader)] = True
    if bool((mask & ~graph.valid).any()):
        raise ConfigError("edge_mask: an edge goes backwards through the layers")
    return mask


def found_edges(graph: CircuitGraph, threshold: float) -> Bool[Tensor, "writer reader"]:
    """The method's circuit: ACDC's kept edges; for attribution, edges whose |score| is at least `threshold` of
    the clean−corrupted metric gap (the same fraction ACDC's threshold is of)."""
    if graph.kept is not None:
        return graph.kept & graph.valid
    gap = abs(graph.clean_metric - graph.corrupted_metric)
    return graph.valid & (graph.scores.abs().nan_to_num(0.0) >= threshold * gap)


def roc_auc(scores: Tensor, labels: Bool[Tensor, " n"]) -> float:
    """Area under the ROC curve: the chance a random true edge outscores a random other one (ties count half)."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().sum() + 0.5 * (pos[:, None] == neg[None, :]).float().sum()
    return float(greater / (len(pos) * len(neg)))


def grade(graph: CircuitGraph, true: Bool[Tensor, "writer reader"], threshold: float = 0.01) -> dict[str, float]:
    """Precision and recall of the found circuit (`found_edges` at `threshold`) against `true`, and the ROC AUC
    of |score| as a detector of true edges over every valid edge."""
    found = found_edges(graph, threshold)
    hits = int((found & true).sum())
    valid = graph.valid
    return {"precision": hits / int(found.sum()) if found.any() else 0.0,
            "recall": hits / int(true.sum()) if true.any() else float("nan"),
            "auc": roc_auc(graph.scores.abs().nan_to_num(0.0)[valid], true[valid]),
            "found": int(found.sum()), "true": int(true.sum())}
