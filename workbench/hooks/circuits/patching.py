"""Metrics, activation patching, ablations, direct logit attribution and the logit lens, on any hooked model.

Patching sweeps are TransformerLens's own (`transformer_lens.patching`); this module checks their inputs, so a
bad request fails with one clear line, and names the sweeps by what they patch:
    >>> metric = logit_diff(correct=7, wrong=3)  # doctest: +SKIP
    >>> effects = activation_patching(model, clean, corrupted, metric, "attn_head_out")  # [layer head]
Ablations replace activations by zeros, their mean over reference inputs, or reference activations of other
sequences (resampling), for as long as a `with` block lasts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import patching

from workbench.config import ConfigError
from workbench.device import device_of
from workbench.hooks.codebook import hook_point

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]

# What each sweep patches, and the axes of its result.
SWEEPS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "resid_pre": (patching.get_act_patch_resid_pre, ("layer", "pos")),
    "attn_out": (patching.get_act_patch_attn_out, ("layer", "pos")),
    "mlp_out": (patching.get_act_patch_mlp_out, ("layer", "pos")),
    "attn_head_out": (patching.get_act_patch_attn_head_out_all_pos, ("layer", "head")),
    "attn_head_out_by_pos": (patching.get_act_patch_attn_head_out_by_pos, ("layer", "pos", "head")),
    "attn_head_pattern": (patching.get_act_patch_attn_head_pattern_all_pos, ("layer", "head")),
}


# --- metrics: logits → a scalar, averaged over the batch ---
def _at(logits: Tensor, pos: int, tokens) -> Float[Tensor, " batch"]:
    ids = torch.as_tensor(tokens, device=logits.device).expand(logits.shape[0])
    return logits[torch.arange(logits.shape[0], device=logits.device), pos, ids]


def logit_diff(correct, wrong, pos: int = -1) -> Metric:
    """Logit of `correct` minus logit of `wrong` at `pos` (ids, or one per sequence)."""
    return lambda logits: (_at(logits, pos, correct) - _at(logits, pos, wrong)).mean()


def target_probability(target, pos: int = -1) -> Metric:
    return lambda logits: _at(logits.softmax(-1), pos, target).mean()


def _next_token_positions(tokens: Int[Tensor, "batch pos"], positions: Tensor | None) -> Int[Tensor, " k"]:
    """The positions whose next token a metric scores; each needs a next token, and a negative one would wrap."""
    if positions is None:
        return torch.arange(tokens.shape[1] - 1)
    pos = torch.as_tensor(positions).long().flatten()
    if len(pos) and not (int(pos.min()) >= 0 and int(pos.max()) < tokens.shape[1] - 1):
        raise ConfigError(f"positions: each must lie in [0, {tokens.shape[1] - 2}] (a position whose next token is "
                          f"in the prompt); got {pos.tolist()}")
    return pos


def next_token_loss(tokens: Int[Tensor, "batch pos"], positions: Tensor | None = None) -> Metric:
    """Cross-entropy of the next token at `positions` (default: every position but the last); lower is better."""
    pos = _next_token_positions(tokens, positions)

    def loss(logits):
        p = pos.to(logits.device)
        return F.cross_entropy(logits[:, p].flatten(0, 1), tokens.to(logits.device)[:, p + 1].flatten())
    return loss


def next_token_margin(tokens: Int[Tensor, "batch pos"], positions: Tensor | None = None) -> Metric:
    """The true next token's logit minus the mean logit, averaged over `positions` (default: all but the last)
    and the batch: a logit difference against every other token at once, so it does not saturate as
    probabilities do."""
    pos = _next_token_positions(tokens, positions)

    def margin(logits):
        p = pos.to(logits.device)
        chosen, targets = logits[:, p], tokens.to(logits.device)[:, p + 1]
        return (chosen.gather(-1, targets[..., None])[..., 0] - chosen.mean(-1)).mean()
    return margin


def kl_to(reference_logits: Float[Tensor, "batch pos d_vocab"], pos: int = -1) -> Metric:
    """KL(reference ‖ patched) of the next-token distribution at `pos` (0 when the run matches the reference)."""
    reference = reference_logits[:, pos].log_softmax(-1)

    def kl(logits):
        return F.kl_div(logits[:, pos].log_softmax(-1), reference.to(logits.device), log_target=True,
                        reduction="batchmean")
    return kl


# Metrics of a prompt's own next tokens, by name (what the dashboard offers): built from (tokens, positions).
PROMPT_METRICS: dict[str, Callable[..., Metric]] = {"next-token margin": next_token_margin,
                                                    "next-token loss": next_token_loss}


def normalised(metric: Metric, clean_value: float, corrupted_value: float) -> Metric:
    """The metric rescaled so the corrupted run scores 0 and the clean run 1."""
    span = clean_value - corrupted_value
    if span == 0:
        raise ConfigError("normalised: the metric is the same on the clean and corrupted runs; nothing to recover")
    return lambda logits: (metric(logits) - corrupted_value) / span


def check_metric(metric: Metric, logits: Tensor) -> float:
    value = metric(logits)
    if not torch.is_tensor(value) or value.dim() != 0:
        shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise ConfigError(f"metric: must return a scalar tensor (average over the batch); got {shape}")
    return float(value)


def has_attn_or_mlp(block: nn.Module) -> bool:
    """Whether a block writes through attention or an MLP, the components circuits attribute to (a Mamba block
    declares attn = mlp = None)."""
    return getattr(block, "attn", None) is not None or getattr(block, "mlp", None) is not None


def check_pair(clean: Tensor, corrupted: Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise ConfigError(f"clean and corrupted prompts must have the same shape [batch pos] (positions are "
                          f"patched one to one); got {tuple(clean.shape)} and {tuple(corrupted.shape)}")


# --- activation patching ---
@torch.no_grad()
def activation_patching(model: nn.Module, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                        metric: Metric, what: str = "resid_pre") -> Tensor:
    """The metric on the corrupted run with one activation at a time patched in from the clean run: a grid over
    `SWEEPS[what]`'s axes (e.g. `[layer pos]` for the residual stream, `[layer head]` for head outputs)."""
    if what not in SWEEPS:
        raise ConfigError(f"activation_patching: what={what!r}; choose one of {', '.join(SWEEPS)}")
    check_pair(clean, corrupted)
    device = device_of(model)
    clean, corrupted = clean.to(device), corrupted.to(device)
    logits, cache = model.run_with_cache(clean)
    check_metric(metric, logits)
    sweep, _ = SWEEPS[what]
    was_training = model.training
    model.eval()
    try:
        return sweep(model, corrupted, cache, metric)
    finally:
        model.train(was_training)


