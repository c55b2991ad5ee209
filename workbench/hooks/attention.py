"""Attention-map hooks: capture patterns, score head types, measure entropy and sinks.

Works on any module with TransformerLens hook names (`blocks.{l}.attn.hook_pattern`, pattern
`[batch head q k]`) and `cfg.n_layers`: our `Transformer` and TL's `TransformerBridge` alike.

Head-type scores are "attention mass on the positions a head of that type would attend to",
averaged over the queries that have such a position. The target masks generalise TL's
`head_detector` detection patterns to a batch (TL builds them one sequence at a time with numpy);
`tests/unit/test_attention_hooks.py` checks they agree with TL's on single sequences.

Two induction scores, kept apart on purpose:
- `induction` is the standard stripe score (Olsson et al.; ARENA): on `BOS r r` with segment length
  L, the mean attention from each query of the second copy (q = L+1 … 2L) to the token after its first
  occurrence (k = q − L + 1). It needs the segment length, so `head_scores` reports it only when given
  `segment`. (ARENA's `pattern.diagonal(1 - L)` also averages in queries L−1 and L of the first copy.)
- `generalised_induction` averages over every query that has *any* earlier duplicate of its token,
  accidental repeats inside the random first copy included; it applies to any prompt.
TL's `detect_head(..., "induction")` differs from both: it divides the target mass by the mass of
*all* queries, those without any target included, so it equals `generalised_induction · n_t / n`
(n_t queries with a target out of n) and stays below ~0.5 on `BOS r r` even for a perfect head.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import NamedTuple

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def attention_layers(model) -> list[int]:
    """Layers with an attention pattern to read: our config says; a TL model has attention everywhere."""
    return list(getattr(model.cfg, "attention_layers", range(model.cfg.n_layers)))


@torch.no_grad()
def attention_patterns(
    model, tokens: Int[Tensor, "batch pos"], layers: list[int] | None = None
) -> dict[int, Float[Tensor, "batch head q k"]]:
    """Run once, caching only the patterns of `layers` (default: every layer with attention; the
    others are skipped with a warning that names them)."""
    with_attention = attention_layers(model)
    if layers is None:
        layers = with_attention
        skipped = sorted(set(range(model.cfg.n_layers)) - set(layers))
        if skipped:
            warnings.warn(f"attention: skipping layers {skipped}, which have no attention", stacklevel=2)
    for layer in layers:
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(f"layer {layer} out of range: the model has layers 0..{model.cfg.n_layers - 1}")
        if layer not in with_attention:
            raise ValueError(f"layer {layer} has no attention; layers with attention: {with_attention}")
        if getattr(model.cfg, "loops", 1) > 1:
            raise ValueError(f"looped model: read patterns per iteration from "
                             f"blocks.{layer}.loop.{{t}}.attn.hook_pattern with run_with_cache")
    names = [pattern_name(layer) for layer in layers]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {layer: cache[pattern_name(layer)].float() for layer in layers}


def stacked_patterns(model, tokens: Int[Tensor, "1 pos"]) -> tuple[list[int], Float[Tensor, "layer head q k"]]:
    """Every attention layer's pattern on one prompt, stacked (for the all-heads view), with the layers' indices."""
    patterns = attention_patterns(model, tokens)
    return list(patterns), torch.stack([pattern[0] for pattern in patterns.values()])


def repeat_start(tokens: Int[Tensor, " pos"]) -> int | None:
    """Where the second copy begins on a `BOS r r …` prompt (the shortest segment r of ≥2 tokens repeated at
    once after itself), or None when the prompt has no such repeat."""
    ids = tokens.tolist()
    for segment in range(2, (len(ids) - 1) // 2 + 1):
        if ids[1 : 1 + segment] == ids[1 + segment : 1 + 2 * segment]:
            return 1 + segment
    return None


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


def induction_stripe_targets(segment: Int[Tensor, " batch"], pos: int) -> Bool[Tensor, "batch q k"]:
    """On `BOS r r` with per-row segment length L: query q ∈ [L+1, 2L] targets key q − L + 1."""
    q = torch.arange(pos, device=segment.device)[None, :, None]
    k = torch.arange(pos, device=segment.device)[None, None, :]
    L = segment.reshape(-1, 1, 1)
    return (q >= L + 1) & (q <= 2 * L) & (k == q - L + 1)


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


def offset_profile(pattern: Float[Tensor, "batch head q k"], max_offset: int = 8) -> pd.DataFrame:
    """Mean attention each head pays to the key `offset` positions back (0: itself), over the queries that have
    one, for offsets 0…max_offset: one row per head. A previous-token head peaks at 1; a head that matches on the
    token two back, at 2."""
    offsets = range(min(max_offset, pattern.shape[-1] - 1) + 1)
    return pd.DataFrame({o: pattern.diagonal(-o, dim1=-2, dim2=-1).mean((0, 2)).cpu().numpy() for o in offsets},
                        index=pd.RangeIndex(pattern.shape[1], name="head")).rename_axis(columns="offset")


# Scores defined on any prompt; `induction` (the stripe score) needs the segment length as well.
SCORES = {
    "previous_token": previous_token_targets,
    "generalised_induction": induction_targets,
    "duplicate_token": duplicate_token_targets,
}


def head_scores(model, tokens: Int[Tensor, "batch pos"], layers: list[int] | None = None,
                segment: int | Int[Tensor, " batch"] | None = None) -> pd.DataFrame:
    """One row per (layer, head): previous_token, generalised_induction, duplicate_token, sink, entropy,
    and, when `tokens` are `BOS r r` with known segment length(s) `segment`, the standard `induction`."""
    patterns = attention_patterns(model, tokens, layers)
    # Real-valued inputs have no token identities: only the positional score applies.
    scores = ["previous_token"] if tokens.is_floating_point() else SCORES
    targets = {name: SCORES[name](tokens) for name in scores}
    if segment is not None:
        segment = torch.as_tensor(segment, device=tokens.device).expand(len(tokens))
        targets["induction"] = induction_stripe_targets(segment, tokens.shape[1])
    rows = []
    for layer, pattern in patterns.items():
        scores = {name: targeted_score(pattern, t) for name, t in targets.items()}
        scores["sink"], scores["entropy"] = sink_score(pattern), entropy(pattern)
        for head in range(pattern.shape[1]):
            rows.append({"layer": layer, "head": head, **{k: float(v[head]) for k, v in scores.items()}})
    return pd.DataFrame(rows)


class HeadScore(NamedTuple):
    layer: int
    head: int
    value: float


def best_head(scores: pd.DataFrame, score: str, layers: int | Iterable[int]) -> HeadScore:
    """The (layer, head) among `layers` with the highest `score`, and that score; the first head, scoring nan,
    when no head has one (e.g. an induction score on a prompt that repeats no token)."""
    layers = [layers] if isinstance(layers, int) else list(layers)
    rows = scores[scores.layer.isin(layers)]
    if rows.empty:
        raise ValueError(f"no scores for layers {layers}; layers present: {sorted(scores.layer.unique())}")
    best = rows.iloc[0] if rows[score].isna().all() else rows.loc[rows[score].idxmax()]
    return HeadScore(int(best["layer"]), int(best["head"]), float(best[score]))
