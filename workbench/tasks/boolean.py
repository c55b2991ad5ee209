"""In-context boolean functions (Bhattamishra et al. 2024, "Understanding In-Context Learning in
Transformers and LLMs by Learning to Learn Discrete Functions").

Each prompt draws a function f over n ±1 inputs — a conjunction, a disjunction, a sparse parity or a
majority — and shows (x_i, f(x_i)) pairs. In the "pair" format token i is [x_i, x_{i−1}, y_{i−1}] (2n + 1
dims, y as ±1, zeros before the first example), and the model predicts y_i at token i from the
examples before it: a binary loss at every position.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float
from pydantic import Field, model_validator
from torch import Tensor

from workbench.config import Config
from workbench.tasks.base import Batch


class BooleanConfig(Config):
    n: int = Field(10, ge=2, description="inputs per example (±1)")
    examples: int = Field(40, ge=2, description="(x, f(x)) pairs per prompt")
    function: Literal["conjunction", "disjunction", "parity", "majority"] = "conjunction"
    p_include: float = Field(0.3, ge=0, le=1, description="conjunction/disjunction/majority: P(variable used)")
    p_negate: float = Field(0.5, ge=0, le=1, description="conjunction/disjunction: P(literal negated)")
    p_force: float = Field(0.15, ge=0, le=1, description="P(an example is forced positive (conj.) / negative (disj.))")
    parity_bits: int = Field(2, ge=1, description="sparse parity: how many of the n bits")

    @model_validator(mode="after")
    def _check(self) -> BooleanConfig:
        if self.parity_bits > self.n:
            raise ValueError(f"task.parity_bits={self.parity_bits} exceeds task.n={self.n}")
        return self

    @property
    def d_input(self) -> int:
        return 2 * self.n + 1

    @property
    def seq_len(self) -> int:
        return self.examples


class BooleanFunctions:
    loss, causal = "binary", True

    def __init__(self, cfg: BooleanConfig):
        self.cfg, self.seq_len, self.d_input = cfg, cfg.examples, cfg.d_input

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        x = torch.randint(0, 2, (batch, c.examples, c.n), generator=generator).float() * 2 - 1
        if c.function == "parity":
            bits = torch.rand(batch, c.n, generator=generator).argsort(-1)[:, : c.parity_bits]
            used = torch.zeros(batch, c.n, dtype=torch.bool).scatter_(1, bits, True)
            y = ((x < 0) & used[:, None]).sum(-1) % 2
            return self.encode(x, y.float(), {"used": used})
        used = torch.rand(batch, c.n, generator=generator) < c.p_include
        signs = torch.where(torch.rand(batch, c.n, generator=generator) < c.p_negate, -1.0, 1.0)
        if c.function == "majority":
            y = ((x * used[:, None]).sum(-1) > 0).float()
            return self.encode(x, y, {"used": used})
        # Force some examples to satisfy every literal (conjunction) or none (disjunction): without it,
        # random inputs almost never make a conjunction true.
        forced = torch.rand(batch, c.examples, 1, generator=generator) < c.p_force
        target = signs[:, None] if c.function == "conjunction" else -signs[:, None]
        x = torch.where(forced & used[:, None], target.expand_as(x), x)
        literal = x * signs[:, None] > 0  # [batch examples n]: each literal satisfied?
        conjunction = c.function == "conjunction"
        y = (literal | ~used[:, None]).all(-1) if conjunction else (literal & used[:, None]).any(-1)
        return self.encode(x, y.float(), {"used": used, "signs": signs})

    def encode(self, x: Float[Tensor, "batch k n"], y: Float[Tensor, "batch k"], meta: dict) -> Batch:
        """The pair format: token i = [x_i, x_{i−1}, y_{i−1}] with y as ±1."""
        previous = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        previous_y = torch.cat([torch.zeros_like(y[:, :1]), 2 * y[:, :-1] - 1], dim=1)
        inputs = torch.cat([x, previous, previous_y[..., None]], dim=-1)
        return Batch(inputs, y, torch.ones_like(y, dtype=torch.bool), {"x": x, "y": y, **meta})
