"""Super weights (Yu et al. 2024, "The Super Weight in Large Language Models"): single weights whose removal
wrecks a model, and the "super activation" they write. The search is attribution, then exact ablation:

1. every weight of every matrix is scored by |w · ∂L/∂w|, the first-order change in loss when it is zeroed;
2. the top `shortlist` are zeroed one at a time and the loss measured exactly (loss ratio to the intact model);
3. for the worst, the activation it writes: the largest |w · input| over positions, against the typical residual
   entry, and where it sits.

`plant_super_weight` builds the known answer for a test: a weight whose product is cancelled by a bias, so the
model is unchanged while it is there and flooded by one residual channel once it is zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from workbench.config import ConfigError
from workbench.device import device_of


@dataclass(frozen=True)
class Weight:
    param: str  # a 2-d parameter's name, e.g. "blocks.1.mlp.fc_out.weight"
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.param}[{self.row}, {self.col}]"


def weight_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The 2-d weights a super weight can live in (embeddings included, as the paper's scan)."""
    return {name: p for name, p in model.named_parameters() if p.dim() == 2}


def attribution_shortlist(model: nn.Module, loss_fn, shortlist: int = 32) -> list[tuple[Weight, float]]:
    """The `shortlist` weights with the largest |w · ∂L/∂w| over every 2-d weight."""
    matrices = weight_matrices(model)
    model.zero_grad()
    loss_fn(model).backward()
    scores = []
    for name, p in matrices.items():
        flat = (p.detach() * p.grad).abs().flatten()
        top = flat.topk(min(shortlist, flat.numel()))
        scores += [(float(v), name, int(i) // p.shape[1], int(i) % p.shape[1]) for v, i in zip(
            top.values, top.indices, strict=True)]
    model.zero_grad()
    scores.sort(reverse=True)
    return [(Weight(name, row, col), score) for score, name, row, col in scores[:shortlist]]


@torch.no_grad()
def ablation_losses(model: nn.Module, loss_fn, weights: list[Weight]) -> pd.DataFrame:
    """Zero each weight alone and measure the loss; restore it. Sorted by the loss ratio, worst first."""
    matrices = weight_matrices(model)
    base = float(loss_fn(model))
    rows = []
    for w in weights:
        p = matrices[w.param]
        kept = p[w.row, w.col].item()
        p[w.row, w.col] = 0
        loss = float(loss_fn(model))
        p[w.row, w.col] = kept
        rows.append({"weight": str(w), "param": w.param, "row": w.row, "col": w.col, "value": kept,
                     "loss": loss, "base_loss": base, "ratio": loss / base})
    return pd.DataFrame(rows).sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def find_super_weights(model: nn.Module, loss_fn, shortlist: int = 32) -> pd.DataFrame:
    """Attribution to shortlist, then exact ablation: one row per shortlisted weight, worst first."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            candidates = attribution_shortlist(model, loss_fn, shortlist)
        table = ablation_losses(model, loss_fn, [w for w, _ in candidates])
    finally:
        model.train(was_training)
    table["attribution"] = table["weight"].map({str(w): s for w, s in candidates})
    return table


@torch.no_grad()
def super_activation(model: nn.Module, tokens: Tensor, weight: Weight) -> dict[str, float]:
    """What the weight writes: its product w · input at every position (the input is what its matrix reads,
    captured by a forward hook), the largest magnitude and where it is, against the median |entry| of the
    residual stream."""
    module = model.get_submodule(weight.param.rsplit(".", 1)[0])
    if not isinstance(module, nn.Linear | nn.Embedding):
        raise ConfigError(f"super_activation: {weight.param} is not a linear layer's or an embedding's weight")
    seen = {}

    def grab(mod, args, out):
        seen["input"] = args[0]
    handle = module.register_forward_hook(grab)
    try:
        _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n: n.endswith(
            "hook_resid_post"))
    finally:
        handle.remove()
    x = seen["input"]
    product = (x[..., weight.col] * module.weight[weight.row, weight.col]) if isinstance(module, nn.Linear) else (
        (x == weight.row).float() * module.weight[weight.row, weight.col])
    flat = product.abs().flatten()
    where = int(flat.argmax())
    typical = torch.cat([v.abs().flatten() for v in cache.cache_dict.values()]).median()
    return {"max_product": float(flat[where]), "position": where % product.shape[-1],
            "typical_residual": float(typical), "times_typical": float(flat[where] / typical.clamp(min=1e-12)),
            "channel": weight.col if isinstance(module, nn.Embedding) else weight.row}


@torch.no_grad()
def plant_super_weight(model: nn.Module, layer: int, unit: int = 0, size: float = 50.0, token: int = 0) -> Weight:
    """Plant a super weight in MLP `layer`: hidden unit `unit` is made constant (input weights 0, bias 1, its old
    output dropped) and written into one residual channel with weight ±`size`, cancelled by the output bias, so
    the model is unchanged while the weight is there. The channel and sign are those along which the unembedding
    favours `token` (pick one that is never a target, e.g. BOS) most over every other, so zeroing the weight floods
    the residual stream with a push towards that wrong token at every position. Returns the planted weight."""
    W_U = model.W_U  # [d_model vocab]
    others = torch.cat([W_U[:, :token], W_U[:, token + 1:]], 1)
    margins = torch.stack([W_U[:, token] - others.max(1).values, others.min(1).values - W_U[:, token]])  # [2 d]
    sign_index, channel = divmod(int(margins.flatten().argmax()), W_U.shape[0])
    mlp = model.blocks[layer].mlp
    mlp.fc_out.weight[:, unit] = 0
    mlp.fc_in.weight[unit] = 0
    mlp.fc_in.bias[unit] = 1
    constant = float(mlp.act(torch.ones(1))[0])
    value = size if sign_index else -size  # zeroing adds −value·constant: towards `token` along the channel
    mlp.fc_out.weight[channel, unit] = value
    mlp.fc_out.bias[channel] -= value * constant
    return Weight(f"blocks.{layer}.mlp.fc_out.weight", channel, unit)
