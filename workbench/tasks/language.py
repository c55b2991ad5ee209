"""A plain synthetic language: a fixed random bigram chain with Zipf-like transition rows.

A sanity task: the optimal loss is the chain's entropy rate, which a 1-layer model can reach.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from pydantic import Field, model_validator
from torch import Tensor

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


BOS, DELIMITER = 0, 1


class SegmentedLanguageConfig(Config):
    d_vocab: int = Field(256, ge=4, description="vocabulary incl. BOS (id 0) and the delimiter (id 1)")
    seq_len: int = Field(64, ge=4, description="tokens per sequence incl. BOS")
    zipf_exponent: float = Field(1.2, gt=0)
    language_seed: int = Field(0, ge=0, description="which bigram chain: fixed across training batches")
    min_segment: int = Field(8, ge=1, description="fewest tokens between delimiters")
    max_segment: int = Field(16, ge=1, description="most tokens between delimiters")
    copy_prob: float = Field(0.5, ge=0, le=1, description="chance that a segment repeats an earlier one")

    @model_validator(mode="after")
    def _check(self) -> SegmentedLanguageConfig:
        if self.min_segment > self.max_segment:
            raise ValueError(f"task.min_segment={self.min_segment} exceeds task.max_segment={self.max_segment}")
        return self


class SegmentedLanguage:
    """Bigram text with the structure that grows attention sinks (Bondarenko et al. 2023, "Quantizable
    Transformers"): BOS opens every sequence and a delimiter closes every segment of `min_segment`–`max_segment`
    tokens, and a segment repeats an earlier one with probability `copy_prob`. Heads with nothing to do — no
    repeat to copy — learn to park their attention on BOS and the delimiters (a "no-op"), which at a high
    learning rate drives the residual stream at those tokens to outlier values."""

    loss, causal = "cross_entropy", True

    def __init__(self, cfg: SegmentedLanguageConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len
        self.chain = BigramLanguage(BigramLanguageConfig(d_vocab=cfg.d_vocab - 2, seq_len=cfg.seq_len,
                                                         zipf_exponent=cfg.zipf_exponent,
                                                         language_seed=cfg.language_seed))

    def token_names(self) -> list[str]:
        return ["BOS", "DELIM"] + [str(i) for i in range(self.d_vocab - 2)]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        walk = (self.chain.sample(batch, generator).inputs + 2).tolist()  # fresh text, vectorised over the batch
        lengths = torch.randint(c.min_segment, c.max_segment + 1, (batch, c.seq_len), generator=generator).tolist()
        coins = torch.rand(batch, c.seq_len, generator=generator).tolist()
        picks = torch.randint(0, 2**31 - 1, (batch, c.seq_len), generator=generator).tolist()
        rows = []
        for b in range(batch):
            row, segments, fresh, i = [BOS], [], iter(walk[b]), 0
            while len(row) < c.seq_len:
                if segments and coins[b][i] < c.copy_prob:
                    segment = segments[picks[b][i] % len(segments)]
                else:
                    segment = [next(fresh) for _ in range(min(lengths[b][i], c.seq_len - len(row)))]
                segments.append(segment)
                row += segment + [DELIMITER]
                i += 1
            rows.append(row[:c.seq_len])
        return next_token_batch(torch.tensor(rows), torch.ones(batch, c.seq_len, dtype=torch.bool))


class Order2LanguageConfig(Config):
    d_vocab: int = Field(32, ge=2)
    seq_len: int = Field(64, ge=3)
    support: int = Field(8, ge=1, description="allowed next symbols per context (previous two tokens)")
    language_seed: int = Field(0, ge=0, description="which chain: fixed across training batches")

    @model_validator(mode="after")
    def _check(self) -> Order2LanguageConfig:
        if self.support > self.d_vocab:
            raise ValueError(f"task.support={self.support} exceeds task.d_vocab={self.d_vocab}")
        return self


class Order2Language:
    """An order-2 Markov language (the scaling-law testbed): each context, the previous two tokens, allows
    `support` next symbols, drawn without replacement by a global Zipf popularity and weighted 1/r in the order
    drawn. Its entropy rate is exact (`entropy_floor`), so a fitted L∞ can be checked against the true floor.
    Sequences start from the stationary distribution over contexts; the loss counts predictions of tokens 2…,
    whose context is fully visible."""

    loss, causal = "cross_entropy", True

    def __init__(self, cfg: Order2LanguageConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len
        V, g = cfg.d_vocab, torch.Generator().manual_seed(cfg.language_seed)
        popularity = 1 / (1 + torch.randperm(V, generator=g).float())
        allowed = torch.multinomial(popularity.expand(V * V, V), cfg.support, replacement=False, generator=g)
        weights = 1 / torch.arange(1, cfg.support + 1, dtype=torch.float64)
        self.transition: Float[Tensor, "context next"] = torch.zeros(V * V, V, dtype=torch.float64).scatter_(
            1, allowed, weights.expand(V * V, -1))
        self.transition /= self.transition.sum(1, keepdim=True)
        self.stationary = self._stationary()

    def _stationary(self, iterations: int = 2000) -> Float[Tensor, " context"]:
        """Power iteration on contexts (a, b) → (b, c); the chain is aperiodic once each row allows > 1 symbol."""
        V = self.d_vocab
        pi = torch.full((V * V,), 1 / V**2, dtype=torch.float64)
        for _ in range(iterations):
            joint = pi[:, None] * self.transition  # [(a, b), c]
            new = joint.reshape(V, V, V).sum(0).reshape(-1)  # (b, c)
            if torch.allclose(new, pi, atol=1e-15, rtol=0):
                break
            pi = new
        return pi

    def entropy_floor(self) -> float:
        """The Bayes loss (nats) at positions whose two predecessors are seen: the chain's entropy rate."""
        p = self.transition
        row_entropy = -(p * p.clamp(min=1e-300).log()).sum(1)
        return float((self.stationary * row_entropy).sum())

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        V = self.d_vocab
        tokens = torch.empty(batch, self.seq_len, dtype=torch.long)
        start = torch.multinomial(self.stationary.float(), batch, replacement=True, generator=generator)
        tokens[:, 0], tokens[:, 1] = start // V, start % V
        probs = self.transition.float()
        for i in range(2, self.seq_len):
            context = tokens[:, i - 2] * V + tokens[:, i - 1]
            tokens[:, i] = torch.multinomial(probs[context], 1, generator=generator).squeeze(1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False  # position 0 predicts token 1 from one token of context
        return next_token_batch(tokens, mask)
