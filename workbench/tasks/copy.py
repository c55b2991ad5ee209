"""Copying (the length-generalisation probe of Kazemnejad et al. 2023, "The Impact of Positional Encoding on
Length Generalization in Transformers").

`BOS x1 … xn SEP x1 … xn PAD …`: n random symbols, a separator, then the same symbols again. The copy is
scored: position SEP predicts x1, x1's copy predicts x2, and so on. n varies per sequence between `min_len`
and `max_len`; set them equal to test one length, e.g. beyond the longest trained. With `gap`, that many PAD
tokens sit between the symbols and SEP (the long-gap copy of the attention-spans experiment).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch

BOS, SEP, PAD = 0, 1, 2
FIRST_SYMBOL = 3


class CopyConfig(Config):
    n_symbols: int = Field(32, ge=2, description="symbol tokens (ids 3 … 3 + n_symbols − 1)")
    min_len: int = Field(1, ge=1, description="fewest symbols to copy")
    max_len: int = Field(16, ge=1, description="most symbols to copy")
    gap: int = Field(0, ge=0, description="filler (PAD) tokens between the symbols and SEP")

    @model_validator(mode="after")
    def _check(self) -> CopyConfig:
        if self.min_len > self.max_len:
            raise ValueError(f"task.min_len={self.min_len} exceeds task.max_len={self.max_len}")
        return self

    @property
    def seq_len(self) -> int:
        return 2 * self.max_len + 2 + self.gap  # BOS, the symbols, the gap, SEP, the copy

    @property
    def d_vocab(self) -> int:
        return FIRST_SYMBOL + self.n_symbols


class Copy:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: CopyConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    def token_names(self) -> list[str]:
        return ["BOS", "SEP", "PAD"] + [f"s{i}" for i in range(self.cfg.n_symbols)]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        n = torch.randint(c.min_len, c.max_len + 1, (batch, 1), generator=generator)
        symbols = torch.randint(FIRST_SYMBOL, c.d_vocab, (batch, c.max_len), generator=generator)
        pos = torch.arange(c.seq_len)[None, :]
        sep = n + c.gap + 1
        source = (pos >= 1) & (pos <= n)
        copy = (pos > sep) & (pos <= sep + n)
        index = torch.where(copy, pos - sep - 1, pos - 1).clamp(0, c.max_len - 1)  # which symbol each position holds
        tokens = torch.where(source | copy, symbols.gather(1, index), PAD)
        tokens = torch.where(pos == sep, SEP, tokens)
        tokens[:, 0] = BOS
        scored = (pos >= sep) & (pos < sep + n)  # SEP … the copy's second-to-last symbol predict the copy
        return next_token_batch(tokens, scored, length=n.squeeze(1))
