"""The hooked model zoo."""

from workbench.models.config import ModelConfig
from workbench.models.transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "build_model"]


def build_model(cfg: ModelConfig, seed: int | None = None) -> Transformer:
    """Build a model; with a seed, the init is reproducible and leaves the global RNG untouched."""
    if seed is None:
        return Transformer(cfg)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(cfg)
