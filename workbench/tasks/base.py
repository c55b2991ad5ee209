"""What every task returns: a `Batch` of tokens, next-token targets and a loss mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from jaxtyping import Bool, Int
from torch import Tensor


@dataclass
class Batch:
    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]  # target at position i is the token the model should emit there
    loss_mask: Bool[Tensor, "batch pos"]  # which positions count in the loss
    meta: dict[str, Tensor] = field(default_factory=dict)  # ground truth: segment lengths, states, …


class Task(Protocol):
    """A seeded, vectorised data generator. Same generator state → same batch."""

    d_vocab: int
    seq_len: int

    def sample(self, batch: int, generator: torch.Generator) -> Batch: ...


def next_token_batch(tokens: Int[Tensor, "batch pos"], loss_mask: Tensor, **meta: Tensor) -> Batch:
    """Language-model framing: position i predicts token i+1; the last position has no target."""
    targets = torch.roll(tokens, -1, dims=1)
    mask = loss_mask.clone()
    mask[:, -1] = False
    return Batch(tokens, targets, mask, dict(meta))


def parse_token_ids(text: str | bytes, d_vocab: int, n_ctx: int) -> Int[Tensor, "1 pos"]:
    """A typed prompt of token ids ("0 5 17 5", commas allowed) → `[1 pos]`, with one-line errors."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("prompt: not valid UTF-8 text") from None
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError("prompt: empty; type token ids separated by spaces, e.g. 0 5 17 5")
    bad = [p for p in parts if not p.lstrip("-").isdigit()]
    if bad:
        raise ValueError(f"prompt: {bad[0]!r} is not a token id; use integers in [0, {d_vocab - 1}]")
    ids = [int(p) for p in parts]
    out = [i for i in ids if not 0 <= i < d_vocab]
    if out:
        raise ValueError(f"prompt: token id {out[0]} outside the vocabulary [0, {d_vocab - 1}]")
    if len(ids) > n_ctx:
        raise ValueError(f"prompt: {len(ids)} tokens exceed the model's n_ctx={n_ctx}")
    return torch.tensor([ids])
