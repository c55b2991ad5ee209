"""The model config: every architectural axis of the zoo, validated with field-named errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_serializer, model_validator

from workbench.config import Config

# Block types (models/transformer.py BLOCKS): attention (+ MLP when d_mlp > 0), an MLP alone, or a Mamba mixer.
BlockName = Literal["attention", "mlp", "mamba"]


class ModelConfig(Config):
    n_layers: int = Field(2, ge=1, description="number of blocks")
    d_model: int = Field(64, ge=1, description="residual stream width")
    n_heads: int = Field(4, ge=1, description="attention heads per layer")
    d_head: int | None = Field(None, ge=1, description="per-head width; default d_model // n_heads")
    d_mlp: int | list[int] = Field(0, description="MLP hidden width, or one per layer; 0 = no MLP (attention-only)")
    act: Literal["gelu", "relu", "silu"] = "gelu"
    norm: Literal["layer", "rms", "none"] = "layer"
    # relative-bias: a learned score bias per head and offset q − k (Markov ICL recipe; T5-style, unbucketed)
    positional: Literal["learned", "rotary", "alibi", "relative-bias", "none"] = "learned"
    # Selects a normaliser module in models/attention.py (NORMALISERS). ssmax: Scalable-Softmax (scores × s·log n,
    # learnable s per head); clipped: clip((ζ−γ)·softmax + γ, 0, 1); gated: softmax, each head's output × a sigmoid
    # gate computed from the block input (hookable as attn.hook_gate); uniform: equal weight on every visible key.
    attention: Literal["softmax", "ssmax", "clipped", "gated", "uniform"] = "softmax"
    ssmax_s: float = Field(0.43, gt=0, description="Scalable-Softmax: the initial s of every head")
    ssmax_learn_s: bool = Field(True, description="Scalable-Softmax: train s (the paper) or keep it fixed")
    clip_gamma: float = Field(-0.03, description="clipped softmax: γ, how far below 0 the softmax is stretched")
    clip_zeta: float = Field(1.0, description="clipped softmax: ζ, how far above 1 (must exceed γ)")
    # The config's default; a batch may carry its own visibility (`Batch.attention_mask`), ANDed with this.
    mask: Literal["causal", "bidirectional"] = "causal"
    # Sliding-window attention (MASFormer, Longformer): a query sees only the `window` most recent keys (itself
    # included); 0 = every key the mask allows. A list gives one per layer (a pattern, as block and d_mlp).
    window: int | list[int] = Field(0, description="keys a query may see back (0: all), or one per layer")
    block: BlockName | list[BlockName] = Field(
        "attention", description="block type, or a per-layer list repeated as a pattern over n_layers")
    mamba_d_inner: int = Field(0, ge=0, description="Mamba: inner width (0: 2 · d_model)")
    mamba_d_state: int = Field(8, ge=1, description="Mamba: SSM state size N per channel")
    mamba_d_conv: int = Field(4, ge=1, description="Mamba: causal depthwise conv width")
    mamba_selective: bool = Field(True, description="Mamba: Δ, B, C from each token (False: LTI, fixed and shared)")
    mamba_scan: Literal["parallel", "sequential"] = Field("parallel", description="Mamba: associative (log-depth) "
                                                          "scan, or the one-step-per-position reference")
    loops: int = Field(1, ge=1, description="apply each block this many times with shared weights (looped)")
    loop_input_injection: bool = Field(False, description="add a looped block's input before every iteration")
    halting: bool = Field(False, description="adaptive computation time (ACT): each position halts on its own, "
                          "within model.loops iterations (Graves 2016; Universal Transformers)")
    halt_threshold: float = Field(0.99, description="ACT: a position halts once its halting probabilities sum to "
                                  "this (1 − ε), in (0, 1)")
    halt_bias: float = Field(1.0, description="ACT: the halting unit's initial bias; 1 (Graves) halts within two "
                             "iterations at first, a negative one starts with the whole budget")
    tied_embeddings: bool = False
    n_ctx: int = Field(128, ge=1, description="longest sequence the model accepts")
    d_vocab: int = Field(64, ge=2, description="vocabulary size (token inputs and logit outputs)")
    d_input: int = Field(0, ge=0, description="0: token ids in; >0: real-valued inputs of this width, read in linearly")
    d_output: int = Field(0, ge=0, description="0: logits over d_vocab out; >0: a linear read-out of this width")
    # identity: the inputs are the residual stream (Reddy's bursty classifier: content + one-hot position)
    read_in: Literal["linear", "identity"] = Field("linear", description="how real-valued inputs enter")
    readout: list[int] = Field(default_factory=list, description="hidden widths of an MLP read-out (cfg.act "
                               "between layers) before the final linear; empty: a linear read-out")
    init_std: float = Field(0.02, gt=0, description="std of the normal weight init")
    rotary_base: float = Field(10000.0, gt=0)
    device: Literal["cpu", "cuda", "mps", "auto"] = Field("cpu", description="auto: cuda, then mps, then cpu")
    _derived_d_head: bool = PrivateAttr(False)
    _switches: dict = PrivateAttr(default_factory=dict)  # TL's runtime hook switches, set through the model

    @field_validator("d_mlp")
    @classmethod
    def _widths_not_negative(cls, value: int | list[int]) -> int | list[int]:
        if min(value if isinstance(value, list) else [value], default=0) < 0:
            raise ValueError("MLP widths must be ≥ 0 (0 = no MLP in that layer)")
        return value

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if not 0 < self.halt_threshold < 1:
            raise ValueError(f"model.halt_threshold={self.halt_threshold}: the halting threshold (1 − ε) must lie in "
                             "(0, 1)")
        if self.halting and self.loops < 2:
            raise ValueError(f"model.halting needs model.loops ≥ 2, its budget of iterations; got {self.loops}")
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                    "pick d_model a multiple of n_heads or set model.d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
            self._derived_d_head = True
        if self.clip_zeta <= self.clip_gamma:
            raise ValueError(f"model.clip_zeta={self.clip_zeta} must exceed model.clip_gamma={self.clip_gamma}: "
                             "clipping stretches the softmax to [γ, ζ] before clipping it to [0, 1]")
        for option, kind in (("ssmax_s", "ssmax"), ("ssmax_learn_s", "ssmax"), ("clip_gamma", "clipped"),
                             ("clip_zeta", "clipped")):
            if self.attention != kind and getattr(self, option) != type(self).model_fields[option].default:
                raise ValueError(f"model.{option}={getattr(self, option)} configures attention='{kind}', but "
                                 f"model.attention='{self.attention}' would ignore it; set it only with {kind} "
                                 "(in a run with variants, inside that variant's overrides)")
        if self.positional == "rotary" and self.d_head % 2:
            raise ValueError(f"model.d_head={self.d_head} must be even for rotary positions")
        if min(self.window if isinstance(self.window, list) else [self.window], default=0) < 0:
            raise ValueError(f"model.window={self.window}: a window is ≥ 1 keys, or 0 for no window")
        if self.mask != "causal" and any(self.per_layer(self.window)):
            raise ValueError(f"model.window={self.window} needs model.mask='causal': the window reaches back from "
                             "each query")
        for name, value in (("d_mlp", self.d_mlp), ("block", self.block), ("window", self.window)):
            if isinstance(value, list) and (not value or self.n_layers % len(value)):
                raise ValueError(f"model.{name}={value} has {len(value)} entries; give one per layer or a pattern "
                                 f"whose length divides model.n_layers={self.n_layers}")
        if self.tied_embeddings and (self.d_input or self.d_output):
            raise ValueError("model.tied_embeddings needs token inputs and logit outputs "
                             f"(model.d_input={self.d_input}, model.d_output={self.d_output}); set both to 0 or untie")
        if self.read_in == "identity" and self.d_input != self.d_model:
            raise ValueError(f"model.read_in='identity' needs model.d_input == model.d_model; got d_input="
                             f"{self.d_input}, d_model={self.d_model}")
        if any(width < 1 for width in self.readout):
            raise ValueError(f"model.readout={self.readout}: hidden widths must be ≥ 1")
        if self.tied_embeddings and self.readout:
            raise ValueError("model.tied_embeddings reads logits out through W_E; it cannot follow an MLP read-out "
                             f"(model.readout={self.readout})")
        mixers = [i for i in range(self.n_layers) if self.block_at(i) == "mamba" and self.d_mlp_at(i) > 0]
        if mixers:
            raise ValueError(f"model.block: layers {mixers} are 'mamba' blocks, which have no MLP, but model.d_mlp "
                             "is positive there; set d_mlp 0 in those layers (a per-layer list) or add 'mlp' blocks")
        kinds = set(self.per_layer(self.block))
        if "mamba" in kinds and "attention" not in kinds:
            for option, wanted in (("attention", "softmax"), ("positional", ("learned", "none")), ("mask", "causal")):
                if getattr(self, option) not in (wanted if isinstance(wanted, tuple) else (wanted,)):
                    raise ValueError(f"model.{option}={getattr(self, option)!r} configures attention, but every "
                                     f"layer is a Mamba or MLP block (model.block={self.block!r}); a Mamba layer is "
                                     "causal by construction and has no scores to normalise or bias")
        elif "mamba" not in kinds:
            for option in ("mamba_d_inner", "mamba_d_state", "mamba_d_conv", "mamba_selective", "mamba_scan"):
                if getattr(self, option) != type(self).model_fields[option].default:
                    raise ValueError(f"model.{option}={getattr(self, option)} configures Mamba blocks, but model."
                                     f"block={self.block!r} has none")
        empty = [i for i in range(self.n_layers) if self.block_at(i) == "mlp" and self.d_mlp_at(i) == 0]
        if empty:
            raise ValueError(f"model.block: layers {empty} are 'mlp' blocks but model.d_mlp is 0 there; "
                             "give those layers a positive d_mlp")
        return self

    def per_layer(self, value):
        """A scalar, or a list repeated as a pattern, expanded to one entry per layer."""
        values = value if isinstance(value, list) else [value]
        return [values[i % len(values)] for i in range(self.n_layers)]

    @property
    def mamba_inner(self) -> int:
        return self.mamba_d_inner or 2 * self.d_model

    def block_at(self, layer: int) -> str:
        return self.per_layer(self.block)[layer]

    def window_at(self, layer: int) -> int:
        return self.per_layer(self.window)[layer]

    def d_mlp_at(self, layer: int) -> int:
        return self.per_layer(self.d_mlp)[layer]

    @model_serializer(mode="wrap")
    def _keep_d_head_derived(self, handler):
        """A derived d_head is saved as None, so changing d_model or n_heads later re-derives it."""
        data = handler(self)
        if self._derived_d_head:
            data["d_head"] = None
        return data

    # Read by transformer_lens.patching and analysis tools.
    @property
    def n_key_value_heads(self) -> None:
        return None

    # TL's hook switches (read by its analysis tools; set with model.set_use_attn_result etc., never saved).
    @property
    def use_attn_result(self) -> bool:
        return self._switches.get("use_attn_result", False)

    @property
    def use_split_qkv_input(self) -> bool:
        return self._switches.get("use_split_qkv_input", False)

    @property
    def use_hook_mlp_in(self) -> bool:
        return self._switches.get("use_hook_mlp_in", False)

    @property
    def use_attn_in(self) -> bool:
        return False  # not offered: TL's single attention-input hook; the split one serves its tools

    @property
    def normalization_type(self) -> str | None:
        return {"layer": "LN", "rms": "RMS", "none": None}[self.norm]

    @property
    def final_rms(self) -> bool:
        return False  # ln_final is the same kind of norm as the blocks'

    @property
    def attn_only(self) -> bool:
        return all(d == 0 for d in self.per_layer(self.d_mlp))

    @property
    def attention_layers(self) -> list[int]:
        """Layers whose block has attention (hook_pattern, W_Q, …); the others have none."""
        return [i for i in range(self.n_layers) if self.block_at(i) == "attention"]
