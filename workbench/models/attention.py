"""Multi-head attention with TransformerLens hook points.

Two paths give the same result: a fast one through `F.scaled_dot_product_attention` when nothing
hooks the scores or pattern, and an explicit one that materialises them when something does.
Positional variants live here as score biases (ALiBi) or q/k rotations (rotary); attention
variants plug in as normaliser modules in `NORMALISERS` (scores → pattern, with their own parameters).
Which keys a query sees is the config's mask (causal or not) AND the batch's `attention_mask`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import FactoredMatrix
from transformer_lens.hook_points import HookPoint

from workbench.models.config import ModelConfig


class Softmax(nn.Module):
    """The standard normaliser. SDPA computes exactly this, so the fast path may stand in for it."""

    sdpa_equivalent = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, scores: Float[Tensor, "batch head q k"]) -> Float[Tensor, "batch head q k"]:
        return scores.softmax(dim=-1)  # masked entries arrive as -inf


class ScalableSoftmax(nn.Module):
    """Scalable-Softmax (Nakanishi 2025): softmax(s · log n · scores) over the n keys a query sees, with a
    learnable s per head (or a fixed one: `model.ssmax_learn_s=false`), so a query can stay focused however long
    the context grows."""

    sdpa_equivalent = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s = torch.full((cfg.n_heads,), cfg.ssmax_s)
        if cfg.ssmax_learn_s:
            self.s = nn.Parameter(s)
        else:  # a buffer: saved with the model, never trained
            self.register_buffer("s", s)

    def forward(self, scores: Float[Tensor, "batch head q k"]) -> Float[Tensor, "batch head q k"]:
        visible = torch.isfinite(scores)
        n = visible.sum(-1, keepdim=True).clamp(min=1)  # [batch head q 1]: keys this query sees
        scale = self.s[:, None, None] * n.to(scores.dtype).log()
        # Scale only the visible scores: -inf · 0 is nan, and even where() would send a nan gradient to s.
        return torch.where(visible, scores.masked_fill(~visible, 0) * scale, scores).softmax(dim=-1)


class ClippedSoftmax(nn.Module):
    """Bondarenko et al.'s clipped softmax, clip((ζ − γ) · softmax + γ, 0, 1): with γ < 0 a head can give a
    key exactly zero weight (and rest on a no-op) without pushing its scores to infinity."""

    sdpa_equivalent = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gamma, self.zeta = cfg.clip_gamma, cfg.clip_zeta

    def forward(self, scores: Float[Tensor, "batch head q k"]) -> Float[Tensor, "batch head q k"]:
        return ((self.zeta - self.gamma) * scores.softmax(dim=-1) + self.gamma).clamp(0, 1)


class Uniform(nn.Module):
    """Equal weight on every key a query may see, whatever the scores: attention frozen at uniform (Li et al. 2023's
    topic-structure setting), so W_Q and W_K get no gradient and only the value path learns."""

    sdpa_equivalent = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, scores: Float[Tensor, "batch head q k"]) -> Float[Tensor, "batch head q k"]:
        visible = torch.isfinite(scores).to(scores.dtype)
        return visible / visible.sum(-1, keepdim=True).clamp(min=1)


# Normalisers by `cfg.attention`: modules built from the config, so variants can carry parameters. Gated attention
# normalises with the softmax; its gate is part of `Attention`.
NORMALISERS: dict[str, type[nn.Module]] = {"softmax": Softmax, "ssmax": ScalableSoftmax, "clipped": ClippedSoftmax,
                                          "gated": Softmax, "uniform": Uniform}


def online_softmax(x: Float[Tensor, "... n"], chunk: int = 4096) -> tuple[Float[Tensor, "... n"], dict[str, float]]:
    """Softmax over the last axis in one read of x plus the writing pass (Milakov & Gimelshein 2018): a running
    max m and a running sum d of exp(x − m), rescaled whenever m grows, then exp(x − m) / d. A reference, not a
    kernel; returns the passes over x it made (reads and writes, counted in elements / x's size)."""
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype, device=x.device)
    d = torch.zeros_like(m)
    read = 0
    for start in range(0, x.shape[-1], chunk):
        block, previous = x[..., start:start + chunk], m
        read += block.numel()
        m = torch.maximum(m, block.amax(-1, keepdim=True))
        shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf so far: nothing to rescale
        d = d * torch.exp(previous - shift) + torch.exp(block - shift).sum(-1, keepdim=True)
    y = torch.exp(x - m) / d
    read += x.numel()
    return y, {"reads": read / x.numel(), "writes": y.numel() / x.numel()}


def safe_softmax(x: Float[Tensor, "... n"]) -> tuple[Float[Tensor, "... n"], dict[str, float]]:
    """The usual numerically safe softmax, with the same pass count: a max pass, a sum pass, then the writing
    pass (3 reads)."""
    m = x.amax(-1, keepdim=True)
    d = torch.exp(x - m).sum(-1, keepdim=True)
    return torch.exp(x - m) / d, {"reads": 3.0, "writes": 1.0}


