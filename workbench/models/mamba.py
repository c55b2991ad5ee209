"""A hooked Mamba block (Gu & Dao 2023) in pure PyTorch: `block = "mamba"` in ModelConfig.

    resid → norm → in_proj → (x, z);  x → causal depthwise conv → SiLU → selective SSM → y;  y · SiLU(z) → out_proj

The SSM is h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,  y_t = C_t · h_t + D x_t, per channel of x with an N-dim state.
Selective: Δ, B and C are computed from each token (Δ through a low-rank projection and softplus). LTI (`mamba_selective
= False`, the S4D-like ablation): one learned Δ per channel and one B and C shared by every token, so the block is a
convolution with a fixed kernel.

The recurrence is linear, so it is an associative scan: the default (`mamba_scan = "parallel"`) composes it in
log₂(pos) vectorised steps (Hillis–Steele); `"sequential"` is the reference loop, one step per position.

Hook points (beside the attention block's `hook_resid_pre`, `hook_resid_post`):
    blocks.{l}.hook_mamba_out        [batch pos d_model]   what the block adds to the residual stream
    blocks.{l}.mamba.hook_in_proj    [batch pos 2·d_inner] x and z before the conv
    blocks.{l}.mamba.hook_conv       [batch pos d_inner]   x after the causal conv and SiLU (the SSM's input)
    blocks.{l}.mamba.hook_delta      [batch pos d_inner]   step sizes Δ (constant over pos when LTI)
    blocks.{l}.mamba.hook_B          [batch pos d_state]   input matrix B (shared when LTI)
    blocks.{l}.mamba.hook_C          [batch pos d_state]   output matrix C (shared when LTI)
    blocks.{l}.mamba.hook_state      [batch pos d_inner d_state]  the hidden state h_t
    blocks.{l}.mamba.hook_ssm_out    [batch pos d_inner]   y, before the SiLU(z) gate
A Mamba block has no attention: `attn` is None, and attention tools skip its layers (and say so).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

if TYPE_CHECKING:
    from workbench.models.config import ModelConfig


def sequential_scan(decay: Float[Tensor, "batch pos *state"], drive: Float[Tensor, "batch pos *state"]
                    ) -> Float[Tensor, "batch pos *state"]:
    """h_t = decay_t ⊙ h_{t−1} + drive_t from h_{−1} = 0, one position at a time (the reference)."""
    h, states = torch.zeros_like(drive[:, 0]), []
    for t in range(drive.shape[1]):
        h = decay[:, t] * h + drive[:, t]
        states.append(h)
    return torch.stack(states, 1)


def parallel_scan(decay: Float[Tensor, "batch pos *state"], drive: Float[Tensor, "batch pos *state"]
                  ) -> Float[Tensor, "batch pos *state"]:
    """The same recurrence as an associative scan: after round k every position has composed the 2^k steps
    ending at it, so log₂(pos) rounds of whole-tensor ops replace pos sequential steps."""
    offset = 1
    while offset < drive.shape[1]:
        drive = torch.cat([drive[:, :offset], drive[:, offset:] + decay[:, offset:] * drive[:, :-offset]], 1)
        decay = torch.cat([decay[:, :offset], decay[:, offset:] * decay[:, :-offset]], 1)
        offset *= 2
    return drive


SCANS = {"parallel": parallel_scan, "sequential": sequential_scan}


class MambaMixer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, inner, n = cfg.d_model, cfg.mamba_inner, cfg.mamba_d_state
        self.selective, self.scan = cfg.mamba_selective, SCANS[cfg.mamba_scan]
        self.dt_rank = max(1, math.ceil(d / 16))
        self.in_proj = nn.Linear(d, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, cfg.mamba_d_conv, groups=inner, padding=cfg.mamba_d_conv - 1)
        if self.selective:
            self.x_proj = nn.Linear(inner, self.dt_rank + 2 * n, bias=False)  # Δ (low rank), B, C from the token
            self.dt_proj = nn.Linear(self.dt_rank, inner)
        else:
            self.dt = nn.Parameter(torch.zeros(inner))  # softplus⁻¹ of one step size per channel
            self.B, self.C = nn.Parameter(torch.zeros(n)), nn.Parameter(torch.zeros(n))
        self.A_log = nn.Parameter(torch.zeros(inner, n))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, d)
        for name in ("in_proj", "conv", "delta", "B", "C", "state", "ssm_out"):
            self.add_module(f"hook_{name}", HookPoint())
        self.init_ssm()

    @torch.no_grad()
    def init_ssm(self) -> None:
        """Mamba's SSM init, after the model's generic one: A = −(1…N) per channel (S4D-real), step sizes
        log-uniform in [1e-3, 1e-1], D = 1; LTI's shared B and C start at N(0, 1/N)."""
        inner, n = self.A_log.shape
        self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(inner, n))
        self.D.fill_(1.0)
        for linear in (self.in_proj, self.out_proj):
            nn.init.zeros_(linear.bias)
        step = torch.exp(torch.rand(inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        inverse_softplus = step + torch.log(-torch.expm1(-step))
        if self.selective:
            self.dt_proj.bias.copy_(inverse_softplus)
        else:
            self.dt.copy_(inverse_softplus)
            self.B.normal_(0, n**-0.5)
            self.C.normal_(0, n**-0.5)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos, _ = x.shape
        xz = self.hook_in_proj(self.in_proj(x))
        u, z = xz.chunk(2, dim=-1)
        u = self.hook_conv(F.silu(self.conv(u.transpose(1, 2))[..., :pos].transpose(1, 2)))
        if self.selective:
            dt, B, C = self.x_proj(u).split([self.dt_rank, self.A_log.shape[1], self.A_log.shape[1]], dim=-1)
            delta = F.softplus(self.dt_proj(dt))
        else:
            delta = F.softplus(self.dt).expand(batch, pos, -1)
            B, C = self.B.expand(batch, pos, -1), self.C.expand(batch, pos, -1)
        delta, B, C = self.hook_delta(delta), self.hook_B(B), self.hook_C(C)
        A = -torch.exp(self.A_log)  # [inner n]
        decay = torch.exp(delta[..., None] * A)  # [batch pos inner n]
        drive = (delta * u)[..., None] * B[:, :, None, :]
        state = self.hook_state(self.scan(decay, drive))
        y = self.hook_ssm_out((state * C[:, :, None, :]).sum(-1) + self.D * u)
        return self.out_proj(y * F.silu(z))


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba mixer (no MLP, no attention)."""

    attn = mlp = None

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        from workbench.models.transformer import Norm

        self.ln1, self.mamba = Norm(cfg), MambaMixer(cfg)
        self.hook_resid_pre = HookPoint()  # [batch pos d_model]
        self.hook_mamba_out = HookPoint()  # [batch pos d_model]
        self.hook_resid_post = HookPoint()  # [batch pos d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"], attention_mask: Tensor | None = None,
                positions: Tensor | None = None) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        return self.hook_resid_post(resid + self.hook_mamba_out(self.mamba(self.ln1(resid))))


def lti_kernel(mixer: MambaMixer, length: int) -> Float[Tensor, "inner length"]:
    """The convolution kernel an LTI mixer's SSM applies: K_k = Σ_n C_n exp(kΔA)_n Δ B_n, per channel."""
    if mixer.selective:
        raise ValueError("lti_kernel: a selective mixer has no fixed kernel (Δ, B, C depend on the token)")
    delta = F.softplus(mixer.dt)[:, None]  # [inner 1]
    A = -torch.exp(mixer.A_log)  # [inner n]
    powers = torch.exp(torch.arange(length, dtype=A.dtype)[None, :, None] * (delta * A)[:, None, :])
    return (powers * (delta * mixer.B)[:, None, :] * mixer.C).sum(-1)
