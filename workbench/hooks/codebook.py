"""Codebook features (Tamkin et al. 2023): sparse, discrete bottlenecks attached at any hook point.

A `CodebookLayer` replaces an activation a by the sum (or mean) of the k codes most cosine-similar to
LayerNorm(a). The chosen code ids pass through their own hook point, `<hook>.codebook.hook_codes`
`[batch pos group k]`, so `run_with_cache` records them and a hook there can force other codes; a itself is cached at
`<hook>.codebook.hook_input` (the hook's own name now caches the codebook's output). Gradients
reach the chosen codes (the output is made of them), and with `input_gradient` also the input, straight
through (the paper's estimator when it trains the whole model); `layer.mse` holds MSE(output,
stop-gradient(a)), the paper's reconstruction term, after every forward.

Attach by hook name on any `HookedRootModule` — ours or a TransformerLens `TransformerBridge`:
    >>> with codebooks(model, {"blocks.1.hook_mlp_out": CodebookSpec(codes=1000, k=1)}):  # doctest: +SKIP
    ...     _, cache = model.run_with_cache(tokens)
    ...     cache["blocks.1.hook_mlp_out.codebook.hook_codes"]
`attach` keeps the codebook on (its parameters join the model's state dict under
`<hook>.codebook.codes`); `detach` removes it and the model computes exactly what it did before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from workbench.config import ConfigError
from workbench.device import device_of


@dataclass(frozen=True)
class CodebookSpec:
    """What to attach at one hook point: `codes` (C) per group, `k` active at once, one group per head when
    `per_head` (the hook's activation is then `[batch pos head d_head]`, e.g. `attn.hook_z`)."""

    codes: int = 1000
    k: int = 1
    per_head: bool = False
    combine: Literal["sum", "mean"] = "sum"
    # Tamkin et al. also pass gradients straight through to the input, training the layers before. With cosine
    # selection nothing then bounds those layers' output: in our TokFSM fine-tune the MLP outputs grew until the
    # reconstruction term passed 1e4 and the live codes collapsed to a handful. Off by default.
    input_gradient: bool = False

    def check(self, where: str) -> None:
        if self.codes < 1 or self.k < 1:
            raise ConfigError(f"{where}: codebook needs codes ≥ 1 and k ≥ 1 (got codes={self.codes}, k={self.k})")
        if self.k > self.codes:
            raise ConfigError(f"{where}: k={self.k} exceeds the codebook size C={self.codes}")


class CodebookLayer(nn.Module):
    def __init__(self, d: int, spec: CodebookSpec, groups: int = 1):
        super().__init__()
        self.spec, self.d, self.groups = spec, d, groups
        self.codes = nn.Parameter(torch.randn(groups, spec.codes, d) / math.sqrt(d))  # [group code d]
        self.hook_input = HookPoint()  # what the codebook reads (the activation before it is replaced)
        self.hook_codes = HookPoint()  # [batch pos group k] ids of the chosen codes
        self.register_buffer("counts", torch.zeros(groups, spec.codes))  # firings since the last reset
        self.mse: Tensor | None = None

    def grouped(self, x: Tensor) -> Float[Tensor, "... group d"]:
        return x if self.spec.per_head else x[..., None, :]

    def choose(self, grouped: Float[Tensor, "... group d"]) -> Int[Tensor, "... group k"]:
        """The ids of the k codes most cosine-similar to LayerNorm(a), per group."""
        normed = F.normalize(F.layer_norm(grouped, (self.d,)), dim=-1)
        similarity = torch.einsum("...gd,gcd->...gc", normed, F.normalize(self.codes, dim=-1))
        # Ties (equal codes) must break the same way every run, or resumed training diverges: argmax and a
        # stable sort take the lowest index; topk does not promise to.
        if self.spec.k == 1:
            return similarity.argmax(-1, keepdim=True)
        return similarity.sort(dim=-1, descending=True, stable=True).indices[..., : self.spec.k]

    def flat_ids(self, ids: Int[Tensor, "... group k"]) -> Int[Tensor, "... group k"]:
        """Ids into all groups' codes laid end to end (group g's code c is g·C + c)."""
        return ids + torch.arange(self.groups, device=ids.device)[:, None] * self.spec.codes

    def lookup(self, ids: Int[Tensor, "... group k"]) -> Float[Tensor, "... group d"]:
        # F.embedding, not indexing: its backward sums repeated ids in a fixed order (index_put_ may not, and
        # a resumed run would drift by rounding)
        chosen = F.embedding(self.flat_ids(ids), self.codes.reshape(-1, self.d))  # [... group k d]
        return chosen.sum(-2) if self.spec.combine == "sum" else chosen.mean(-2)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d or (self.spec.per_head and x.shape[-2] != self.groups):
            want = f"[..., {self.groups}, {self.d}]" if self.spec.per_head else f"[..., {self.d}]"
            raise ConfigError(f"codebook: activation has shape {tuple(x.shape)}, this codebook reads {want}")
        grouped = self.grouped(self.hook_input(x))
        ids = self.hook_codes(self.choose(grouped))
        out = self.lookup(ids)
        self.mse = F.mse_loss(out, grouped.detach())
        if self.training:
            with torch.no_grad():
                flat = self.flat_ids(ids).flatten()
                self.counts += torch.bincount(flat, minlength=self.counts.numel()).view_as(self.counts)
        if self.spec.input_gradient:
            out = out + (grouped - grouped.detach())  # exactly `out` forward; identity gradient to the input
        return out if self.spec.per_head else out.squeeze(-2)

    @torch.no_grad()
    def init_from(self, activations: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codes to activation vectors sampled from `activations` (`[… (group) d]`): distinct vectors
        while there are enough (repeated contexts, like BOS, give identical activations), then repeats."""
        grouped = self.grouped(activations).reshape(-1, self.groups, self.d)
        for g in range(self.groups):
            pool = grouped[:, g].unique(dim=0)
            order = torch.randperm(len(pool), generator=generator)
            if len(pool) < self.spec.codes:
                extra = torch.randint(0, len(pool), (self.spec.codes - len(pool),), generator=generator)
                order = torch.cat([order, extra])
            self.codes[g] = pool[order[: self.spec.codes].to(pool.device)]

    @torch.no_grad()
    def replace_dead(self, activations: Tensor, generator: torch.Generator | None = None) -> int:
        """Codes that never fired since the last call get fresh sampled activations; returns how many."""
        dead = self.counts == 0
        if dead.any():
            fresh = CodebookLayer(self.d, self.spec, self.groups).to(self.codes.device)
            fresh.init_from(activations, generator)
            self.codes[dead] = fresh.codes[dead]
        self.counts.zero_()
        return int(dead.sum())


# --- attaching by hook name ---
def hook_point(model: nn.Module, name: str) -> HookPoint:
    points = getattr(model, "hook_dict", {})
    if name not in points:
        near = sorted(n for n in points if n.split(".")[-1] == name.split(".")[-1])[:6]
        raise ConfigError(f"hook point {name!r} does not exist in this model" +
                          (f"; e.g. {', '.join(near)}" if near else ""))
    return points[name]


def attached(model: nn.Module) -> dict[str, CodebookLayer]:
    """The codebooks attached to a model, by hook name."""
    return {name: point.codebook for name, point in getattr(model, "hook_dict", {}).items()
            if isinstance(getattr(point, "codebook", None), CodebookLayer)}


def attached_at(model: nn.Module, name: str) -> CodebookLayer:
    """The codebook at hook point `name`, or an error listing where codebooks are."""
    books = attached(model)
    if name not in books:
        raise ConfigError(f"{name}: no codebook attached here; attached: {', '.join(books) or 'none'}")
    return books[name]


def attach(model: nn.Module, name: str, spec: CodebookSpec, activations: Tensor | None = None,
           generator: torch.Generator | None = None) -> CodebookLayer:
    """Put a codebook at hook point `name`: it becomes `<name>.codebook` (parameters in the model's state
    dict), its output replaces the activation there, and `<name>.codebook.hook_codes` joins the hook points.
    The width is read from `activations` (`[batch pos …]` as at the hook; they also initialise the codes) when
    given, else from a small random batch through the model; `generator` picks which activations seed them."""
    point = hook_point(model, name)
    spec.check(name)
    if isinstance(getattr(point, "codebook", None), CodebookLayer):
        raise ConfigError(f"{name}: a codebook is already attached; detach it first")
    if activations is None:
        activations = sample_activation(model, name)
    per_head = spec.per_head
    if per_head and activations.dim() != 4:
        raise ConfigError(f"{name}: per_head needs a [batch pos head d_head] activation (e.g. attn.hook_z); "
                          f"this one is {tuple(activations.shape)}")
    layer = CodebookLayer(activations.shape[-1], spec, activations.shape[-2] if per_head else 1)
    layer.to(device_of(model))
    layer.init_from(activations, generator)
    point.add_module("codebook", layer)
    layer.handle = point.add_hook(lambda act, hook: layer(act), is_permanent=True)
    for hook in ("hook_input", "hook_codes"):
        index_hook_point(model, f"{name}.codebook.{hook}", getattr(layer, hook))
    return layer


def detach(model: nn.Module, name: str) -> None:
    point, layer = hook_point(model, name), attached_at(model, name)
    layer.handle.hook.remove()
    point.fwd_hooks = [h for h in point.fwd_hooks if h is not layer.handle]
    del point._modules["codebook"]
    for hook in ("hook_input", "hook_codes"):
        index_hook_point(model, f"{name}.codebook.{hook}", None)


@contextmanager
def codebooks(model: nn.Module, specs: dict[str, CodebookSpec]) -> Iterator[dict[str, CodebookLayer]]:
    """Attach codebooks for the duration of a `with` block; the model is restored exactly afterwards."""
    done = []
    try:
        for name, spec in specs.items():
            attach(model, name, spec)
            done.append(name)
        yield attached(model)
    finally:
        for name in reversed(done):
            detach(model, name)


def index_hook_point(model: nn.Module, name: str, point: HookPoint | None) -> None:
    """Add (or, with point None, drop) a hook point in the model's index of them: a TransformerBridge keeps
    its own registry; a HookedRootModule re-reads its module tree with `setup`."""
    registry = getattr(model, "_hook_registry", None)
    if registry is None:
        model.setup()
    elif point is None:
        registry.pop(name, None)
    else:
        point.name = name
        registry[name] = point


@torch.no_grad()
def sample_activation(model: nn.Module, name: str, tokens: Tensor | None = None) -> Tensor:
    """The activation at `name` on a small random batch (to read its width and seed codes)."""
    cfg = model.cfg
    if tokens is None:
        tokens = torch.randint(0, cfg.d_vocab, (8, min(16, cfg.n_ctx)), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n: n == name)
    return cache[name]


def codebook_mse(model: nn.Module) -> Tensor:
    """The summed reconstruction terms of every attached codebook's last forward (0 if none)."""
    terms = [layer.mse for layer in attached(model).values() if layer.mse is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())


# --- interventions ---
@contextmanager
def forced_codes(model: nn.Module, forced: dict[str, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Run with chosen codes forced: for each codebook hook name, `(where [batch pos] bool, codes)` replaces the
    ids chosen at those positions by `codes` (an id, or ids broadcastable to `[n group k]`)."""
    def force(where: Tensor, codes: Tensor):
        def hook(ids: Tensor, hook) -> Tensor:
            if where.shape != ids.shape[:2]:
                raise ConfigError(f"forced codes at {hook.name}: mask {tuple(where.shape)} does not match the "
                                  f"batch and positions {tuple(ids.shape[:2])}")
            ids = ids.clone()
            ids[where.to(ids.device)] = torch.as_tensor(codes, device=ids.device)
            return ids
        return hook

    for name, (_, codes) in forced.items():
        layer = attached_at(model, name)
        if int(torch.as_tensor(codes).max()) >= layer.spec.codes or int(torch.as_tensor(codes).min()) < 0:
            raise ConfigError(f"{name}: code ids must lie in [0, {layer.spec.codes - 1}]")
    with model.hooks(fwd_hooks=[(f"{name}.codebook.hook_codes", force(*spec)) for name, spec in forced.items()]):
        yield


def js_divergence(p: Float[Tensor, "*rest n"], q: Float[Tensor, "*rest n"]) -> Float[Tensor, "*rest"]:
    """Jensen–Shannon divergence (nats) between distributions on the last axis."""
    m = (p + q) / 2

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return (a * (a.clamp(min=1e-12).log() - b.clamp(min=1e-12).log())).sum(-1)

    return (kl(p, m) + kl(q, m)) / 2


# --- reading codes over a dataset ---
@torch.no_grad()
def code_ids(model: nn.Module, tokens: Int[Tensor, "batch pos"], sites: list[str]) -> dict[str, Tensor]:
    """The codes each attached codebook in `sites` chose at every position: `[batch pos group k]` each."""
    for site in sites:
        attached_at(model, site)
    names = [f"{site}.codebook.hook_codes" for site in sites]
    _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n: n in names)
    return {site: cache[name].cpu() for site, name in zip(sites, names, strict=True)}


def top_contexts(ids: Int[Tensor, "batch pos group k"], tokens: Int[Tensor, "batch pos"], code: int,
                 names: list[str], group: int = 0, limit: int = 10, width: int = 8) -> list[tuple[str, str]]:
    """Where `code` fires: up to `limit` contexts as (the `width` − 1 tokens before, the firing token), tokens
    written with the task's `names`."""
    contexts = []
    for b, p in (ids[:, :, group] == code).any(-1).nonzero().tolist()[:limit]:
        before = "".join(names[t] for t in tokens[b, max(0, p - width + 1): p].tolist())
        contexts.append((before, names[int(tokens[b, p])]))
    return contexts


@torch.no_grad()
def intervene(model: nn.Module, tokens: Int[Tensor, "1 pos"], site: str, position: int, code: int
              ) -> tuple[Float[Tensor, " vocab"], Float[Tensor, " vocab"]]:
    """The next-token distribution after `position`, as the model computes it and with `code` forced at `site`
    there (every group of a per-head codebook gets that code id)."""
    if not 0 <= position < tokens.shape[1]:
        raise ConfigError(f"position {position} is outside the prompt (0…{tokens.shape[1] - 1})")
    tokens = tokens[:, : position + 1].to(device_of(model))
    before = model(tokens)[0, -1].softmax(-1).cpu()
    where = torch.zeros(tokens.shape, dtype=torch.bool)
    where[0, position] = True
    with forced_codes(model, {site: (where, torch.tensor(code))}):
        after = model(tokens)[0, -1].softmax(-1).cpu()
    return before, after
