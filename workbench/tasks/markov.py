"""Random Markov chains: in-context bigram learning (Edelman et al., "The Evolution of Statistical
Induction Heads"; "On Learning Markov Chains").

Every sequence comes from its own chain: each row of its transition matrix is drawn from a symmetric
Dirichlet, so the only way to predict well is to count the bigrams seen so far in the context. The
Bayes-optimal predictor is add-α bigram counts (`workbench.hooks.icl.bigram_bayes`).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from pydantic import Field
from torch import Tensor

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch


class MarkovConfig(Config):
    states: int = Field(3, ge=2, description="vocabulary = states")
    seq_len: int = Field(100, ge=2)
    concentration: int = Field(1, ge=1, description="Dirichlet α of every transition row (an integer)")


class MarkovChains:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: MarkovConfig):
        self.cfg, self.seq_len, self.d_vocab = cfg, cfg.seq_len, cfg.states

    def transitions(self, batch: int, generator: torch.Generator) -> Float[Tensor, "batch state state"]:
        """Dirichlet(α, …, α) rows as normalised sums of α exponentials (Gamma(α) for integer α)."""
        S, a = self.cfg.states, self.cfg.concentration
        gamma = -torch.rand(batch, S, S, a, generator=generator).clamp(min=1e-12).log().sum(-1)
        return gamma / gamma.sum(-1, keepdim=True)

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        P = self.transitions(batch, generator)
        tokens = torch.empty(batch, self.seq_len, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, self.cfg.states, (batch,), generator=generator)
        rows = torch.arange(batch)
        for t in range(1, self.seq_len):  # a chain is sequential; every step is vectorised over the batch
            tokens[:, t] = torch.multinomial(P[rows, tokens[:, t - 1]], 1, generator=generator).squeeze(1)
        return next_token_batch(tokens, torch.ones_like(tokens, dtype=torch.bool), transitions=P)
