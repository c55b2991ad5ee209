"""Topic-structured documents for masked language modelling (Li et al. 2023, "How Do Transformers Learn Topic
Structure: Towards a Mechanistic Understanding"): an LDA-like generator with disjoint topics. Word w belongs to
topic w // words_per_topic. Each document draws `topics_per_doc` distinct topics, then each token draws one of
them and a word of it uniformly. A fraction of the tokens is replaced by MASK; the model predicts them. The only
signal about a masked word is which topics the rest of the document uses.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.config import Config
from workbench.tasks.base import Batch


class TopicsConfig(Config):
    n_topics: int = Field(10, ge=2, description="topics (disjoint word sets)")
    words_per_topic: int = Field(10, ge=1, description="words in each topic")
    topics_per_doc: int = Field(2, ge=1, description="distinct topics a document mixes")
    doc_len: int = Field(32, ge=2, description="tokens a document")
    mask_prob: float = Field(0.15, gt=0, lt=1, description="fraction of tokens replaced by MASK (at least one)")

    @model_validator(mode="after")
    def _check(self) -> TopicsConfig:
        if self.topics_per_doc > self.n_topics:
            raise ValueError(f"task.topics_per_doc={self.topics_per_doc} exceeds task.n_topics={self.n_topics}")
        return self

    @property
    def n_words(self) -> int:
        return self.n_topics * self.words_per_topic

    @property
    def seq_len(self) -> int:
        return self.doc_len

    @property
    def d_vocab(self) -> int:
        return self.n_words + 1  # the words and MASK


class Topics:
    loss, causal = "cross_entropy", False  # masked LM: the target is hidden from its own position

    def __init__(self, cfg: TopicsConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    @property
    def mask_token(self) -> int:
        return self.cfg.n_words

    def topic_of(self) -> torch.Tensor:
        """Each word's topic `[n_words]`."""
        return torch.arange(self.cfg.n_words) // self.cfg.words_per_topic

    def token_names(self) -> list[str]:
        per = self.cfg.words_per_topic
        return [f"t{w // per}w{w % per}" for w in range(self.cfg.n_words)] + ["MASK"]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        topics = torch.rand(batch, c.n_topics, generator=generator).argsort(1)[:, : c.topics_per_doc]
        which = torch.randint(0, c.topics_per_doc, (batch, c.doc_len), generator=generator)
        words = topics.gather(1, which) * c.words_per_topic + torch.randint(0, c.words_per_topic,
                                                                            (batch, c.doc_len), generator=generator)
        masked = torch.rand(batch, c.doc_len, generator=generator) < c.mask_prob
        masked[torch.arange(batch), torch.randint(0, c.doc_len, (batch,), generator=generator)] = True
        tokens = words.masked_fill(masked, self.mask_token)
        return Batch(tokens, words, masked, {"topics": topics})
