"""Which units stand for which labelled feature — codes, SAE latents or neurons, measured the same way.

A unit "fires" on a token: a code when it is among the chosen k, a latent or neuron when its activation
passes a threshold. Against token labels (a TokFSM state, a token id; −1 = unlabelled), a unit's
precision is the share of its firings on its best label, and its recall the share of that label's tokens
it fires on. The neuron baseline (Tamkin et al.) gives each neuron its best threshold: the highest
precision any neuron reaches at a recall at least the code's.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.config import ConfigError


def code_label_counts(codes: Int[Tensor, "N k"], labels: Int[Tensor, " N"], n_codes: int, n_labels: int
                      ) -> Int[Tensor, "code label_plus_1"]:
    """How often each code fires on each label; the last column counts firings on unlabelled tokens."""
    label = torch.where(labels < 0, n_labels, labels)[:, None].expand_as(codes)
    flat = codes.flatten() * (n_labels + 1) + label.flatten()
    return torch.bincount(flat, minlength=n_codes * (n_labels + 1)).view(n_codes, n_labels + 1)


def code_table(codes: Int[Tensor, "N k"], labels: Int[Tensor, " N"], n_codes: int, n_labels: int) -> pd.DataFrame:
    """One row per code that fired: its frequency, best label, precision and recall for that label."""
    counts = code_label_counts(codes, labels, n_codes, n_labels).double()
    fires = counts.sum(1)
    per_label = torch.bincount(labels[labels >= 0], minlength=n_labels).double()
    hits, best = counts[:, :n_labels].max(1)
    table = pd.DataFrame({"code": range(n_codes), "fires": fires.long().tolist(),
                          "frequency": (fires / len(labels)).tolist(), "label": best.tolist(),
                          "precision": (hits / fires.clamp(min=1)).tolist(),
                          "recall": (hits / per_label[best].clamp(min=1)).tolist()})
    return table[table.fires > 0].reset_index(drop=True)


def unit_ranks(activations: Float[Tensor, "N F"]) -> Int[Tensor, "N F"]:
    """Each token's place in each unit's ranking of the tokens by activation, highest first (0 = top)."""
    order = activations.argsort(0, descending=True)
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order)).unsqueeze(1).expand_as(order))


def best_unit_precision(activations: Float[Tensor, "N F"], labels: Int[Tensor, " N"], label: int,
                        recall: float, ranks: Int[Tensor, "N F"] | None = None) -> tuple[float, int]:
    """The highest precision for `label` that any unit (neuron, latent) reaches at recall ≥ `recall`, firing
    above its best threshold; and which unit. `ranks` (`unit_ranks(activations)`) may be passed in when asking
    about many labels."""
    positive = labels == label
    total = int(positive.sum())
    if total == 0:
        raise ConfigError(f"label {label} never occurs in these tokens")
    need = max(1, math.ceil(recall * total - 1e-9))
    if ranks is None:
        ranks = unit_ranks(activations)
    # The best threshold keeps a unit's top tokens down to one of its positives: the j-th (j ≥ need), at rank r_j,
    # gives precision j / (r_j + 1). Not monotone in j: a run of positives below the need-th one can raise it.
    positive_ranks = ranks[positive].sort(dim=0).values  # [P F]
    kept = torch.arange(1, total + 1, dtype=torch.double)[:, None]
    precision = (kept / (positive_ranks + 1).double())[need - 1:].amax(0)  # [F]
    best = int(precision.argmax())
    return float(precision[best]), best


def matched_unit_baseline(table: pd.DataFrame, activations: Tensor, labels: Tensor) -> pd.DataFrame:
    """For each row of a code table: the best unit's precision at the code's recall, beside the code's."""
    ranks = unit_ranks(activations)  # one ranking of the tokens serves every row
    rows = [best_unit_precision(activations, labels, int(row.label), float(row.recall), ranks)
            for row in table.itertuples()]
    return table.assign(unit_precision=[p for p, _ in rows], unit=[u for _, u in rows])


def search_codes(codes: Int[Tensor, "batch pos k"], token_text: list[list[str]], pattern: str,
                 context: int = 4) -> pd.DataFrame:
    """Codes ranked by precision for a regex over the `context` tokens ending where each code fires (tokens
    written as text, e.g. TokFSM digits): for each code, the share of its firings whose context matches."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"search: the regex {pattern!r} does not compile: {e}") from None
    matches = torch.zeros(codes.shape[:2], dtype=torch.long)
    for b, row in enumerate(token_text):
        for p in range(len(row)):
            matches[b, p] = bool(regex.search("".join(row[max(0, p - context + 1): p + 1])))
    flat_codes, flat_match = codes.flatten(0, 1), matches.flatten()[:, None].expand(-1, codes.shape[-1])
    n = int(codes.max()) + 1
    fires = torch.bincount(flat_codes.flatten(), minlength=n).double()
    hits = torch.bincount(flat_codes.flatten(), weights=flat_match.flatten().double(), minlength=n)
    table = pd.DataFrame({"code": range(n), "fires": fires.long().tolist(), "matches": hits.long().tolist(),
                          "precision": (hits / fires.clamp(min=1)).tolist(),
                          "recall": (hits / max(1.0, float(matches.sum()))).tolist()})
    table = table[table.matches > 0].sort_values(["precision", "matches"], ascending=False)
    return table.reset_index(drop=True)
