"""Model checkpoints as safetensors + JSON. No pickle anywhere: nothing in a file can run code."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from workbench.config import ConfigError
from workbench.runs import atomic_write


def save_weights(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors atomically (temp file + rename), so a kill never leaves a truncated file."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, save(data, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file; anything else (pickle, truncated, empty) is a clear ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: weights file is empty (0 bytes)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a valid safetensors file ({e}); workbench never unpickles files") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if none), with the same clear errors as load_weights."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a valid safetensors file ({e}); workbench never unpickles files") from None


def load_state(model: torch.nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """Load a state dict, naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, config expects {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ConfigError(f"{path}: weights do not match the config: {shown}")
    model.load_state_dict(state)


def parameters_named(model: torch.nn.Module, prefixes: tuple[str, ...], where: str) -> dict[str, torch.nn.Parameter]:
    """The parameters whose names start with one of `prefixes`; a prefix that matches none is an error."""
    named = dict(model.named_parameters())
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in named):
            raise ConfigError(f"{where} prefix {prefix!r} matches no parameter of the model "
                              f"(names look like {next(iter(named))!r})")
    return {name: p for name, p in named.items() if name.startswith(prefixes)}

