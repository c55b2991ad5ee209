"""Parity, answered directly or through a chain of thought (Feng et al. 2023; Merrill & Sabharwal 2024).

`n_bits` random bits, then "=". Direct: the answer (the bits' parity) is predicted at "=". Chain of thought: after
"=" the model writes the running parities p_1 … p_n, one a token, each the previous one XOR the next bit; p_n is
the answer. Each chain step needs one bit and one earlier output, a fixed-depth lookup; the direct answer needs
all n bits at once, which a small fixed-depth transformer does not learn.

    direct   1 0 1 1 =            →  at "=": 1
    CoT      1 0 1 1 = 1 1 0 1    →  each position from "=" on predicts the next running parity; the last is the answer
"""

from __future__ import annotations

import torch
from pydantic import Field

from workbench.config import Config
from workbench.tasks.base import Batch

EQUALS = 2  # tokens 0 and 1 are bits (and parities)


class ParityConfig(Config):
    n_bits: int = Field(16, ge=1, description="input bits")
    cot: bool = Field(False, description="write the running parities before the answer (chain of thought)")

    @property
    def seq_len(self) -> int:
        return self.n_bits + 1 + (self.n_bits - 1 if self.cot else 0)  # the last parity is predicted, not read

    @property
    def d_vocab(self) -> int:
        return 3


class Parity:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: ParityConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    def token_names(self) -> list[str]:
        return ["0", "1", "="]

    def prompt(self, bits: str | list[int]) -> torch.Tensor:
        """The prompt `[1 n_bits+1]` for bits given as "0110…" or a list: the bits, then "="."""
        bits = [int(b) for b in bits]
        if len(bits) != self.cfg.n_bits or set(bits) - {0, 1}:
            raise ValueError(f"bits: need {self.cfg.n_bits} of 0/1; got {len(bits)}")
        return torch.tensor([bits + [EQUALS]])

    def answer_position(self) -> int:
        """Where the model's prediction is the answer: at "=" (direct) or at the last chain token."""
        return self.seq_len - 1

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        n = self.cfg.n_bits
        bits = torch.randint(0, 2, (batch, n), generator=generator)
        running = bits.cumsum(1) % 2
        parts = [bits, torch.full((batch, 1), EQUALS)] + ([running[:, :-1]] if self.cfg.cot else [])
        tokens = torch.cat(parts, 1)
        targets = torch.zeros_like(tokens)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        chain = running if self.cfg.cot else running[:, -1:]
        targets[:, n:] = chain  # from "=" on, each position predicts the next chain token (the last: the answer)
        mask[:, n:] = True
        return Batch(tokens, targets, mask, {"parity": running[:, -1], "bits": bits})
