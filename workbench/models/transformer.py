"""The hooked transformer: a TransformerLens `HookedRootModule` with TL hook names.

Dimension names used in shape annotations across workbench:
    batch    sequences in a batch            pos      token position (query side)
    k        key position                    head     attention head
    layer    block index                     d_model  residual stream width
    d_head   per-head width                  d_mlp    MLP hidden width
    d_vocab  vocabulary size
"""

from __future__ import annotations

import difflib
import math
import re

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.config import ConfigError
from workbench.device import device_of
from workbench.models.attention import Attention
from workbench.models.config import ModelConfig
from workbench.models.io import parameters_named
from workbench.models.mamba import MambaBlock, MambaMixer

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
        self.hook_scale = HookPoint()  # [batch pos 1], the divisor; computed only when something hooks it
        self.hook_normalized = HookPoint()  # [batch pos d_model]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.kind != "none" and hooked(self.hook_scale):
            return self.hook_normalized(self.explicit(x))
        return self.hook_normalized(self.normalise(x))

    def normalise(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The norm alone, without its hooks (split attention inputs norm each head's copy with it)."""
        if self.kind == "layer":
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, eps=1e-5)
        if self.kind == "rms":
            return F.rms_norm(x, x.shape[-1:], self.w, eps=1e-5)
        return x

    def explicit(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """The same norm written out, so TL's cache tools can read (or patch) its scale."""
        if self.kind == "layer":
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
        x = x / scale * self.w
        return x + self.b if self.kind == "layer" else x


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, d_mlp: int):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, d_mlp)
        self.fc_out = nn.Linear(d_mlp, cfg.d_model)
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

    @property
    def b_in(self) -> Float[Tensor, " d_mlp"]:
        return self.fc_in.bias

    @property
    def b_out(self) -> Float[Tensor, " d_model"]:
        return self.fc_out.bias


class ReadoutLayer(nn.Module):
    """One hidden layer of an MLP read-out (`cfg.readout`): linear, activation, `hook_post`."""

    def __init__(self, cfg: ModelConfig, d_in: int, d_out: int):
        super().__init__()
        self.linear, self.act = nn.Linear(d_in, d_out), ACTIVATIONS[cfg.act]
        self.hook_post = HookPoint()  # [batch pos d_out]

    def forward(self, x: Float[Tensor, "batch pos d_in"]) -> Float[Tensor, "batch pos d_out"]:
        return self.hook_post(self.act(self.linear(x)))


