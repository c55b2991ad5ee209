"""Inverse permutation ("On the Impossibility of Inverse Permutation Learning in Transformer Models"): `n_items`
tokens, each one id encoding a destination row and a value; row i must output the value whose destination is i.
Under a causal mask, output i is read at position i, so when the token destined for row i comes later the model
cannot have seen it. With `scratch`, `n_items` blank tokens follow the input and the outputs are read there, after
every input token.

    tokens  r2:a  r0:b  r3:c  r1:d            targets at rows 0 1 2 3:  b d a c
"""

from __future__ import annotations

import torch
from pydantic import Field

from workbench.config import Config
from workbench.tasks.base import Batch


class InversePermutationConfig(Config):
    n_items: int = Field(8, ge=2, description="rows to permute")
    n_values: int = Field(16, ge=2, description="values a row can carry (chance = 1/n_values)")
    scratch: bool = Field(False, description="append n_items blank tokens and read the outputs there")

    @property
    def seq_len(self) -> int:
        return self.n_items * (2 if self.scratch else 1)

    @property
    def d_vocab(self) -> int:
        return self.n_items * self.n_values + 1  # (row, value) pairs and the blank

    @property
    def blank(self) -> int:
        return self.n_items * self.n_values


class InversePermutation:
    # The targets are not the next tokens, so no mask is needed for honesty: "no mask" is a fair variant.
    loss, causal = "cross_entropy", False

    def __init__(self, cfg: InversePermutationConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    def token_names(self) -> list[str]:
        return [f"r{i // self.cfg.n_values}:{i % self.cfg.n_values}" for i in range(self.cfg.blank)] + ["□"]

    def encode(self, destinations: list[int], values: list[int]) -> torch.Tensor:
        """One sequence `[1 seq]` from its tokens' destination rows (a permutation) and values."""
        c = self.cfg
        if sorted(destinations) != list(range(c.n_items)):
            raise ValueError(f"destinations {destinations}: need a permutation of 0 … {c.n_items - 1}")
        if len(values) != c.n_items or not all(0 <= v < c.n_values for v in values):
            raise ValueError(f"values {values}: need {c.n_items} values in [0, {c.n_values - 1}]")
        tokens = torch.full((1, c.seq_len), c.blank, dtype=torch.long)
        tokens[0, : c.n_items] = torch.tensor(destinations) * c.n_values + torch.tensor(values)
        return tokens

    def output_positions(self) -> torch.Tensor:
        """Where row i's answer is read: position i, or the i-th blank with scratch tokens."""
        return torch.arange(self.cfg.n_items) + (self.cfg.n_items if self.cfg.scratch else 0)

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        destination = torch.rand(batch, c.n_items, generator=generator).argsort(1)  # token j goes to row dest[j]
        values = torch.randint(0, c.n_values, (batch, c.n_items), generator=generator)
        source = destination.argsort(1)  # row i's value sits at position source[i]
        tokens = torch.full((batch, c.seq_len), c.blank, dtype=torch.long)
        tokens[:, : c.n_items] = destination * c.n_values + values
        targets = torch.zeros_like(tokens)
        outputs = self.output_positions()
        targets[:, outputs] = values.gather(1, source)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, outputs] = True
        return Batch(tokens, targets, mask, {"source": source, "later": source > torch.arange(c.n_items)})
