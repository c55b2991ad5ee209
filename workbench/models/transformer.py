"""The hooked transformer: a TransformerLens `HookedRootModule` with TL hook names.

Dimension names used in shape annotations across workbench:
    batch    sequences in a batch            pos      token position (query side)
    k        key position                    head     attention head
    layer    block index                     d_model  residual stream width
    d_head   per-head width                  d_mlp    MLP hidden width
    d_vocab  vocabulary size
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.config import ConfigError
from workbench.models.attention import Attention
from workbench.models.config import ModelConfig

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


class Norm(nn.Module):
    """LayerNorm, RMSNorm or identity, with TL's `hook_normalized`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.norm
        if self.kind != "none":
            self.w = nn.Parameter(torch.ones(cfg.d_model))
        if self.kind == "layer":
            self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_normalized = HookPoint()  # [batch pos d_model]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.kind == "layer":
            x = F.layer_norm(x, x.shape[-1:], self.w, self.b, eps=1e-5)
        elif self.kind == "rms":
            x = F.rms_norm(x, x.shape[-1:], self.w, eps=1e-5)
        return self.hook_normalized(x)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = ACTIVATIONS[cfg.act]
        self.hook_pre = HookPoint()  # [batch pos d_mlp]
        self.hook_post = HookPoint()  # [batch pos d_mlp]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return self.fc_out(self.hook_post(self.act(self.hook_pre(self.fc_in(x)))))

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.fc_in.weight.T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.fc_out.weight.T


class Block(nn.Module):
    """Pre-norm residual block; attention-only when d_mlp = 0 (then no resid_mid, like TL)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.attn = Norm(cfg), Attention(cfg)
        self.hook_resid_pre = HookPoint()  # [batch pos d_model]
        self.hook_attn_out = HookPoint()  # [batch pos d_model]
        self.hook_resid_post = HookPoint()  # [batch pos d_model]
        self.mlp = None
        if cfg.d_mlp > 0:
            self.ln2, self.mlp = Norm(cfg), MLP(cfg)
            self.hook_resid_mid = HookPoint()  # [batch pos d_model]
            self.hook_mlp_out = HookPoint()  # [batch pos d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        resid = resid + self.hook_attn_out(self.attn(self.ln1(resid)))
        if self.mlp is not None:
            resid = self.hook_resid_mid(resid)
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid)


# Block types by `cfg.block`; Mamba and looped blocks register here in later issues.
BLOCKS: dict[str, type[nn.Module]] = {"attention": Block}


class Transformer(HookedRootModule):
    """A small GPT-style transformer whose hooks carry TransformerLens names.

    >>> model = Transformer(ModelConfig(n_layers=2, d_model=64, n_heads=4, d_vocab=32, n_ctx=16))
    >>> logits, cache = model.run_with_cache(torch.zeros(1, 8, dtype=torch.long),
    ...                                      names_filter="blocks.1.attn.hook_pattern")
    >>> cache["blocks.1.attn.hook_pattern"].shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()  # [batch pos d_model]
        if cfg.positional == "learned":
            self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
            self.hook_pos_embed = HookPoint()  # [batch pos d_model]
        self.blocks = nn.ModuleList(BLOCKS[cfg.block](cfg) for _ in range(cfg.n_layers))
        self.ln_final = Norm(cfg)
        self.unembed = None if cfg.tied_embeddings else nn.Linear(cfg.d_model, cfg.d_vocab)
        self.init_weights()
        self.setup()

    def init_weights(self) -> None:
        """Normal(0, init_std); output projections scaled by 1/sqrt(2·n_layers) as in GPT-2."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = self.cfg.init_std
            if name.endswith(("attn.out.weight", "fc_out.weight")):
                std /= math.sqrt(2 * self.cfg.n_layers)
            nn.init.normal_(p, std=std)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        self.check_tokens(tokens)
        resid = self.hook_embed(self.embed(tokens))
        if self.cfg.positional == "learned":
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            resid = resid + self.hook_pos_embed(self.pos_embed(positions)).expand_as(resid)
        for block in self.blocks:
            resid = block(resid)
        resid = self.ln_final(resid)
        return resid @ self.embed.weight.T if self.unembed is None else self.unembed(resid)

    def check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise ConfigError(f"tokens: expected an integer tensor [batch, pos], got {tuple(tokens.shape)} "
                              f"{tokens.dtype}")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ConfigError(f"tokens: sequence length {tokens.shape[1]} exceeds model.n_ctx={self.cfg.n_ctx}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.d_vocab):
            raise ConfigError(
                f"tokens: ids must lie in [0, {self.cfg.d_vocab - 1}] (model.d_vocab={self.cfg.d_vocab}); "
                f"got min {int(tokens.min())}, max {int(tokens.max())}"
            )

    # TransformerLens-shaped weight views, stacked over layers where TL stacks them.
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.weight

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"] | None:
        return self.pos_embed.weight if self.cfg.positional == "learned" else None

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.embed.weight.T if self.unembed is None else self.unembed.weight.T

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"] | float:
        return 0.0 if self.unembed is None else self.unembed.bias

    def _stack(self, name: str) -> Tensor:
        return torch.stack([getattr(b.attn, name) for b in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("W_Q")

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("W_K")

    @property
    def W_V(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("W_V")

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        return self._stack("W_O")