class Block(nn.Module):
    """Pre-norm residual block; attention-only when this layer's d_mlp = 0 (then no resid_mid, like TL)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.ln1, self.attn = Norm(cfg), Attention(cfg, layer)
        self.hook_resid_pre = HookPoint()  # [batch pos d_model]
        self.hook_attn_out = HookPoint()  # [batch pos d_model]
        self.hook_resid_post = HookPoint()  # [batch pos d_model]
        # TL's use_hook_mlp_in: the residual the MLP reads, before its norm [batch pos d_model]
        self.use_hook_mlp_in = False
        self.hook_mlp_in = HookPoint()
        # Without an MLP, hook_mlp_out still exists and writes zeros when hooked: TL's graph tools expect an MLP
        # node in every layer (its effect is then exactly 0).
        self.hook_mlp_out = HookPoint()  # [batch pos d_model]
        self.mlp = None
        if cfg.d_mlp_at(layer) > 0:
            self.ln2, self.mlp = Norm(cfg), MLP(cfg, cfg.d_mlp_at(layer))
            self.hook_resid_mid = HookPoint()  # [batch pos d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"],
                attention_mask: Bool[Tensor, "batch q k"] | None = None,
                positions: Int[Tensor, "batch pos"] | None = None) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        if self.attn.use_split_qkv_input:
            attn_out = self.attn.forward_split(resid, self.ln1, attention_mask, positions)
        else:
            attn_out = self.attn(self.ln1(resid), attention_mask, positions)
        resid = resid + self.hook_attn_out(attn_out)
        if self.mlp is not None:
            resid = self.hook_resid_mid(resid)
            mlp_in = self.hook_mlp_in(resid) if self.use_hook_mlp_in else resid
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
        elif self.use_hook_mlp_in or hooked(self.hook_mlp_out):
            mlp_in = self.hook_mlp_in(resid) if self.use_hook_mlp_in else resid
            resid = resid + self.hook_mlp_out(mlp_in * 0.0)  # zero, with a (zero) gradient path to its input
        return self.hook_resid_post(resid)


def hooked(point: HookPoint) -> bool:
    return bool(point.fwd_hooks or point.bwd_hooks)


class MLPBlock(nn.Module):
    """A residual MLP with no attention (`block = "mlp"`): attention hooks and views skip this layer."""

    attn = None

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.ln2, self.mlp = Norm(cfg), MLP(cfg, cfg.d_mlp_at(layer))
        self.hook_resid_pre = HookPoint()  # [batch pos d_model]
        self.use_hook_mlp_in, self.hook_mlp_in = False, HookPoint()
        self.hook_mlp_out = HookPoint()  # [batch pos d_model]
        self.hook_resid_post = HookPoint()  # [batch pos d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"],
                attention_mask: Tensor | None = None, positions: Tensor | None = None
                ) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        mlp_in = self.hook_mlp_in(resid) if self.use_hook_mlp_in else resid
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(mlp_in))))


# Block types by `cfg.block` (per layer).
BLOCKS: dict[str, type[nn.Module]] = {"attention": Block, "mlp": MLPBlock, "mamba": MambaBlock}


class Looped(nn.Module):
    """One block applied `loops` times with shared weights. Its hook points fire once per iteration, under
    `blocks.{l}.loop.{t}.<name>` (e.g. `blocks.0.loop.2.attn.hook_pattern`), so a cache keeps every one.

    The shared block's own hook points are taken out of the module tree; before iteration t the hook points
    of `loop[t]` are bound in their place as plain attributes, so the module tree names each hook once.
    """

    def __init__(self, block: nn.Module, loops: int, input_injection: bool, halt_threshold: float | None = None,
                 d_model: int = 0):
        super().__init__()
        self.block, self.input_injection, self.halt_threshold = block, input_injection, halt_threshold
        self.paths = [name for name, m in block.named_modules() if isinstance(m, HookPoint)]
        self.loop = nn.ModuleList(nn.Module() for _ in range(loops))
        for path in self.paths:
            *parents, leaf = path.split(".")
            del block.get_submodule(".".join(parents))._modules[leaf]
            for hooks in self.loop:
                node = hooks
                for part in parents:
                    if not hasattr(node, part):
                        node.add_module(part, nn.Module())
                    node = getattr(node, part)
                node.add_module(leaf, HookPoint())
        self.halt = None
        if halt_threshold is not None:  # adaptive computation time: a halting unit per position
            self.halt = nn.Linear(d_model, 1)
            self.hook_halt = HookPoint()  # [batch pos loops]: each iteration's halting weight (they sum to 1)
            self.hook_ponder = HookPoint()  # [batch pos]: ACT's ponder cost N + R (iterations + remainder)

        self.bind(0)

    @property
    def attn(self) -> nn.Module | None:
        return self.block.attn

    def bind(self, t: int) -> None:
        """Point the shared block's hook attributes at iteration t's hook points."""
        for path in self.paths:
            *parents, leaf = path.split(".")
            object.__setattr__(self.block.get_submodule(".".join(parents)), leaf, self.loop[t].get_submodule(path))

    def forward(self, resid: Float[Tensor, "batch pos d_model"],
                attention_mask: Tensor | None = None, positions: Tensor | None = None
                ) -> Float[Tensor, "batch pos d_model"]:
        if self.halt is not None:
            return self.forward_act(resid, attention_mask, positions)
        x0 = resid
        for t in range(len(self.loop)):
            self.bind(t)
            resid = self.block(resid + x0 if self.input_injection and t else resid, attention_mask, positions)
        return resid

    def forward_act(self, resid: Float[Tensor, "batch pos d_model"], attention_mask: Tensor | None = None,
                    positions: Tensor | None = None) -> Float[Tensor, "batch pos d_model"]:
        """Graves's ACT, per position: after iteration n a position halts with probability p_n = σ(w·h_n + b);
        it stops at the first N where p_1 + … + p_N ≥ threshold (or at the budget), and its output is
        Σ_n weight_n h_n with weight_n = p_n before N and the remainder R = 1 − Σ_{n<N} p_n at N. Halted positions
        keep being computed (others attend to them) but no longer change their output. The ponder cost N + R is
        differentiable through R; train with loss + τ·(N + R) to make positions halt early."""
        x0, budget = resid, len(self.loop)
        spent = resid.new_zeros(resid.shape[:2])  # Σ of the halting weights so far
        running = torch.ones_like(spent)
        out, ponder, weights = torch.zeros_like(resid), torch.zeros_like(spent), []
        for t in range(budget):
            self.bind(t)
            resid = self.block(resid + x0 if self.input_injection and t else resid, attention_mask, positions)
            p = torch.sigmoid(self.halt(resid)).squeeze(-1)
            stops = running * ((spent + p >= self.halt_threshold) | (t == budget - 1)).float()
            weight = stops * (1 - spent) + (running - stops) * p
            out = out + weight[..., None] * resid
            ponder = ponder + running + stops * (1 - spent)
            spent, running = spent + weight, running - stops
            weights.append(weight)
        self.hook_halt(torch.stack(weights, -1))
        self.hook_ponder(ponder)
        return out


def make_block(cfg: ModelConfig, layer: int) -> nn.Module:
    block = BLOCKS[cfg.block_at(layer)](cfg, layer)
    if cfg.loops == 1:
        return block
    return Looped(block, cfg.loops, cfg.loop_input_injection, cfg.halt_threshold if cfg.halting else None, cfg.d_model)


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
        self.cfg = cfg.model_copy()  # its own: the hook switches it carries belong to this model
        self.cfg._switches = {}
        # Token ids are embedded; real-valued inputs are read in linearly (or are the residual stream, with
        # read_in = identity). Either way hook_embed is the result.
        if not cfg.d_input:
            self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        else:
            self.embed = nn.Linear(cfg.d_input, cfg.d_model) if cfg.read_in == "linear" else nn.Identity()
        self.hook_embed = HookPoint()  # [batch pos d_model]
        if cfg.positional == "learned":
            self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
            self.hook_pos_embed = HookPoint()  # [batch pos d_model]
        self.blocks = nn.ModuleList(make_block(cfg, layer) for layer in range(cfg.n_layers))
        self.ln_final = Norm(cfg)
        widths = [cfg.d_model, *cfg.readout]
        self.readout = nn.ModuleList(ReadoutLayer(cfg, a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.unembed = None if cfg.tied_embeddings else nn.Linear(widths[-1], cfg.d_output or cfg.d_vocab)
        self.init_weights()
        self.setup()

    def init_weights(self) -> None:
        """Normal(0, init_std); output projections scaled by 1/sqrt(2·n_layers) as in GPT-2."""
        for name, p in self.named_parameters():
            # An MLP read-out keeps PyTorch's fan-in init: at std 0.02 a deep head would shrink its input ~5× a layer.
            # So does a Mamba mixer, as in the reference implementation (its SSM parameters: `init_ssm`).
            if p.dim() < 2 or name.startswith("readout.") or ".mamba." in name:
                continue
            std = self.cfg.init_std
            if name.endswith(("attn.out.weight", "fc_out.weight", "mamba.out_proj.weight")):
                std /= math.sqrt(2 * self.cfg.n_layers)
            nn.init.normal_(p, std=std)
        for name, p in self.named_parameters():
            if name.endswith(".bias") and not name.startswith("readout.") and ".mamba." not in name:
                nn.init.zeros_(p)
        for module in self.modules():  # Mamba's A, Δ and D have inits of their own
            if isinstance(module, MambaMixer):
                module.init_ssm()
            if isinstance(module, Looped) and module.halt is not None:
                nn.init.constant_(module.halt.bias, self.cfg.halt_bias)

    def reinit(self, prefixes: tuple[str, ...]) -> None:
        """Give the parameters whose names start with `prefixes` fresh values, drawn as at construction
        (from the global RNG, so a run that resumes draws the same ones)."""
        chosen = parameters_named(self, prefixes, "reinit:")
        fresh = type(self)(self.cfg).state_dict()
        with torch.no_grad():
            for name, p in chosen.items():
                p.copy_(fresh[name])

    @property
    def device(self) -> torch.device:
        return device_of(self)

    def forward(
        self, input: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_input"],
        attention_mask: Bool[Tensor, "batch q k"] | None = None,
        positions: Int[Tensor, "batch pos"] | None = None,
    ) -> Float[Tensor, "batch pos d_out"]:
        """Token ids (d_input = 0) or real-valued inputs → logits [.. d_vocab] or read-out [.. d_output].
        `attention_mask[b, q, k]` says which keys query q may see, on top of the config's causal mask;
        `positions[b, p]` gives each token's position index (default 0, 1, …; set-based prompts share them)."""
        self.check_input(input, attention_mask, positions)
        resid = self.hook_embed(self.embed(input))
        if self.cfg.positional == "learned":
            index = torch.arange(input.shape[1], device=input.device) if positions is None else positions
            resid = resid + self.hook_pos_embed(self.pos_embed(index).expand_as(resid))  # TL's shape
        for block in self.blocks:
            resid = block(resid, attention_mask, positions)
        return self.read_out(resid)

    def read_out(self, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_out"]:
        """Final norm, the MLP read-out if any, then logits or the linear read-out: what `forward` applies to
        the last residual stream (apply it to an earlier one, e.g. each iteration of a looped block)."""
        x = self.ln_final(resid)
        for layer in self.readout:
            x = layer(x)
        return x @ self.embed.weight.T if self.unembed is None else self.unembed(x)

    def with_loops(self, loops: int) -> Transformer:
        """This model with its looped blocks applied `loops` times (the same weights: hook points carry none),
        e.g. to test whether a looped model extrapolates to more iterations than it was trained with."""
        other = Transformer(self.cfg.model_copy(update={"loops": loops})).to(self.device)
        state = self.state_dict()
        if (self.cfg.loops > 1) != (loops > 1):  # a looped block keeps its weights under blocks.{l}.block.
            pattern = re.compile(r"^(blocks\.\d+\.)block\.") if loops == 1 else re.compile(r"^(blocks\.\d+\.)")
            state = {pattern.sub(r"\1" if loops == 1 else r"\1block.", key): value for key, value in state.items()}
        other.load_state_dict(state)
        return other.train(self.training)

    def check_input(self, input: Tensor, attention_mask: Tensor | None = None, positions: Tensor | None = None
                    ) -> None:
        cfg = self.cfg
        if cfg.d_input:
            if input.dim() != 3 or input.shape[-1] != cfg.d_input or not input.is_floating_point():
                raise ConfigError(f"inputs: expected a float tensor [batch, pos, {cfg.d_input}] "
                                  f"(model.d_input={cfg.d_input}), got {tuple(input.shape)} {input.dtype}")
        else:
            self.check_tokens(input)
        if input.shape[1] > cfg.n_ctx:
            raise ConfigError(f"inputs: sequence length {input.shape[1]} exceeds model.n_ctx={cfg.n_ctx}")
        want = (input.shape[0], input.shape[1], input.shape[1])
        if attention_mask is not None and (attention_mask.dtype != torch.bool or tuple(attention_mask.shape) != want):
            raise ConfigError(f"attention_mask: expected a bool tensor {list(want)} [batch q k], "
                              f"got {tuple(attention_mask.shape)} {attention_mask.dtype}")
        if positions is not None and (positions.is_floating_point() or tuple(positions.shape) != want[:2]
                                      or (positions.numel() and not 0 <= int(positions.min()) <= int(positions.max())
                                          < cfg.n_ctx)):
            raise ConfigError(f"positions: expected integer indices in [0, {cfg.n_ctx - 1}] shaped {list(want[:2])} "
                              f"[batch pos], got {tuple(positions.shape)} {positions.dtype}")

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
        """[d_vocab d_model] for tokens; [d_input d_model] for a real-valued read-in (TL's orientation)."""
        if self.cfg.d_input and self.cfg.read_in == "identity":
            return torch.eye(self.cfg.d_model, device=self.device)
        return self.embed.weight.T if self.cfg.d_input else self.embed.weight

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"] | None:
        return self.pos_embed.weight if self.cfg.positional == "learned" else None

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        if self.cfg.readout:
            raise ConfigError(f"W_U: the read-out is an MLP (model.readout={self.cfg.readout}), not one matrix "
                              "from the residual stream; use model.read_out(resid)")
        return self.embed.weight.T if self.unembed is None else self.unembed.weight.T

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"] | float:
        return 0.0 if self.unembed is None else self.unembed.bias

    def _stack(self, name: str) -> Tensor:
        missing = [i for i, b in enumerate(self.blocks) if b.attn is None]
        if missing:
            raise ConfigError(f"{name}: layers {missing} have no attention (model.block={self.cfg.block}); use "
                              f"model.blocks[l].attn.{name} for the layers with attention, {self.cfg.attention_layers}")
        return torch.stack([getattr(b.attn, name) for b in self.blocks])

    def _stack_mlp(self, name: str) -> Tensor:
        mlps = [self.inner(layer).mlp for layer in range(self.cfg.n_layers)]
        if any(m is None for m in mlps) or len({m.fc_in.out_features for m in mlps}) > 1:
            raise ConfigError(f"{name}: the MLPs do not stack (model.d_mlp={self.cfg.d_mlp}); use "
                              f"model.inner(l).mlp.{name} per layer")
        return torch.stack([getattr(m, name) for m in mlps])

    def inner(self, layer: int) -> nn.Module:
        """Block `layer` itself (a looped block's shared weights live in `.block`)."""
        return getattr(self.blocks[layer], "block", self.blocks[layer])

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

    @property
    def b_Q(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("b_Q")

    @property
    def b_K(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("b_K")

    @property
    def b_V(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("b_V")

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("b_O")

    @property
    def OV(self) -> FactoredMatrix:
        """[layer head d_model d_model]"""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """[layer head d_model d_model]"""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack_mlp("W_in")

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        return self._stack_mlp("b_in")

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stack_mlp("W_out")

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        return self._stack_mlp("b_out")

    # --- what TransformerLens's ActivationCache and analysis tools ask of a model ---
    def run_with_cache(self, *args, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs):
        """TL's run_with_cache, returning an `ActivationCache` (`cache["pattern", 0]`, `decompose_resid`,
        `stack_head_results`, `logit_attrs` …); `return_cache_object=False` gives the plain dict."""
        self.check_hook_names(kwargs.get("names_filter"))
        out, cache = super().run_with_cache(*args, remove_batch_dim=remove_batch_dim, **kwargs)
        return out, ActivationCache(cache, self, has_batch_dim=not remove_batch_dim) if return_cache_object else cache

    @torch.no_grad()
    def generate(self, tokens: Int[Tensor, "batch pos"], new_tokens: int) -> Int[Tensor, "batch pos_plus_new"]:
        """Greedy (argmax) continuation by `new_tokens` tokens; no KV cache, as the models and chains are small."""
        if tokens.shape[1] + new_tokens - 1 > self.cfg.n_ctx:  # the last new token is written, never read
            raise ConfigError(f"generate: {tokens.shape[1]} prompt tokens + {new_tokens} new need the model to read "
                              f"{tokens.shape[1] + new_tokens - 1}, beyond its n_ctx={self.cfg.n_ctx}")
        for _ in range(new_tokens):
            tokens = torch.cat([tokens, self(tokens)[:, -1].argmax(-1, keepdim=True)], 1)
        return tokens

    def check_hook_names(self, names: str | list[str] | None) -> None:
        """Refuse hook names this model lacks: TL's names_filter would silently cache nothing. On a layer that is
        a Mamba block, an attention or MLP hook gets an error that says so."""
        if not isinstance(names, (str, list, tuple)):
            return  # None (everything) or a predicate
        for name in [names] if isinstance(names, str) else names:
            if name in self.hook_dict:
                continue
            layer = re.match(r"blocks\.(\d+)\.", name)
            if layer and int(layer[1]) < self.cfg.n_layers and self.cfg.block_at(int(layer[1])) != "attention":
                kind = self.cfg.block_at(int(layer[1]))
                own = sorted(n for n in self.hook_dict if n.startswith(layer[0]))
                raise ConfigError(f"hook {name!r}: layer {layer[1]} is a {kind!r} block, which has no such hook; "
                                  f"its hooks: {', '.join(own)}")
            close = difflib.get_close_matches(name, list(self.hook_dict), n=3)
            raise ConfigError(f"hook {name!r}: this model has no such hook point"
                              + (f"; did you mean {', '.join(close)}?" if close else ""))

    def set_use_attn_result(self, use: bool) -> None:
        """Compute each head's output separately through `attn.hook_result` (TL's switch; off by default)."""
        self._switch("use_attn_result", use, attention=True)

    def set_use_split_qkv_input(self, use: bool) -> None:
        """Give each head's q, k, v input its own hook point, `attn.hook_{q,k,v}_input` (TL's switch)."""
        self._switch("use_split_qkv_input", use, attention=True)

    def set_use_hook_mlp_in(self, use: bool) -> None:
        """Run the MLP's input through `hook_mlp_in` (TL's switch)."""
        self._switch("use_hook_mlp_in", use, attention=False)

    def set_use_attn_in(self, use: bool) -> None:
        if use:
            raise ConfigError("use_attn_in is not offered; set_use_split_qkv_input gives each head's input a hook")

    def _switch(self, name: str, use: bool, attention: bool) -> None:
        self.cfg._switches[name] = bool(use)
        for layer in range(self.cfg.n_layers):
            target = self.inner(layer).attn if attention else self.inner(layer)
            if target is not None:
                setattr(target, name, bool(use))

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
                         ) -> Float[Tensor, " d_model"]:
        """The biases written into the residual stream before block `layer` (into its MLP with `mlp_input`)."""
        total = torch.zeros(self.cfg.d_model, device=self.device)
        for i in range(layer + 1 if mlp_input else layer):
            block = self.inner(i)
            if block.attn is not None:
                total = total + block.attn.b_O
            if include_mlp_biases and block.mlp is not None and i < layer:
                total = total + block.mlp.b_out
        return total

    @torch.no_grad()
    def fold_layer_norm(self) -> Transformer:
        """Fold every norm's weight (and bias) into the weights that read its output, leaving w = 1, b = 0: the
        same function, in the form TL's cache tools assume (`apply_ln=True` divides by the scale only)."""
        if self.cfg.tied_embeddings:
            raise ConfigError("fold_layer_norm: model.tied_embeddings=true; ln_final cannot fold into W_E")
        if self.cfg.norm == "none":
            return self

        def fold(norm: Norm, *readers: nn.Linear) -> None:
            for reader in readers:
                if norm.kind == "layer":
                    reader.bias += reader.weight @ norm.b
                reader.weight *= norm.w
            if norm.kind == "layer":
                norm.b.zero_()
            norm.w.fill_(1.0)

        for layer in range(self.cfg.n_layers):
            block = self.inner(layer)
            if block.attn is not None:  # a gated attention's gate reads the same normed input as q, k, v
                fold(block.ln1, block.attn.qkv, *([block.attn.gate] if hasattr(block.attn, "gate") else []))
            if block.mlp is not None:
                fold(block.ln2, block.mlp.fc_in)
        fold(self.ln_final, self.readout[0].linear if len(self.readout) else self.unembed)
        return self

    def tokens_to_residual_directions(self, tokens) -> Float[Tensor, "... d_model"]:
        """Each token's unembedding direction (a column of W_U); names are looked up in `token_names`."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        ids = torch.as_tensor(tokens, device=self.device)
        return self.W_U[:, ids].movedim(0, -1)

    # Tokens as people read them: `token_names` (set by the loaders from the task; ids as text otherwise).
    token_names: list[str] | None = None

    def names(self) -> list[str]:
        return self.token_names or [str(i) for i in range(self.cfg.d_vocab)]

    def to_str_tokens(self, tokens: Int[Tensor, "... pos"] | list[int]) -> list:
        """Token ids → their names (a list, or a list per sequence for a batch)."""
        names, ids = self.names(), torch.as_tensor(tokens)
        return [names[i] for i in ids.tolist()] if ids.dim() <= 1 else [self.to_str_tokens(row) for row in ids]

    def to_single_token(self, name: str) -> int:
        names = self.names()
        if name not in names:
            raise ConfigError(f"token {name!r} is not one of this model's tokens: {' '.join(names)}")
        return names.index(name)

    def to_tokens(self, text: str, prepend_bos: bool = True) -> Int[Tensor, "1 pos"]:
        """Text written in token names → ids `[1 pos]`: space-separated names, or names run together (longest
        first, e.g. TokFSM digits); a leading BOS (a token named "BOS") unless `prepend_bos` is False."""
        names = self.names()
        by_length = sorted(names, key=len, reverse=True)
        ids, rest = [], text.strip()
        while rest:
            match = next((n for n in by_length if n and rest.startswith(n)), None)
            if match is None:
                raise ConfigError(f"to_tokens: cannot read {rest[:20]!r} as tokens; this model's tokens are "
                                  f"{' '.join(names)}")
            ids.append(names.index(match))
            rest = rest[len(match):].lstrip()
        if prepend_bos and "BOS" in names and (not ids or ids[0] != names.index("BOS")):
            ids.insert(0, names.index("BOS"))
        return torch.tensor([ids], device=self.device)

