"""A hidden-state language (for Future Lens, Pal et al. 2023): `n_states` hidden states, each emitting one of
`n_tokens` tokens (`n_states / n_tokens` states per token, deterministically), each with `successors` possible
next states (probability `p_first` for the first, the rest shared). The token alone does not tell the state, so
predicting two or three tokens ahead needs the state the context implies: exactly what a model's residual stream
may hold beyond the next token. The task computes the optimum: forward filtering over the hidden states.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from pydantic import Field, model_validator
from torch import Tensor

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch


class HiddenStatesConfig(Config):
    n_states: int = Field(96, ge=2, description="hidden states")
    n_tokens: int = Field(8, ge=2, description="tokens; each is emitted by n_states / n_tokens states")
    successors: int = Field(2, ge=1, description="possible next states per state")
    p_first: float = Field(0.85, gt=0, le=1, description="probability of a state's first successor")
    seq_len: int = Field(64, ge=4)
    language_seed: int = Field(0, ge=0, description="which language: fixed across training batches")

    @model_validator(mode="after")
    def _check(self) -> HiddenStatesConfig:
        if self.n_states % self.n_tokens:
            raise ValueError(f"task.n_states={self.n_states} must be a multiple of task.n_tokens={self.n_tokens}")
        if self.successors > self.n_states:
            raise ValueError(f"task.successors={self.successors} exceeds task.n_states={self.n_states}")
        return self

    @property
    def d_vocab(self) -> int:
        return self.n_tokens


class HiddenStates:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: HiddenStatesConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.n_tokens, cfg.seq_len
        g = torch.Generator().manual_seed(cfg.language_seed)
        self.emission = torch.randperm(cfg.n_states, generator=g) % cfg.n_tokens  # state → its token
        rest = (1 - cfg.p_first) / max(1, cfg.successors - 1)
        probs = torch.tensor([cfg.p_first] + [rest] * (cfg.successors - 1))
        self.transition = torch.zeros(cfg.n_states, cfg.n_states)
        for s in range(cfg.n_states):
            nexts = torch.randperm(cfg.n_states, generator=g)[: cfg.successors]
            self.transition[s, nexts] = probs
        self.transition /= self.transition.sum(1, keepdim=True)

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        states = torch.empty(batch, self.seq_len, dtype=torch.long)
        states[:, 0] = torch.randint(0, self.cfg.n_states, (batch,), generator=generator)
        for t in range(1, self.seq_len):
            states[:, t] = torch.multinomial(self.transition[states[:, t - 1]], 1, generator=generator)[:, 0]
        tokens = self.emission[states]
        return next_token_batch(tokens, torch.ones_like(tokens, dtype=torch.bool), states=states)

    @torch.no_grad()
    def oracle(self, tokens: Int[Tensor, "batch pos"], offset: int) -> Float[Tensor, "batch pos token"]:
        """P(token at t + offset | tokens ≤ t), exactly: forward filtering over the hidden states, then `offset`
        steps of the chain."""
        emits = torch.nn.functional.one_hot(self.emission, self.cfg.n_tokens).float()  # [state token]
        belief = torch.full((tokens.shape[0], self.cfg.n_states), 1.0 / self.cfg.n_states)
        ahead = torch.linalg.matrix_power(self.transition, offset) @ emits  # [state token]
        out = []
        for t in range(tokens.shape[1]):
            if t:
                belief = belief @ self.transition
            belief = belief * emits[:, tokens[:, t]].T
            belief = belief / belief.sum(1, keepdim=True)
            out.append(belief @ ahead)
        return torch.stack(out, 1)


def ngram_accuracy(train: Int[Tensor, "batch pos"], test: Int[Tensor, "batch pos"], n_tokens: int, context: int,
                   offset: int, start: int) -> float:
    """Accuracy of the best predictor of the token `offset` ahead from the last `context` tokens (1: bigram,
    2: trigram), its table counted on `train`, scored on `test` at positions ≥ `start`."""
    def keys(tokens: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.arange(max(start, context - 1), tokens.shape[1] - offset)
        key = torch.zeros(tokens.shape[0], len(t), dtype=torch.long)
        for back in range(context):
            key = key * n_tokens + tokens[:, t - back]
        return key.flatten(), tokens[:, t + offset].flatten()
    key, target = keys(train)
    counts = torch.zeros(n_tokens ** context, n_tokens).index_put_((key, target), torch.ones(len(key)),
                                                                   accumulate=True)
    key, target = keys(test)
    return float((counts.argmax(1)[key] == target).float().mean())
