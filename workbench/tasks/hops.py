"""Multi-hop lookup: a task whose difficulty is a number in the prompt (for adaptive computation time).

A prompt lists a random cyclic permutation f of `n_symbols` as pair tokens "a→f(a)", in shuffled order, then a
hop count h and a start symbol x; the answer, read at the last position, is f^h(x). Each hop is one lookup, so a
model that looks up once per iteration needs h iterations. f is one cycle, so no answer short-cuts to x.

    tokens  3→5  0→2  5→0  2→3  ·  hops:2  x:3        target at the last position: f(f(3)) = 0
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.config import Config
from workbench.tasks.base import Batch


class HopsConfig(Config):
    n_symbols: int = Field(8, ge=2, description="symbols in the permutation (chance = 1/n_symbols)")
    min_hops: int = Field(1, ge=1)
    max_hops: int = Field(4, ge=1)
    hops_start: int | None = Field(None, ge=1, description="curriculum: the most hops at step 0 (None: all)")
    hops_every: int = Field(500, ge=1, description="curriculum: one more hop allowed every this many steps")

    @model_validator(mode="after")
    def _check(self) -> HopsConfig:
        if self.min_hops > self.max_hops:
            raise ValueError(f"task.min_hops={self.min_hops} exceeds task.max_hops={self.max_hops}")
        if self.max_hops >= self.n_symbols:
            raise ValueError(f"task.max_hops={self.max_hops} must be below task.n_symbols={self.n_symbols}: "
                             "f^n is the identity on one cycle of n")
        return self

    @property
    def seq_len(self) -> int:
        return self.n_symbols + 2

    @property
    def d_vocab(self) -> int:
        return self.n_symbols**2 + self.max_hops + self.n_symbols  # pairs, hop counts, symbols


class PointerHops:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: HopsConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len
        self.hop_token = cfg.n_symbols**2 - 1  # hop count h is token hop_token + h
        self.symbol_token = cfg.n_symbols**2 + cfg.max_hops  # symbol s is token symbol_token + s

    def token_names(self) -> list[str]:
        n = self.cfg.n_symbols
        hops = [f"hops:{h}" for h in range(1, self.cfg.max_hops + 1)]
        return [f"{a}→{b}" for a in range(n) for b in range(n)] + hops + [f"x:{s}" for s in range(n)]

    def most_hops(self, step: int | None) -> int:
        c = self.cfg
        if step is None or c.hops_start is None:
            return c.max_hops
        return min(c.max_hops, max(c.min_hops, c.hops_start + step // c.hops_every))

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None,
               hops: int | None = None) -> Batch:
        """`hops` fixes every prompt's hop count (for scoring one difficulty); default: uniform up to the
        curriculum's current most."""
        c, n = self.cfg, self.cfg.n_symbols
        order = torch.rand(batch, n, generator=generator).argsort(-1)  # the cycle order[0] → order[1] → …
        f = torch.empty_like(order).scatter_(1, order, order.roll(-1, dims=1))
        if hops is None:
            h = torch.randint(c.min_hops, self.most_hops(step) + 1, (batch,), generator=generator)
        else:
            h = torch.full((batch,), hops)
        x = torch.randint(0, n, (batch,), generator=generator)
        y = x.clone()
        for k in range(1, c.max_hops + 1):
            y = torch.where(h >= k, f.gather(1, y[:, None]).squeeze(1), y)
        listed = torch.rand(batch, n, generator=generator).argsort(-1)  # the pairs' shuffled order
        tokens = torch.cat([listed * n + f.gather(1, listed), (self.hop_token + h)[:, None],
                            (self.symbol_token + x)[:, None]], dim=1)
        targets = torch.zeros_like(tokens)
        targets[:, -1] = self.symbol_token + y
        loss_mask = torch.zeros_like(tokens, dtype=torch.bool)
        loss_mask[:, -1] = True
        return Batch(tokens, targets, loss_mask, {"hops": h, "f": f, "x": x, "y": y})
