"""Order sensitivity: how far a model's output after a set of items moves when the items are reordered, with
and without set-based prompting (McIlroy et al. 2024, "Set-Based Prompting"). With it, the members see the
shared prefix but not each other and share position indices (`tasks.base.set_prompt`), so every order gives the
same output up to float rounding; without it, the same tokens in another order are another prompt.
"""

from __future__ import annotations

import itertools

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.device import device_of
from workbench.tasks.base import set_prompt


def arrange(prefix: Int[Tensor, "batch p"], members: list[Int[Tensor, "batch m"]], suffix: Int[Tensor, "batch s"],
            order: tuple[int, ...]) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Tokens `prefix, members in `order`, suffix` and their segment ids (0 shared, 1… the members as placed)."""
    parts = [prefix, *(members[i] for i in order), suffix]
    ids = [0, *range(1, len(members) + 1), 0]
    segments = torch.cat([torch.full_like(part, s) for part, s in zip(parts, ids, strict=True)], 1)
    return torch.cat(parts, 1), segments


@torch.no_grad()
def suffix_logits(model: nn.Module, prefix: Tensor, members: list[Tensor], suffix: Tensor,
                  order: tuple[int, ...], set_mask: bool = True) -> Float[Tensor, "batch s d_vocab"]:
    """The logits at the suffix positions with the members in `order`, as a set prompt or a plain one."""
    device = device_of(model)
    tokens, segments = arrange(prefix, members, suffix, order)
    kwargs = {}
    if set_mask:
        visible, positions = set_prompt(segments)
        kwargs = {"attention_mask": visible.to(device), "positions": positions.to(device)}
    return model(tokens.to(device), **kwargs)[:, -suffix.shape[1]:]


@torch.no_grad()
def order_sensitivity(model: nn.Module, prefix: Tensor, members: list[Tensor], suffix: Tensor,
                      set_mask: bool = True) -> pd.DataFrame:
    """For every order of the members, how far the logits at the suffix positions move from the given order:
    the largest |Δ logit| over the batch, and the mean KL(given order ‖ this order) of the next-token
    distributions. One row per order; the given order (0, 1, …) first, at 0."""
    base = suffix_logits(model, prefix, members, suffix, tuple(range(len(members))), set_mask)
    rows = []
    for order in itertools.permutations(range(len(members))):
        other = suffix_logits(model, prefix, members, suffix, order, set_mask)
        kl = F.kl_div(other.log_softmax(-1), base.log_softmax(-1), log_target=True, reduction="none").sum(-1)
        rows.append({"order": " ".join(map(str, order)), "max_logit_change": float((other - base).abs().max()),
                     "mean_kl": float(kl.mean())})
    return pd.DataFrame(rows)