# --- ablations ---
def _check_names(model: nn.Module, names: list[str]) -> None:
    for name in names:
        hook_point(model, name)  # raises, naming the missing point and similar ones


@torch.no_grad()
def reference_activations(model: nn.Module, names: list[str], tokens: Int[Tensor, "batch pos"]) -> dict[str, Tensor]:
    _check_names(model, names)
    _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n: n in names)
    return {n: cache[n] for n in names}


@contextmanager
def ablated(model: nn.Module, names: list[str], how: Literal["zero", "mean", "resample"] = "mean",
            reference: Int[Tensor, "batch pos"] | None = None, generator: torch.Generator | None = None
            ) -> Iterator[None]:
    """Within the block, the activations at `names` are zero, their mean over `reference` sequences (per
    position), or those of randomly drawn `reference` sequences (resampling)."""
    if how not in ("zero", "mean", "resample"):
        raise ConfigError(f"ablated: how={how!r}; choose zero, mean or resample")
    _check_names(model, names)
    if how != "zero" and reference is None:
        raise ConfigError(f"ablated: how={how!r} needs reference sequences to take activations from")
    stored = {} if how == "zero" else reference_activations(model, names, reference)

    def replace(act: Tensor, hook) -> Tensor:
        if how == "zero":
            return torch.zeros_like(act)
        ref = stored[hook.name][:, : act.shape[1]]
        if how == "mean":
            return ref.mean(0, keepdim=True).expand_as(act).clone()
        rows = torch.randint(0, ref.shape[0], (act.shape[0],), generator=generator).to(ref.device)
        return ref[rows]

    with model.hooks(fwd_hooks=[(name, replace) for name in names]):
        yield


