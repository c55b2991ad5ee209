"""Repeated random tokens (Olsson et al. 2022): BOS, a random segment, the same segment again.

The second copy is predictable only by looking back to the token after the previous occurrence of
the current token — the job of an induction head. Segment lengths vary per sequence; positions
after the repeat are filled with fresh random tokens and left out of the loss.

Two switches, off by default, change what the induction circuit has to do (see `induction-circuit`):
`distinct` draws the segment without replacement (no accidental repeat for a longer prefix to tell apart),
`periodic` repeats it to the end of the sequence (so keys at every position are read).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from workbench.config import Config
from workbench.tasks.base import Batch, next_token_batch

BOS = 0


class RepeatedTokensConfig(Config):
    d_vocab: int = Field(64, ge=3, description="vocabulary incl. BOS (id 0)")
    seq_len: int = Field(64, ge=3, description="tokens per sequence incl. BOS")
    min_segment: int = Field(8, ge=1)
    max_segment: int = Field(31, ge=1, description="at most (seq_len - 1) // 2")
    periodic: bool = Field(False, description="repeat the segment to the end of the sequence (trained on) instead of "
                           "filling the rest with fresh tokens (not trained on)")
    distinct: bool = Field(False, description="draw the segment without replacement, so no token repeats inside it")

    @model_validator(mode="after")
    def _check(self) -> RepeatedTokensConfig:
        if self.min_segment > self.max_segment:
            raise ValueError(f"task.min_segment={self.min_segment} exceeds task.max_segment={self.max_segment}")
        if 2 * self.max_segment + 1 > self.seq_len:
            raise ValueError(
                f"task.max_segment={self.max_segment} does not fit twice in task.seq_len={self.seq_len} "
                f"(need 2·max_segment + 1 ≤ seq_len)"
            )
        if self.distinct and self.max_segment > self.d_vocab - 1:
            raise ValueError(f"task.distinct: task.max_segment={self.max_segment} exceeds the "
                             f"{self.d_vocab - 1} non-BOS tokens of task.d_vocab={self.d_vocab}")
        return self


class RepeatedTokens:
    loss, causal = "cross_entropy", True

    def __init__(self, cfg: RepeatedTokensConfig):
        self.cfg, self.d_vocab, self.seq_len = cfg, cfg.d_vocab, cfg.seq_len

    def token_names(self) -> list[str]:
        return ["BOS", *map(str, range(1, self.d_vocab))]

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c = self.cfg
        seg = torch.randint(c.min_segment, c.max_segment + 1, (batch, 1), generator=generator)
        fresh = torch.randint(1, c.d_vocab, (batch, c.seq_len), generator=generator)
        if c.distinct:  # a random permutation's prefix: each token at most once in the segment
            order = torch.rand(batch, c.d_vocab - 1, generator=generator).argsort(dim=1)
            fresh[:, 1:c.max_segment + 1] = order[:, :c.max_segment] + 1
        pos = torch.arange(c.seq_len)[None, :]
        end = c.seq_len if c.periodic else 2 * seg + 1
        in_repeat = (pos > seg) & (pos < end)  # positions 1..seg hold the segment, seg+1..end-1 its copies
        tokens = fresh.gather(1, torch.where(in_repeat, (pos - 1) % seg + 1, pos).expand(batch, -1))
        tokens[:, 0] = BOS
        # Targets at i are tokens[i + 1]: the first half predicts positions 2..seg, the repeat seg+1..end-1.
        first_half = (pos >= 1) & (pos < seg)
        repeat_half = (pos >= seg) & (pos < end - 1)
        return next_token_batch(
            tokens, first_half | repeat_half, segment=seg.squeeze(1), first_half=first_half, repeat_half=repeat_half
        )
