"""The hooked model zoo."""

from workbench.models.config import ModelConfig
from workbench.models.transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "build_model"]


def build_model(cfg: ModelConfig, seed: int | None = None) -> Transformer:
    """Build a model on `cfg.device`; with a seed, the init is reproducible and leaves the global RNG untouched.
    The init always runs on the CPU, so a seed gives the same weights on every device."""
    import torch

    from workbench.device import resolve_device

    device = resolve_device(cfg.device)
    if seed is None:
        return Transformer(cfg).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(cfg).to(device)