# --- direct logit attribution and the logit lens ---
def _folded(model: nn.Module) -> nn.Module:
    """A copy with the norms folded into the weights that read them, the form in which TL's cache divides
    each component by the final norm's scale and nothing else (a bridge is returned as it is)."""
    if not hasattr(model, "fold_layer_norm"):
        return model
    return copy.deepcopy(model).fold_layer_norm()


@torch.no_grad()
def direct_logit_attribution(model: nn.Module, tokens: Int[Tensor, "batch pos"], correct, wrong=None,
                             pos: int = -1) -> pd.Series:
    """What each head, each MLP and the embeddings write directly into logit(correct) − logit(wrong) at `pos`,
    through the final norm's scale on this input; averaged over the batch. With the heads' output biases ("bias")
    and the unembedding's ("unembed bias") the rows sum to the logit difference."""
    mixers = [i for i, block in enumerate(getattr(model, "blocks", [])) if not has_attn_or_mlp(block)]
    if mixers:  # their output is in no component, so the rows would not add up
        raise ConfigError(f"direct logit attribution: block {mixers[0]} has no attention or MLP (a Mamba block); "
                          "only attention and MLP outputs are attributed")
    folded = _folded(model)
    tokens = tokens.to(device_of(folded))
    logits, cache = folded.run_with_cache(tokens)
    n = folded.cfg.n_layers
    heads, head_labels = cache.stack_head_results(layer=n, pos_slice=pos, return_labels=True)
    parts, labels = [heads], list(head_labels)
    if cache.has_embed:
        parts.append(cache["hook_embed"][:, pos][None])
        labels.append("embed")
    if cache.has_pos_embed:
        parts.append(cache["hook_pos_embed"][:, pos][None])
        labels.append("pos_embed")
    for layer in range(n):
        if f"blocks.{layer}.hook_mlp_out" in cache.cache_dict and not folded.cfg.attn_only:
            parts.append(cache["mlp_out", layer][:, pos][None])
            labels.append(f"MLP{layer}")
    if hasattr(folded, "accumulated_bias"):  # the heads' output biases (an MLP's is inside its output)
        parts.append(folded.accumulated_bias(n, include_mlp_biases=False).expand_as(heads[0])[None])
        labels.append("bias")
    stack = torch.cat(parts)  # [component batch d_model]
    wrong_ids = None if wrong is None else torch.as_tensor(wrong).expand(tokens.shape[0])
    attrs = cache.logit_attrs(stack, tokens=torch.as_tensor(correct).expand(tokens.shape[0]),
                              incorrect_tokens=wrong_ids, pos_slice=pos)
    series = pd.Series(attrs.mean(-1).cpu().numpy(), index=labels)
    if torch.is_tensor(getattr(folded, "b_U", None)):  # the unembedding bias (ln_final's bias folded into it)
        bias = folded.b_U[torch.as_tensor(correct)] - (0 if wrong is None else folded.b_U[torch.as_tensor(wrong)])
        series["unembed bias"] = float(torch.as_tensor(bias).float().mean())  # one id, or one per sequence
    return series


@torch.no_grad()
def logit_lens(model: nn.Module, tokens: Int[Tensor, "batch pos"], target, pos: int = -1) -> pd.Series:
    """logit(target) at `pos` read from the residual stream after each layer, through the final norm and the
    unembedding (nostalgebraist's logit lens); the last row is the model's own logit. Averaged over the batch."""
    folded = _folded(model)
    _, cache = folded.run_with_cache(tokens.to(device_of(folded)))
    resids, labels = cache.accumulated_resid(apply_ln=True, pos_slice=pos, return_labels=True)  # [layer batch d]
    target = torch.as_tensor(target, device=resids.device).expand(resids.shape[1])  # one id, or one per sequence
    bias = folded.b_U[target] if torch.is_tensor(folded.b_U) else 0.0
    values = ((resids * folded.W_U[:, target].T).sum(-1) + bias).mean(-1)
    return pd.Series(values.cpu().numpy(), index=labels)
