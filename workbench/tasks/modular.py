"""Modular addition `a + b mod p` (Power et al. 2022; Nanda et al. 2023, "Progress measures for grokking").

Each sequence is `a b =` with `=` the token id p; the answer c = (a + b) mod p is predicted at the last
position only. The p² pairs are split once, by `split_seed`, into a fixed training set (`train_fraction` of
them) and the held-out rest (`test_set`). Training is usually full batch: `sample(batch, …)` with `batch` ≥ the
training-set size returns the whole training set, in its fixed order, so one step is one epoch; a smaller
`batch` draws that many distinct training pairs (a minibatch) from the generator.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from pydantic import Field
from torch import Tensor

from workbench.config import Config
from workbench.tasks.base import Batch


class ModularConfig(Config):
    p: int = Field(97, ge=2, description="the modulus; tokens 0..p-1 are numbers, token p is '='")
    train_fraction: float = Field(0.4, gt=0, lt=1, description="share of the p² pairs in the training set")
    split_seed: int = Field(0, ge=0, description="seeds the train/test split (fixed for the whole run)")

    @property
    def seq_len(self) -> int:
        return 3

    @property
    def train_size(self) -> int:
        return int(self.train_fraction * self.p**2)


class ModularAddition:
    loss, causal = "cross_entropy", False  # the answer is never an input, so no mask can leak it

    def __init__(self, cfg: ModularConfig):
        self.cfg, self.seq_len, self.d_vocab = cfg, cfg.seq_len, cfg.p + 1
        order = torch.randperm(cfg.p**2, generator=torch.Generator().manual_seed(cfg.split_seed))
        self.train_pairs = order[: cfg.train_size]  # pair index a·p + b
        self.test_pairs = order[cfg.train_size:]

    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.cfg.p)] + ["="]

    def batch(self, pairs: Int[Tensor, " batch"]) -> Batch:
        """Sequences `a b =` for pair indices a·p + b; the target c at the last position only."""
        p = self.cfg.p
        a, b = pairs // p, pairs % p
        tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # [batch 3]
        targets = torch.zeros_like(tokens)
        targets[:, -1] = (a + b) % p
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask, {"a": a, "b": b})

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        """The full training set when `batch` ≥ its size; otherwise `batch` distinct training pairs."""
        if batch >= len(self.train_pairs):
            return self.batch(self.train_pairs)
        chosen = torch.randperm(len(self.train_pairs), generator=generator)[:batch]
        return self.batch(self.train_pairs[chosen])

    def train_set(self) -> Batch:
        return self.batch(self.train_pairs)

    def test_set(self) -> Batch:
        """Every pair held out of training."""
        return self.batch(self.test_pairs)

    def all_pairs(self) -> Batch:
        """All p² pairs in order a·p + b (row a, column b), for Fourier analysis over (a, b)."""
        return self.batch(torch.arange(self.cfg.p**2))
