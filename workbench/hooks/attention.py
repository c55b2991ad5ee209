"""Attention-map hooks: capture patterns, score head types, measure entropy and sinks.

Works on any module with TransformerLens hook names (`blocks.{l}.attn.hook_pattern`, pattern
`[batch head q k]`) and `cfg.n_layers`: our `Transformer` and TL's `TransformerBridge` alike.

Head-type scores are "attention mass on the positions a head of that type would attend to",
averaged over the queries that have such a position. The target masks generalise TL's
`head_detector` detection patterns to a batch (TL builds them one sequence at a time with numpy);
`tests/unit/test_attention_hooks.py` checks they agree with TL's on single sequences.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


@torch.no_grad()
def attention_patterns(
    model, tokens: Int[Tensor, "batch pos"], layers: list[int] | None = None
) -> dict[int, Float[Tensor, "batch head q k"]]:
    """Run once, caching only the patterns of `layers` (all by default)."""
    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    for layer in layers:
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(f"layer {layer} out of range: the model has layers 0..{model.cfg.n_layers - 1}")
    names = [pattern_name(layer) for layer in layers]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {layer: cache[pattern_name(layer)].float() for layer in layers}


def previous_token_targets(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch q k"]:
    """k = q − 1."""
    pos = tokens.shape[1]
    return torch.eye(pos, dtype=torch.bool, device=tokens.device).roll(-1, dims=1).tril(-1).expand(len(tokens), -1, -1)


def duplicate_token_targets(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch q k"]:
    """Earlier positions holding the same token as the query."""
    same = tokens[:, :, None] == tokens[:, None, :]
    return same & torch.ones_like(same[0]).tril(-1)


def induction_targets(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch q k"]:
    """Positions right after an earlier occurrence of the query's token (k − 1 duplicates q, k ≤ q)."""
    dup = duplicate_token_targets(tokens)
    shifted = torch.zeros_like(dup)
    shifted[:, :, 1:] = dup[:, :, :-1]
    return shifted & torch.ones_like(dup[0]).tril()


def targeted_score(
    pattern: Float[Tensor, "batch head q k"], targets: Bool[Tensor, "batch q k"]
) -> Float[Tensor, " head"]:
    """Mean attention mass on target keys, over queries that have at least one target."""
    mass = (pattern * targets[:, None]).sum(-1)  # [batch head q]
    has_target = targets.any(-1)[:, None].expand_as(mass)
    return (mass * has_target).sum((0, 2)) / has_target.sum((0, 2)).clamp(min=1)


def sink_score(pattern: Float[Tensor, "batch head q k"]) -> Float[Tensor, " head"]:
    """Mean attention to position 0 (BOS, the usual attention sink), excluding query 0."""
    return pattern[:, :, 1:, 0].mean((0, 2))


def entropy(pattern: Float[Tensor, "batch head q k"]) -> Float[Tensor, " head"]:
    """Mean entropy (nats) of each query's attention distribution."""
    p = pattern.clamp(min=1e-12)
    return -(pattern * p.log()).sum(-1).mean((0, 2))


SCORES = {
    "previous_token": previous_token_targets,
    "induction": induction_targets,
    "duplicate_token": duplicate_token_targets,
}


def head_scores(model, tokens: Int[Tensor, "batch pos"], layers: list[int] | None = None) -> pd.DataFrame:
    """One row per (layer, head): previous_token, induction, duplicate_token, sink, entropy."""
    patterns = attention_patterns(model, tokens, layers)
    targets = {name: fn(tokens) for name, fn in SCORES.items()}
    rows = []
    for layer, pattern in patterns.items():
        scores = {name: targeted_score(pattern, t) for name, t in targets.items()}
        scores["sink"], scores["entropy"] = sink_score(pattern), entropy(pattern)
        for head in range(pattern.shape[1]):
            rows.append({"layer": layer, "head": head, **{k: float(v[head]) for k, v in scores.items()}})
    return pd.DataFrame(rows)


def best_head(scores: pd.DataFrame, score: str, layer: int) -> tuple[int, float]:
    """The head of `layer` with the highest `score`, and that score."""
    rows = scores[scores.layer == layer]
    if rows.empty:
        raise ValueError(f"no scores for layer {layer}; layers present: {sorted(scores.layer.unique())}")
    best = rows.loc[rows[score].idxmax()]
    return int(best["head"]), float(best[score])