def alibi_slopes(n_heads: int) -> Float[Tensor, " head"]:
    """Geometric slopes 2^(-8i/n) from Press et al. (2022)."""
    return torch.tensor([2 ** (-8 * (i + 1) / n_heads) for i in range(n_heads)])


class Rotary(nn.Module):
    """Rotary position embedding (Su et al.), applied to q and k; rotates pairs (i, i + d/2)."""

    def __init__(self, d_head: int, n_ctx: int, base: float):
        super().__init__()
        freqs = base ** (-torch.arange(0, d_head, 2).float() / d_head)
        angles = torch.outer(torch.arange(n_ctx).float(), freqs)  # [pos, d_head/2]
        self.register_buffer("cos", angles.cos().repeat(1, 2), persistent=False)
        self.register_buffer("sin", angles.sin().repeat(1, 2), persistent=False)

    def forward(self, x: Float[Tensor, "batch pos head d_head"], positions: Int[Tensor, "batch pos"] | None = None
                ) -> Float[Tensor, "batch pos head d_head"]:
        cos, sin = (self.cos[: x.shape[1], None], self.sin[: x.shape[1], None]) if positions is None else \
            (self.cos[positions][:, :, None], self.sin[positions][:, :, None])
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.cfg = cfg
        self.window = cfg.window_at(layer)  # 0: no sliding window
        H, dh = cfg.n_heads, cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * H * dh)
        self.out = nn.Linear(H * dh, cfg.d_model)
        self.rotary = Rotary(dh, cfg.n_ctx, cfg.rotary_base) if cfg.positional == "rotary" else None
        if cfg.positional == "alibi":
            self.register_buffer("alibi", alibi_slopes(H), persistent=False)
        if cfg.positional == "relative-bias":  # index n_ctx − 1 + (q − k): offsets −(n_ctx−1) … n_ctx−1
            self.rel_bias = nn.Parameter(torch.zeros(H, 2 * cfg.n_ctx - 1))
        self.normalise = NORMALISERS[cfg.attention](cfg)
        if cfg.attention == "gated":  # a sigmoid gate per head from the block's (normed) input
            self.gate = nn.Linear(cfg.d_model, H)
            self.hook_gate = HookPoint()  # [batch pos head]
        # TL's use_split_qkv_input: the residual each head's q, k, v read, before the norm [batch pos head d_model]
        self.use_split_qkv_input = False
        self.hook_q_input, self.hook_k_input, self.hook_v_input = HookPoint(), HookPoint(), HookPoint()
        self.hook_q = HookPoint()  # [batch pos head d_head]
        self.hook_k = HookPoint()  # [batch pos head d_head]
        self.hook_v = HookPoint()  # [batch pos head d_head]
        if self.rotary is not None:
            self.hook_rot_q = HookPoint()  # [batch pos head d_head]
            self.hook_rot_k = HookPoint()  # [batch pos head d_head]
        self.hook_attn_scores = HookPoint()  # [batch head q k], after masking
        self.hook_pattern = HookPoint()  # [batch head q k]
        self.hook_z = HookPoint()  # [batch pos head d_head]
        # TL's use_attn_result: each head's output through hook_result [batch pos head d_model] (bias excluded).
        # Off by default: materialising it costs head× the output's memory.
        self.use_attn_result = False
        self.hook_result = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"], attention_mask: Bool[Tensor, "batch q k"] | None = None,
                positions: Int[Tensor, "batch pos"] | None = None) -> Float[Tensor, "batch pos d_model"]:
        batch, pos, _ = x.shape
        q, k, v = self.qkv(x).view(batch, pos, 3, self.cfg.n_heads, self.cfg.d_head).unbind(dim=2)
        return self.attend(q, k, v, attention_mask, self.gate_of(x), positions)

    def forward_split(self, resid: Float[Tensor, "batch pos d_model"], norm: nn.Module,
                      attention_mask: Bool[Tensor, "batch q k"] | None = None,
                      positions: Int[Tensor, "batch pos"] | None = None) -> Float[Tensor, "batch pos d_model"]:
        """The same attention with each head's q, k, v input a hook point of its own (`use_split_qkv_input`),
        normed per head: what TL's edge-level tools patch and differentiate."""
        H, dh = self.cfg.n_heads, self.cfg.d_head
        per_head = resid[:, :, None, :].expand(-1, -1, H, -1)
        weight, bias = self.qkv.weight.view(3, H, dh, -1), self.qkv.bias.view(3, H, dh)
        hooks = (self.hook_q_input, self.hook_k_input, self.hook_v_input)
        normed = [norm.normalise(hook(per_head)) for hook in hooks]  # 3 × [batch pos head d_model]
        q, k, v = (torch.einsum("bphm,hdm->bphd", x, weight[i]) + bias[i] for i, x in enumerate(normed))
        gate = None
        if hasattr(self, "gate"):  # computed at the query from the query's input: the q edge carries it too
            gate = self.hook_gate(torch.sigmoid(torch.einsum("bphm,hm->bph", normed[0], self.gate.weight)
                                                + self.gate.bias))
        return self.attend(q, k, v, attention_mask, gate, positions)

    def gate_of(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos head"] | None:
        return self.hook_gate(torch.sigmoid(self.gate(x))) if hasattr(self, "gate") else None

    def attend(self, q, k, v, attention_mask, gate=None, positions=None) -> Float[Tensor, "batch pos d_model"]:
        pos = q.shape[1]
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.rotary is not None:
            q, k = self.hook_rot_q(self.rotary(q, positions)), self.hook_rot_k(self.rotary(k, positions))
        path = self.explicit if self.pattern_needed() else self.fast
        z = path(q, k, v, self.score_bias(pos, q.device, positions), attention_mask)
        z = self.hook_z(z if gate is None else z * gate[..., None])
        if self.use_attn_result:
            return self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O)).sum(-2) + self.b_O
        return self.out(z.flatten(-2))

    def pattern_needed(self) -> bool:
        """Materialise scores/pattern only if a hook (cache, patch, gradient) or the normaliser needs them."""
        hooks = (self.hook_attn_scores, self.hook_pattern)
        return not self.normalise.sdpa_equivalent or any(h.fwd_hooks or h.bwd_hooks for h in hooks)

    def score_bias(self, pos: int, device: torch.device, positions: Tensor | None = None
                   ) -> Float[Tensor, "head q k"] | Float[Tensor, "batch head q k"] | None:
        """Additive positional score bias (ALiBi's fixed slopes or a learned relative bias); else None.
        Per sequence `[batch head q k]` when the batch gives its own position indices."""
        idx = torch.arange(pos, device=device) if positions is None else positions[:, None]  # [pos] or [batch 1 pos]
        offset = idx[..., :, None] - idx[..., None, :]  # [(batch 1) q k]: q − k
        if hasattr(self, "alibi"):
            return -self.alibi[:, None, None] * offset.abs().float()
        if hasattr(self, "rel_bias"):
            bias = self.rel_bias[:, offset + self.cfg.n_ctx - 1]  # [head (batch 1) q k]
            return bias if positions is None else bias[:, :, 0].transpose(0, 1)
        return None

    def visible(self, pos: int, attention_mask: Tensor | None, device) -> Bool[Tensor, "batch head q k"] | None:
        """Keys each query may see: the config's causal mask AND the batch's mask; None when all are visible."""
        allowed = attention_mask[:, None] if attention_mask is not None else None
        if self.cfg.mask == "causal":
            causal = torch.ones(pos, pos, dtype=torch.bool, device=device).tril()
            if self.window:
                causal = causal & ~torch.ones(pos, pos, dtype=torch.bool, device=device).tril(-self.window)
            causal = causal[None, None]
            allowed = causal if allowed is None else allowed & causal
        return allowed

    def fast(self, q, k, v, bias, attention_mask) -> Float[Tensor, "batch pos head d_head"]:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch head pos d_head]
        if bias is None and attention_mask is None and not self.window:  # the common case: SDPA's causal kernel
            z = F.scaled_dot_product_attention(q, k, v, is_causal=self.cfg.mask == "causal")
        else:
            allowed = self.visible(q.shape[2], attention_mask, q.device)
            if bias is not None and allowed is not None:
                allowed = bias.masked_fill(~allowed, float("-inf"))
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=bias if allowed is None else allowed)
        return z.transpose(1, 2)

    def explicit(self, q, k, v, bias, attention_mask) -> Float[Tensor, "batch pos head d_head"]:
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.cfg.d_head)
        if bias is not None:
            scores = scores + bias
        allowed = self.visible(q.shape[1], attention_mask, q.device)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(self.normalise(scores))
        return torch.einsum("bhqk,bkhd->bqhd", pattern, v)

    # Per-head weight views in TransformerLens shapes.
    @property
    def W_Q(self) -> Float[Tensor, "head d_model d_head"]:
        return self._in_view(0)

    @property
    def W_K(self) -> Float[Tensor, "head d_model d_head"]:
        return self._in_view(1)

    @property
    def W_V(self) -> Float[Tensor, "head d_model d_head"]:
        return self._in_view(2)

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        return self.out.weight.T.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    @property
    def b_Q(self) -> Float[Tensor, "head d_head"]:
        return self.qkv.bias.view(3, self.cfg.n_heads, self.cfg.d_head)[0]

    @property
    def b_K(self) -> Float[Tensor, "head d_head"]:
        return self.qkv.bias.view(3, self.cfg.n_heads, self.cfg.d_head)[1]

    @property
    def b_V(self) -> Float[Tensor, "head d_head"]:
        return self.qkv.bias.view(3, self.cfg.n_heads, self.cfg.d_head)[2]

    @property
    def b_O(self) -> Float[Tensor, " d_model"]:
        return self.out.bias

    @property
    def OV(self) -> FactoredMatrix:
        """[head d_model d_model]: what each head writes for what it reads (W_V W_O)."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """[head d_model d_model]: query-side × key-side bilinear form (W_Q W_Kᵀ; before rotary or biases)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    def _in_view(self, i: int) -> Tensor:
        H, dh, dm = self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model
        return self.qkv.weight.view(3, H, dh, dm)[i].transpose(1, 2)
