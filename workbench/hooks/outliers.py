"""Activation outliers, attention sinks and W8A8 fake quantisation (Bondarenko et al. 2023, "Quantizable
Transformers: Removing Outliers by Helping Attention Heads Do Nothing").

A head with nothing to update learns a "no-op": it parks its attention on a token whose value is near zero
(BOS, a delimiter). Softmax cannot give that token exactly all the weight, so training pushes the scores,
and the residual stream at the sink, towards ever larger values: a few dimensions reach hundreds while the
rest stay near one. Such a stream has a huge ∞-norm and kurtosis, and quantising it to 8 bits with one scale
per tensor wipes out the small values. Works on any model with TL hook names (`blocks.{l}.hook_resid_post`,
`blocks.{l}.hook_mlp_out`, `blocks.{l}.attn.hook_pattern`, `blocks.{l}.attn.hook_v`).
"""

from __future__ import annotations

import copy

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from workbench.hooks.attention import attention_layers, pattern_name
from workbench.tasks.base import Batch
from workbench.train import task_loss


def kurtosis(x: Tensor) -> float:
    """Pearson kurtosis E[(x − μ)⁴] / σ⁴ over every entry (3 for a Gaussian; hundreds with a few outliers)."""
    x = x.double().flatten()
    centred = x - x.mean()
    return float(centred.pow(4).mean() / centred.pow(2).mean().pow(2))


@torch.no_grad()
def activation_outliers(model, tokens: Int[Tensor, "batch pos"]) -> dict[str, list[float]]:
    """Per layer: the residual stream's (after the block) and the MLP output's ∞-norm and kurtosis."""
    names = {f"blocks.{layer}.{site}" for layer in range(model.cfg.n_layers) for site in ("hook_resid_post",
                                                                                          "hook_mlp_out")}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names, return_cache_object=False)
    out: dict[str, list[float]] = {"resid_max": [], "resid_kurtosis": [], "mlp_max": [], "mlp_kurtosis": []}
    for layer in range(model.cfg.n_layers):
        for site, key in (("hook_resid_post", "resid"), ("hook_mlp_out", "mlp")):
            act = cache[f"blocks.{layer}.{site}"]
            out[f"{key}_max"].append(float(act.abs().max()))
            out[f"{key}_kurtosis"].append(kurtosis(act))
    return out


@torch.no_grad()
def dimension_maxima(model, tokens: Int[Tensor, "batch pos"], layer: int,
                     where: Bool[Tensor, "batch pos"] | None = None) -> Float[Tensor, " d_model"]:
    """The largest |activation| of each residual dimension after block `layer`, over the positions `where`
    (default all): outliers concentrate in a few dimensions."""
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name, return_cache_object=False)
    act = cache[name].abs()
    return (act[where] if where is not None else act.flatten(0, 1)).amax(0)


@torch.no_grad()
def sink_attention(model, tokens: Int[Tensor, "batch pos"], sinks: Bool[Tensor, "batch pos"]
                   ) -> dict[str, Float[Tensor, "layer head"]]:
    """Per head: the attention mass queries put on the `sinks` (e.g. BOS and delimiters), and the mean norm of
    the head's value vectors at the sinks relative to elsewhere (a no-op head: high mass, ratio near 0)."""
    layers = attention_layers(model)
    names = {pattern_name(layer) for layer in layers} | {f"blocks.{layer}.attn.hook_v" for layer in layers}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names, return_cache_object=False)
    mass, ratio = [], []
    sink_keys = sinks[:, None, None, :].float()  # [batch 1 1 k]
    for layer in layers:
        pattern = cache[pattern_name(layer)]  # [batch head q k]
        mass.append((pattern * sink_keys).sum(-1).mean((0, 2)))
        v_norm = cache[f"blocks.{layer}.attn.hook_v"].norm(dim=-1)  # [batch pos head]
        ratio.append(v_norm[sinks].mean(0) / v_norm[~sinks].mean(0))
    return {"mass": torch.stack(mass), "value_norm_ratio": torch.stack(ratio)}


def fake_quantize(x: Tensor, bits: int = 8, symmetric: bool = False) -> Tensor:
    """Round `x` to a `bits`-bit grid with one scale for the whole tensor (min–max range): what an integer
    kernel would compute, in floating point."""
    levels = 2**bits - 1
    if symmetric:
        scale = x.abs().max().clamp_min(1e-12) / (levels // 2)
        return (x / scale).round().clamp(-(levels // 2), levels // 2) * scale
    low, high = x.min(), x.max()
    scale = (high - low).clamp_min(1e-12) / levels
    return ((x - low) / scale).round() * scale + low


# The activations an 8-bit integer model would hold: every matmul input and the residual stream itself.
# (Quantising only the matmul inputs hides the outliers behind LayerNorm, which rescales them away.)
QUANTISED_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "ln1.hook_normalized",
                   "ln2.hook_normalized", "attn.hook_z", "mlp.hook_post")


def quantised_weights(model: nn.Module, bits: int = 8) -> nn.Module:
    """A copy of `model` with every weight matrix (2-D or more) fake-quantised per tensor, symmetric."""
    quantised = copy.deepcopy(model)
    with torch.no_grad():
        for param in quantised.parameters():
            if param.dim() >= 2:
                param.copy_(fake_quantize(param, bits, symmetric=True))
    return quantised


@torch.no_grad()
def w8a8_loss(model, batch: Batch, bits: int = 8) -> dict[str, float]:
    """The task loss in float and with weights and activations fake-quantised to `bits` bits (activations
    dynamically, one range per tensor per batch), and the gap between them."""
    was_training = model.training
    model.eval()
    float_loss = float(task_loss(model, batch))
    quantised = quantised_weights(model, bits)
    model.train(was_training)
    names = [f"blocks.{layer}.{site}" for layer in range(model.cfg.n_layers) for site in QUANTISED_SITES]
    names = [name for name in [*names, "ln_final.hook_normalized"] if name in quantised.hook_dict]
    hooks = [(name, lambda act, hook: fake_quantize(act, bits)) for name in names]
    with quantised.hooks(fwd_hooks=hooks):
        quantised_loss = float(task_loss(quantised, batch))
    return {"float_loss": float_loss, "w8a8_loss": quantised_loss, "w8a8_gap": quantised_loss - float_loss}
