"""Fourier analysis of modular arithmetic (Nanda et al. 2023, "Progress measures for grokking").

A grokked model of `a + b mod p` embeds each number as cos/sin waves at a few key frequencies w_k = 2πk/p,
its MLP neurons each read one such frequency, and its logits are sums of cos(w_k(a + b − c)). The basis here
is TransformerLens's / Nanda's: the constant, then cos k and sin k for k = 1 … p//2 (cos only at k = p/2 when
p is even), each row of unit norm. Dimension names: `x` a residue 0..p-1, `basis` a basis function, `freq` a
frequency (0 = the constant), `a`, `b` the two operands, `c` an output residue.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.device import device_of


def basis_frequencies(p: int) -> Int[Tensor, " basis"]:
    """The frequency of each basis row: 0 for the constant, then k for cos k and sin k."""
    ks = [0] + [k for k in range(1, p // 2 + 1) for _ in range(1 if 2 * k == p else 2)]
    return torch.tensor(ks)


def basis_labels(p: int) -> list[str]:
    """Row names: 'const', 'cos 1', 'sin 1', …"""
    freqs = basis_frequencies(p).tolist()
    return ["const"] + [f"{'sin' if freqs[i - 1] == k else 'cos'} {k}" for i, k in enumerate(freqs) if i]


def fourier_basis(p: int) -> Float[Tensor, "basis x"]:
    """The orthonormal Fourier basis of functions on Z_p, one basis function per row."""
    x, freqs = torch.arange(p, dtype=torch.float64), basis_frequencies(p)
    is_sin = torch.tensor([i > 0 and freqs[i - 1] == freqs[i] for i in range(p)])
    angle = 2 * math.pi * freqs[:, None] * x[None, :] / p
    rows = torch.where(is_sin[:, None], angle.sin(), angle.cos())
    return (rows / rows.norm(dim=1, keepdim=True)).float()


def basis_norms(W: Float[Tensor, "x d"]) -> Float[Tensor, " basis"]:
    """The norm of each Fourier component of W (rows of `fourier_basis`: const, cos 1, sin 1, …)."""
    return (fourier_basis(W.shape[0]).to(W) @ W).norm(dim=-1)


def frequency_energy(W: Float[Tensor, "x d"]) -> Float[Tensor, " freq"]:
    """‖W‖² by frequency (cos and sin together; entry 0: the constant). Sums to ‖W‖²_F."""
    p = W.shape[0]
    coeffs = fourier_basis(p).to(W) @ W  # [basis d]
    energy = torch.zeros(p // 2 + 1, dtype=W.dtype, device=W.device)
    return energy.index_add(0, basis_frequencies(p).to(W.device), coeffs.pow(2).sum(-1))


def top_frequencies(W: Float[Tensor, "x d"], k: int) -> tuple[list[int], float]:
    """The k non-constant frequencies carrying most of ‖W‖², and the share of ‖W‖² they carry."""
    energy = frequency_energy(W)
    top = energy[1:].topk(k).indices + 1
    return sorted(top.tolist()), float(energy[top].sum() / energy.sum())


def neuron_frequency_fractions(acts: Float[Tensor, "a b neuron"]) -> Float[Tensor, "neuron freq"]:
    """The share of each neuron's variance over (a, b) explained by frequency k alone: the 2D Fourier terms
    in a, in b and in both at k (columns k = 1 … p//2; column 0 is 0). Nanda's neuron clusters."""
    p = acts.shape[0]
    F, freqs = fourier_basis(p).to(acts), basis_frequencies(p).to(acts.device)
    energy = torch.einsum("ia,jb,abn->ijn", F, F, acts).pow(2)  # [basis basis neuron]
    energy[0, 0] = 0  # the mean is not variance
    ks = torch.arange(p // 2 + 1, device=acts.device)[:, None, None]
    fi, fj = freqs[None, :, None], freqs[None, None, :]
    terms = ((fi == ks) | (fi == 0)) & ((fj == ks) | (fj == 0)) & ((fi > 0) | (fj > 0)) & (ks > 0)
    explained = torch.einsum("kij,ijn->nk", terms.to(acts), energy)
    return explained / energy.sum((0, 1))[:, None].clamp(min=1e-12)


def key_frequencies(fractions: Float[Tensor, "neuron freq"], min_fraction: float = 0.5, min_share: float = 0.05
                    ) -> list[int]:
    """The frequencies the neurons cluster on: each the one frequency that explains > `min_fraction` of the
    variance of at least `min_share` of the neurons."""
    best, key = fractions.max(-1)
    counts = torch.bincount(key[best > min_fraction], minlength=fractions.shape[-1])
    return (counts >= min_share * len(key)).nonzero().flatten().tolist()


@torch.no_grad()
def pair_grid(model: nn.Module, p: int, hook: str = "blocks.0.mlp.hook_post"
              ) -> tuple[Float[Tensor, "a b d_vocab"], Float[Tensor, "a b d"]]:
    """Logits and one hook's activation at the `=` position for every pair `a b =` (`=` is token p)."""
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], 1).to(device_of(model))
    logits, cache = model.run_with_cache(tokens, names_filter=[hook])
    return logits[:, -1].reshape(p, p, -1), cache[hook][:, -1].reshape(p, p, -1)


def key_frequency_logits(logits: Float[Tensor, "a b c"], freqs: list[int]) -> Float[Tensor, "a b c"]:
    """The part of the logits along cos(w(a + b)) and sin(w(a + b)) for the key frequencies w, for each
    output c: the terms the algorithm's cos(w(a + b − c)) lives in (Nanda's restricted logits)."""
    p = logits.shape[0]
    if not freqs:
        return torch.zeros_like(logits)
    s = 2 * math.pi * (torch.arange(p)[:, None] + torch.arange(p)[None, :]).to(logits) / p  # [a b]
    distinct = sorted({min(k % p, -k % p) for k in freqs})  # w and p − w span the same waves
    waves = torch.stack([f(k * s) for k in distinct for f in (torch.cos, torch.sin)])  # [wave a b]
    norms = waves.flatten(1).norm(dim=1)
    # sin vanishes at w = 0 and w = p/2: what is left is rounding noise, not a direction
    waves = (waves / norms[:, None, None])[norms > 1e-6 * p]
    return torch.einsum("wab,wc->abc", waves, torch.einsum("wab,abc->wc", waves, logits))


def grid_loss(logits: Float[Tensor, "a b c"], pairs: Int[Tensor, " pair"] | None = None) -> float:
    """Cross-entropy of the answer (a + b) mod p over the given pair indices a·p + b (default: all)."""
    p = logits.shape[0]
    flat = logits.reshape(p * p, -1)
    labels = (torch.arange(p)[:, None] + torch.arange(p)[None, :]).reshape(-1).to(flat.device) % p
    pairs = torch.arange(p * p) if pairs is None else pairs
    return float(torch.nn.functional.cross_entropy(flat[pairs], labels[pairs]))


def restricted_and_excluded_loss(logits: Float[Tensor, "a b c"], freqs: list[int],
                                 train_pairs: Int[Tensor, " pair"]) -> tuple[float, float]:
    """Nanda's progress measures: the loss of the key-frequency part of the logits alone (all pairs; falls when
    the circuit forms), and of the logits without it on the training pairs (rises as memorisation fades)."""
    logits = logits[..., : logits.shape[0]].double()  # outputs 0..p-1 (not '='), in double: the parts cancel
    logits = logits - logits.mean(-1, keepdim=True)
    key = key_frequency_logits(logits, freqs)
    return grid_loss(key), grid_loss(logits - key, train_pairs)
