"""Selective copying (Gu & Dao 2023, "Mamba"): `n_copy` data tokens sit at random places among filler in a context
of `context` tokens; after it come `n_copy` markers, and at the i-th marker the model must output the i-th data
token. Where the data sits varies per sequence, so a fixed (LTI) convolution cannot pick it out: the model has to
select by content — what Mamba's input-dependent step sizes are for.

    a _ _ d _ _ _ c _ _ b _ … _ | ? ? ? ?   →   targets at the markers: a d c b
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.config import Config
from workbench.tasks.base import Batch

FILLER, MARKER = 0, 1
FIRST_DATA = 2


class SelectiveCopyConfig(Config):
    context: int = Field(64, ge=2, description="tokens before the markers (data and filler)")
    n_copy: int = Field(4, ge=1, description="data tokens to copy")
    n_symbols: int = Field(8, ge=2, description="distinct data tokens")

    @model_validator(mode="after")
    def _check(self) -> SelectiveCopyConfig:
        if self.n_copy > self.context:
            raise ValueError(f"task.n_copy={self.n_copy} exceeds task.context={self.context}")
        return self

    @property
    def seq_len(self) -> int:
        return self.context + self.n_copy

    @property
    def d_vocab(self) -> int:
        return FIRST_DATA + self.n_symbols


class SelectiveCopy:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: SelectiveCopyConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    def token_names(self) -> list[str]:
        return ["_", "?"] + [chr(ord("a") + i) if i < 26 else f"s{i}" for i in range(self.cfg.n_symbols)]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        # n_copy distinct positions per row, kept in order: the smallest of a random permutation's first n
        places = torch.rand(batch, c.context, generator=generator).argsort(1)[:, : c.n_copy].sort(1).values
        data = torch.randint(FIRST_DATA, c.d_vocab, (batch, c.n_copy), generator=generator)
        tokens = torch.full((batch, c.seq_len), FILLER, dtype=torch.long)
        tokens.scatter_(1, places, data)
        tokens[:, c.context:] = MARKER
        targets = torch.zeros_like(tokens)
        targets[:, c.context:] = data
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, c.context:] = True
        is_data = torch.zeros_like(mask)
        is_data.scatter_(1, places, True)
        return Batch(tokens, targets, mask, {"is_data": is_data, "places": places})
