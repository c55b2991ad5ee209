"""The model config: every architectural axis of the zoo, validated with field-named errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, model_serializer, model_validator

from workbench.config import Config


class ModelConfig(Config):
    n_layers: int = Field(2, ge=1, description="number of blocks")
    d_model: int = Field(64, ge=1, description="residual stream width")
    n_heads: int = Field(4, ge=1, description="attention heads per layer")
    d_head: int | None = Field(None, ge=1, description="per-head width; default d_model // n_heads")
    d_mlp: int = Field(0, ge=0, description="MLP hidden width; 0 = attention-only")
    act: Literal["gelu", "relu", "silu"] = "gelu"
    norm: Literal["layer", "rms", "none"] = "layer"
    positional: Literal["learned", "rotary", "alibi", "none"] = "learned"
    # Room for later issues: new choices here select a function in models/attention.py.
    attention: Literal["softmax"] = "softmax"
    mask: Literal["causal", "bidirectional"] = "causal"
    block: Literal["attention"] = "attention"
    tied_embeddings: bool = False
    n_ctx: int = Field(128, ge=1, description="longest sequence the model accepts")
    d_vocab: int = Field(64, ge=2, description="vocabulary size")
    init_std: float = Field(0.02, gt=0, description="std of the normal weight init")
    rotary_base: float = Field(10000.0, gt=0)
    device: str = "cpu"
    _derived_d_head: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                    "pick d_model a multiple of n_heads or set model.d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
            self._derived_d_head = True
        if self.positional == "rotary" and self.d_head % 2:
            raise ValueError(f"model.d_head={self.d_head} must be even for rotary positions")
        return self

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

    @property
    def attn_only(self) -> bool:
        return self.d_mlp == 0
