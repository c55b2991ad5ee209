"""A plain synthetic language: a fixed random bigram chain with Zipf-like transition rows.

A sanity task: the optimal loss is the chain's entropy rate, which a 1-layer model can reach.
"""

from __future__ import annotations

import torch
from pydantic import Field

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch


class BigramLanguageConfig(Config):
    d_vocab: int = Field(64, ge=2)
    seq_len: int = Field(64, ge=2)
    zipf_exponent: float = Field(1.2, gt=0)
    language_seed: int = Field(0, ge=0, description="which chain: fixed across training batches")


class BigramLanguage:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: BigramLanguageConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len
        g = torch.Generator().manual_seed(cfg.language_seed)
        ranks = torch.arange(1, cfg.d_vocab + 1, dtype=torch.float)
        zipf = ranks ** -cfg.zipf_exponent
        # Each row is the Zipf profile over a random permutation of next tokens.
        perms = torch.stack([torch.randperm(cfg.d_vocab, generator=g) for _ in range(cfg.d_vocab)])
        self.transition = torch.zeros(cfg.d_vocab, cfg.d_vocab).scatter_(1, perms, zipf.expand(cfg.d_vocab, -1))
        self.transition /= self.transition.sum(1, keepdim=True)

    def entropy_rate(self) -> float:
        """Expected next-token loss (nats) of the true chain, under its stationary distribution."""
        evals, evecs = torch.linalg.eig(self.transition.T)
        stationary = evecs[:, evals.real.argmax()].real
        stationary = stationary / stationary.sum()
        row_entropy = -(self.transition * self.transition.log()).sum(1)
        return float((stationary * row_entropy).sum())

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        # One multinomial per position over all rows at once: vectorised across the batch.
        tokens = torch.empty(batch, self.seq_len, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, self.d_vocab, (batch,), generator=generator)
        for i in range(1, self.seq_len):
            tokens[:, i] = torch.multinomial(self.transition[tokens[:, i - 1]], 1, generator=generator).squeeze(1)
        return next_token_batch(tokens, torch.ones_like(tokens, dtype=torch.bool))
