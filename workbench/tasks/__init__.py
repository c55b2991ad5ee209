"""Seeded, vectorised data generators, one module per task family."""

from workbench.tasks.base import Batch, Task, check_objective, next_token_batch, parse_token_ids, segment_mask
from workbench.tasks.language import BigramLanguage, BigramLanguageConfig
from workbench.tasks.modular import ModularAddition, ModularConfig
from workbench.tasks.repeated import RepeatedTokens, RepeatedTokensConfig

__all__ = [
    "Batch", "Task", "check_objective", "next_token_batch", "parse_token_ids", "segment_mask",
    "RepeatedTokens", "RepeatedTokensConfig",
    "BigramLanguage", "BigramLanguageConfig",
    "ModularAddition", "ModularConfig",
]
