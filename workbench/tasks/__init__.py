"""Seeded, vectorised data generators, one module per task family."""

from workbench.tasks.base import Batch, Task, next_token_batch, parse_token_ids
from workbench.tasks.language import BigramLanguage, BigramLanguageConfig
from workbench.tasks.repeated import RepeatedTokens, RepeatedTokensConfig

__all__ = [
    "Batch", "Task", "next_token_batch", "parse_token_ids",
    "RepeatedTokens", "RepeatedTokensConfig",
    "BigramLanguage", "BigramLanguageConfig",
]
