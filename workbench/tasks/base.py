"""What every task returns — a `Batch` — and what it declares: its loss and whether it needs causality.

A batch carries token ids `[batch pos]` or real-valued inputs `[batch pos d_input]`; targets that are
token ids, reals or binary labels; a loss mask; optionally an attention mask `[batch q k]` (segment or
set-based visibility travels with the data, not the config); and ground truth in `meta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.config import ConfigError

LossName = Literal["cross_entropy", "mse", "binary"]


@dataclass
class Batch:
    inputs: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_input"]
    targets: Tensor  # ids [batch pos] (cross_entropy), reals [batch pos (d_output)] (mse), 0/1 [batch pos] (binary)
    loss_mask: Bool[Tensor, "batch pos"]  # which positions count in the loss
    meta: dict[str, Tensor] = field(default_factory=dict)  # ground truth: segment lengths, states, …
    attention_mask: Bool[Tensor, "batch q k"] | None = None  # extra visibility, ANDed with the model's mask
    positions: Int[Tensor, "batch pos"] | None = None  # position indices, when not 0, 1, … (set-based prompts)

    @property
    def tokens(self) -> Int[Tensor, "batch pos"]:
        if self.inputs.is_floating_point():
            raise ConfigError("batch.tokens: this task's inputs are real-valued; use batch.inputs")
        return self.inputs

    def to(self, device: torch.device | str) -> Batch:
        """Every tensor on `device` (tasks sample on the CPU, so data is the same on every device)."""
        def move(x):
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x.to(device) if torch.is_tensor(x) else x
        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})


class Task(Protocol):
    """A seeded, vectorised data generator. Same generator state and step → same batch.

    `loss` names the objective (see `workbench.train.LOSSES`); `causal` says whether it needs a causal
    mask (a next-token objective does: with a bidirectional mask position i would read its own target).
    `sample` receives the training step, so curricula are a function of the step and resume stays exact.
    """

    seq_len: int
    loss: LossName
    causal: bool

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch: ...


def token_names(task, d_vocab: int) -> list[str]:
    """How a task writes each token id (TokFSM: digits and "BOS"); ids as text for tasks that do not say."""
    names = getattr(task, "token_names", None)
    return names() if names is not None else [str(i) for i in range(d_vocab)]


def check_objective(task: Task, model_cfg) -> None:
    """Refuse a mask that lets the model see its own targets."""
    if getattr(task, "causal", False) and model_cfg.mask != "causal":
        raise ConfigError(
            f"model.mask={model_cfg.mask!r} with {type(task).__name__}: its objective predicts the next token, so "
            "a non-causal mask lets position i read its own target; use model.mask=causal"
        )


def next_token_batch(tokens: Int[Tensor, "batch pos"], loss_mask: Tensor, **meta: Tensor) -> Batch:
    """Language-model framing: position i predicts token i+1; the last position has no target."""
    targets = torch.roll(tokens, -1, dims=1)
    mask = loss_mask.clone()
    mask[:, -1] = False
    return Batch(tokens, targets, mask, dict(meta))


def segment_mask(segments: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch q k"]:
    """Per-example segment ids → visibility: a query sees only keys of its own segment (packed documents)."""
    return segments[:, :, None] == segments[:, None, :]


def set_prompt(segments: Int[Tensor, "batch pos"]) -> tuple[Bool[Tensor, "batch q k"], Int[Tensor, "batch pos"]]:
    """Set-based prompting (McIlroy et al. 2024): segment 0 is shared text, segments 1, 2, … are the members of
    one set, each contiguous, between a shared prefix and suffix. Members see the prefix and themselves, not
    each other, and each restarts at the position after the prefix; the suffix sees everything and continues
    after the longest member. So the model's output after the set does not depend on the members' order.
    Returns the visibility `[batch q k]` (ANDed with the causal mask) and the position indices."""
    seg = segments.long()
    member = seg > 0
    started = member.cumsum(1) > 0  # at or after the first member token
    after = started & ~member  # the shared suffix
    if bool((after.long().cumsum(1) > 0)[member].any()):
        raise ConfigError("set_prompt: shared tokens between the set's members; members must be contiguous and "
                          "the shared text only before and after the set")
    change = torch.cat([torch.ones_like(seg[:, :1], dtype=torch.bool), seg[:, 1:] != seg[:, :-1]], 1)
    runs = torch.zeros(int(seg.max()) + 1 if seg.numel() else 1, dtype=torch.long).expand(seg.shape[0], -1).clone()
    runs.scatter_add_(1, seg, (change & member).long())
    if bool((runs[:, 1:] > 1).any()):
        raise ConfigError("set_prompt: a member's tokens are split by another member's; each member must be one "
                          "contiguous run of its segment id")
    visible = (seg[:, None, :] == 0) | (seg[:, :, None] == seg[:, None, :]) | (seg[:, :, None] == 0)
    one_hot = F.one_hot(seg, runs.shape[1])  # [batch pos segment]
    index_in_segment = ((one_hot.cumsum(1) - 1) * one_hot).sum(-1)
    prefix = (~started).sum(1, keepdim=True)
    longest = one_hot[:, :, 1:].sum(1).amax(1, keepdim=True) if runs.shape[1] > 1 else torch.zeros_like(prefix)
    positions = torch.where(member, prefix + index_in_segment, index_in_segment - prefix * after + (prefix + longest)
                            * after)
    return visible, positions


def parse_token_ids(text: str | bytes, d_vocab: int, n_ctx: int) -> Int[Tensor, "1 pos"]:
    """A typed prompt of token ids ("0 5 17 5", commas allowed) → `[1 pos]`, with one-line errors."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("prompt: not valid UTF-8 text") from None
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError("prompt: empty; type token ids separated by spaces, e.g. 0 5 17 5")
    bad = [p for p in parts if not p.lstrip("-").isdigit()]
    if bad:
        raise ValueError(f"prompt: {bad[0]!r} is not a token id; use integers in [0, {d_vocab - 1}]")
    ids = [int(p) for p in parts]
    out = [i for i in ids if not 0 <= i < d_vocab]
    if out:
        raise ValueError(f"prompt: token id {out[0]} outside the vocabulary [0, {d_vocab - 1}]")
    if len(ids) > n_ctx:
        raise ValueError(f"prompt: {len(ids)} tokens exceed the model's n_ctx={n_ctx}")
    return torch.tensor([ids])
