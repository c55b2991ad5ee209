"""Where tensors live: `model.device` is `cpu | cuda | mps | auto`, resolved once, with a clear error."""

from __future__ import annotations

import torch

from workbench.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; asking for an absent accelerator is a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name not in available:
        raise ConfigError(f"model.device={name!r} unknown; choose one of cpu, cuda, mps, auto")
    if not available[name]:
        raise ConfigError(f"model.device={name!r} is not available on this machine; use model.device=cpu or auto")
    return torch.device(name)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (cpu for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
