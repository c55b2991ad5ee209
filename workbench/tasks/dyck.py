"""Dyck-2 (balanced strings of two bracket types) for structural probes (Hewitt & Manning 2019; AST-Probe):
BOS, then `length` brackets that close every bracket they open, nesting at most `max_depth` deep. Each string is
a tree: an open bracket's parent is the innermost open bracket still unclosed before it (BOS, the root, if none);
a close bracket is a leaf under the bracket it closes. The task gives each token's depth and the tree distance
between every pair of tokens.

    BOS ( [ ] ( ) )      depths 0 1 2 1 2 1 0 (after each token)
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from pydantic import Field, model_validator
from torch import Tensor

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch

BOS, OPENS, CLOSES = 0, (1, 3), (2, 4)
NAMES = ["BOS", "(", ")", "[", "]"]


class DyckConfig(Config):
    length: int = Field(48, ge=2, description="brackets a string (even)")
    max_depth: int = Field(8, ge=1, description="deepest nesting")
    p_open: float = Field(0.5, gt=0, lt=1, description="chance of opening when both moves are allowed")

    @model_validator(mode="after")
    def _even(self) -> DyckConfig:
        if self.length % 2:
            raise ValueError(f"task.length={self.length} must be even: every bracket opened is closed")
        return self

    @property
    def seq_len(self) -> int:
        return self.length + 1

    @property
    def d_vocab(self) -> int:
        return len(NAMES)


class Dyck:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: DyckConfig):
        self.cfg, self.seq_len, self.d_vocab = cfg, cfg.seq_len, len(NAMES)

    def token_names(self) -> list[str]:
        return list(NAMES)

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        tokens = torch.full((batch, c.seq_len), BOS, dtype=torch.long)
        stack = torch.zeros(batch, c.max_depth + 1, dtype=torch.long)  # open-bracket types, innermost last
        depth = torch.zeros(batch, dtype=torch.long)
        rows = torch.arange(batch)
        for t in range(1, c.seq_len):
            left = c.seq_len - t  # brackets still to write, this one included
            can_open = (depth < c.max_depth) & (depth + 1 <= left - 1)
            must_open = depth == 0
            opens = must_open | (can_open & (torch.rand(batch, generator=generator) < c.p_open))
            kind = torch.randint(0, 2, (batch,), generator=generator)
            new_open = torch.tensor(OPENS)[kind]
            closing = torch.tensor(CLOSES)[(stack[rows, (depth - 1).clamp(min=0)] == OPENS[1]).long()]
            tokens[:, t] = torch.where(opens, new_open, closing)
            stack[rows, depth.clamp(max=c.max_depth)] = torch.where(opens, new_open, stack[rows, depth.clamp(
                max=c.max_depth)])
            depth = depth + torch.where(opens, 1, -1)
        return next_token_batch(tokens, torch.ones_like(tokens, dtype=torch.bool), depth=depths(tokens))


def depths(tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Unclosed brackets after each token (BOS: 0)."""
    step = torch.zeros_like(tokens)
    for t in OPENS:
        step += (tokens == t).long()
    for t in CLOSES:
        step -= (tokens == t).long()
    return step.cumsum(1)


def tree_distances(tokens: Int[Tensor, " pos"]) -> Int[Tensor, "pos pos"]:
    """Path lengths between every pair of tokens in the string's tree (BOS is the root)."""
    parent, stack = [-1], [0]
    for i, t in enumerate(tokens.tolist()[1:], start=1):
        parent.append(stack[-1])
        if t in OPENS:
            stack.append(i)
        else:
            parent[i] = stack.pop()  # a close bracket hangs under the bracket it closes
    n = len(parent)
    ancestors = torch.eye(n, dtype=torch.bool)  # [i, a]: a is i or one of its ancestors
    for i in range(1, n):  # a parent always comes before its child
        ancestors[i] |= ancestors[parent[i]]
    level = ancestors.sum(1) - 1
    shared = ancestors.long() @ ancestors.long().T  # common ancestors: the root down to the lowest one
    return level[:, None] + level[None, :] - 2 * (shared - 1)
