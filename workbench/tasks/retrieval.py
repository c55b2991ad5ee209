"""Key retrieval (the trained test of Nakanishi 2025, "Scalable-Softmax Is Superior for Attention").

`BOS k1 v1 k2 v2 … kn vn SEP q1 v(q1) … qm v(qm) PAD …`: n key–value pairs with distinct keys, a separator,
then m of those keys again (distinct, in random order) as queries, each followed by its value. Only the query
positions are scored: each must predict the value paired with its key. (m > 1 gives training m signals a
sequence; the queries never repeat a key, so an earlier answer never gives a later one away.) Keys and values
come from separate token ranges. The number of pairs varies per sequence between `min_pairs` and `max_pairs`;
shorter sequences are padded after the last answer (under a causal mask no query sees the padding). Set
`min_pairs = max_pairs` for one fixed length, e.g. a test at several times the training length.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch

BOS, SEP, PAD = 0, 1, 2
FIRST_KEY = 3


class RetrievalConfig(Config):
    n_keys: int = Field(64, ge=2, description="key tokens (ids 3 … 3 + n_keys − 1); at least max_pairs")
    n_values: int = Field(16, ge=2, description="value tokens, after the keys")
    min_pairs: int = Field(4, ge=1, description="fewest key–value pairs in a sequence")
    max_pairs: int = Field(8, ge=1, description="most key–value pairs in a sequence")
    queries: int = Field(1, ge=1, description="keys queried after the separator (at most min_pairs)")

    @model_validator(mode="after")
    def _check(self) -> RetrievalConfig:
        if self.min_pairs > self.max_pairs:
            raise ValueError(f"task.min_pairs={self.min_pairs} exceeds task.max_pairs={self.max_pairs}")
        if self.max_pairs > self.n_keys:
            raise ValueError(f"task.max_pairs={self.max_pairs} needs as many distinct keys; task.n_keys={self.n_keys}")
        if self.queries > self.min_pairs:
            raise ValueError(f"task.queries={self.queries} exceeds task.min_pairs={self.min_pairs} "
                             "(the queried keys are distinct)")
        return self

    @property
    def seq_len(self) -> int:
        return 2 * self.max_pairs + 2 + 2 * self.queries  # BOS, the pairs, SEP, the queries and their values

    @property
    def d_vocab(self) -> int:
        return FIRST_KEY + self.n_keys + self.n_values


class KeyRetrieval:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: RetrievalConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    def token_names(self) -> list[str]:
        c = self.cfg
        return ["BOS", "SEP", "PAD"] + [f"k{i}" for i in range(c.n_keys)] + [f"v{i}" for i in range(c.n_values)]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        n = torch.randint(c.min_pairs, c.max_pairs + 1, (batch, 1), generator=generator)  # pairs per sequence
        keys = torch.rand(batch, c.n_keys, generator=generator).argsort(-1)[:, : c.max_pairs] + FIRST_KEY  # distinct
        values = torch.randint(0, c.n_values, (batch, c.max_pairs), generator=generator) + FIRST_KEY + c.n_keys
        # The queried pairs: m distinct among the first n (pairs beyond n sort last).
        order = torch.rand(batch, c.max_pairs, generator=generator) + (torch.arange(c.max_pairs)[None, :] >= n)
        which = order.argsort(-1)[:, : c.queries]  # [batch m]
        query, answer = keys.gather(1, which), values.gather(1, which)
        pairs = torch.stack([keys, values], -1).flatten(1)  # [batch 2·max_pairs]: k1 v1 k2 v2 …
        asked = torch.stack([query, answer], -1).flatten(1)  # [batch 2m]: q1 a1 q2 a2 …
        pos = torch.arange(c.seq_len)[None, :]
        tokens = torch.full((batch, c.seq_len + 2 * c.queries), PAD, dtype=torch.long)
        tokens[:, 1: 1 + 2 * c.max_pairs] = pairs
        tokens = tokens.scatter(1, 2 * n + 2 + torch.arange(2 * c.queries)[None, :], asked)[:, : c.seq_len]
        first_query = 2 * n + 2  # [batch 1]
        tokens = torch.where((pos > 2 * n) & (pos < first_query - 1), PAD, tokens)  # pairs beyond this n
        tokens = torch.where(pos >= first_query + 2 * c.queries, PAD, tokens)
        tokens = torch.where(pos == first_query - 1, SEP, tokens)
        tokens[:, 0] = BOS
        q_pos = first_query + 2 * torch.arange(c.queries)[None, :]  # [batch m]
        scored = (pos[:, :, None] == q_pos[:, None, :]).any(-1)
        # Position i predicts token i + 1: only the query positions (predicting their answers) are scored.
        return next_token_batch(tokens, scored, pairs=n.squeeze(1), query_pos=q_pos, key_pos=2 * which + 1,
                                answer=answer)
