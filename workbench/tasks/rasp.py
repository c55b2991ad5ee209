"""Input/output pairs of a RASP program, for training a model of the compiled model's shape (the trained twin):
BOS, then a random input of random length; at every token the target is the program's output there (as an index
into the output's values; categorical programs only)."""

from __future__ import annotations

import random

import torch

from workbench.compile.compiler import Compiled
from workbench.compile.grading import draw_input
from workbench.compile.rasp import evaluate
from workbench.config import ConfigError
from workbench.tasks.base import Batch


class ProgramPairs:
    loss, causal = "cross_entropy", False  # the compiled model is bidirectional; targets are not next tokens

    def __init__(self, compiled: Compiled, unique: bool = False):
        self.compiled, self.unique = compiled, unique
        self.seq_len, self.d_vocab = compiled.max_len + 1, len(compiled.vocab) + 1

    def token_names(self) -> list[str]:
        return [str(t) for t in self.compiled.vocab] + ["BOS"]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        if self.compiled.output_values is None:
            raise ConfigError("ProgramPairs: the program's output is numerical; train a twin of a categorical one")
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        length = rng.randint(1, min(self.compiled.max_len, len(self.compiled.vocab) if self.unique else 10**9))
        inputs = [draw_input(self.compiled, rng, length, self.unique) for _ in range(batch)]
        values = self.compiled.output_values
        targets = torch.tensor([[0] + [values.index(v) for v in evaluate(self.compiled.program, x)] for x in inputs])
        mask = torch.ones_like(targets, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(self.compiled.encode(inputs), targets, mask)
