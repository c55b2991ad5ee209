"""Adaptive computation time, read out: how many iterations each position of a looped ACT model used.

The model's `blocks.{l}.hook_ponder` carries Graves's ponder cost N + R per position (N iterations, remainder
R ∈ (0, 1]), and `hook_halt` each iteration's halting weight. These helpers run the model once and return them
with gradients intact, so a training loss can add τ·(N + R)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from workbench.config import ConfigError


def act_hooks(model: nn.Module) -> list[str]:
    names = [name for name in model.hook_dict if name.endswith(".hook_ponder")]
    if not names:
        raise ConfigError("this model has no adaptive computation time: set model.halting=true (with model.loops ≥ 2)")
    return names


def forward_with_ponder(model: nn.Module, inputs: Tensor, attention_mask: Tensor | None = None,
                        positions: Tensor | None = None) -> tuple[Tensor, Float[Tensor, "batch pos"]]:
    """The model's output and its ponder cost N + R per position, summed over its ACT layers (not detached)."""
    ponder = []
    with model.hooks(fwd_hooks=[(name, lambda value, hook: ponder.append(value)) for name in act_hooks(model)]):
        output = model(inputs, attention_mask=attention_mask, positions=positions)
    return output, torch.stack(ponder).sum(0)


def iterations_used(ponder: Float[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """N from N + R: R lies in (0, 1] (it is ≥ 1 − threshold), so N = ⌈N + R⌉ − 1."""
    return torch.ceil(ponder - 1e-6) - 1
