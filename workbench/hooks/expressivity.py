"""Measurements for the expressivity claims: which outputs a mask makes reachable, and what a value matrix encodes.

    accuracy_by_source   accuracy of each output row by where its source token sits (inverse permutation)
    token_ov             one head's OV circuit read in token space, W_E W_V W_O W_U  [vocab vocab]
    block_ratio          how much a matrix's same-group block outweighs the rest (topic structure)
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn


def accuracy_by_source(correct: Bool[Tensor, "batch row"], source: Int[Tensor, "batch row"]
                       ) -> Float[Tensor, "row source"]:
    """Mean correctness of output row i when its source token sits at position j; NaN where no example has
    that (i, j). Under a causal mask the cells with j > i are the outputs the model cannot see."""
    n = correct.shape[1]
    cell = (torch.arange(n, device=source.device) * n + source).flatten()
    hits = torch.zeros(n * n, device=source.device).index_add_(0, cell, correct.flatten().float())
    counts = torch.zeros(n * n, device=source.device).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float))
    return (hits / counts).view(n, n)


@torch.no_grad()
def token_ov(model: nn.Module, layer: int = 0, head: int = 0) -> Float[Tensor, "vocab vocab"]:
    """What attending to token a adds to the logit of token b through one head, bias-free: W_E W_V W_O W_U.
    Under uniform attention the head's output is the mean of these rows over the context."""
    return model.W_E @ model.W_V[layer, head] @ model.W_O[layer, head] @ model.W_U


def block_ratio(matrix: Float[Tensor, "n n"], groups: Int[Tensor, " n"]) -> float:
    """Mean entry of the same-group blocks over the mean magnitude of the other entries: ≫ 1 when the matrix is
    block-structured by group (raw entries, not centred: centring a row fixes the ratio by the group sizes)."""
    same = groups[:, None] == groups[None, :]
    return float(matrix[same].mean() / matrix[~same].abs().mean())


def shuffled_block_ratio(matrix: Float[Tensor, "n n"], groups: Int[Tensor, " n"], shuffles: int = 20,
                         seed: int = 0) -> float:
    """The largest `block_ratio` over `shuffles` random relabellings of the rows/columns into groups of the same
    sizes: what a matrix scores on groups it does not follow (a constant offset scores 1 on any grouping)."""
    g = torch.Generator().manual_seed(seed)
    return max(block_ratio(matrix, groups[torch.randperm(len(groups), generator=g)]) for _ in range(shuffles))
