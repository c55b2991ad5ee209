"""What the Model inspector reads from any model: ours (shipped, a run, a variant, a snapshot) or a Hugging Face
model directory already on disk, opened offline through TransformerLens's `TransformerBridge`, so the workbench's
views work on a GPT-2 a researcher already has. Both speak TL's hook names and `run_with_cache`."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.config import ConfigError
from workbench.device import device_of


def open_hf(path: str | Path) -> nn.Module:
    """A Hugging Face model directory (config.json, weights, tokenizer) as a TransformerBridge, offline: nothing
    is fetched from the Hub."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a Hugging Face model directory (no config.json)")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a missing file is an error here, never a download
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(str(path), device="cpu").eval()
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: cannot open it through TransformerBridge ({e})") from None


def is_bridge(model: nn.Module) -> bool:
    return type(model).__name__ == "TransformerBridge"


def hook_names(model: nn.Module) -> list[str]:
    """Every hook point a cache can hold, in the model's order."""
    return [name for name in model.hook_dict if not name.endswith(("hook_attn_in", "hook_q_input", "hook_k_input",
                                                                    "hook_v_input", "hook_mlp_in", "hook_result"))]


def prompt_tokens(model: nn.Module, text: str) -> Int[Tensor, "1 pos"]:
    """Text → token ids: in our models' token names (e.g. `BOS 4 0 3`), through its tokenizer for a bridge."""
    if not text.strip():
        raise ConfigError("prompt: empty")
    tokens = model.to_tokens(text)
    n_ctx = model.cfg.n_ctx
    if tokens.shape[1] > n_ctx:
        raise ConfigError(f"prompt: {tokens.shape[1]} tokens exceed the model's n_ctx={n_ctx}")
    return tokens


def str_tokens(model: nn.Module, tokens: Int[Tensor, "1 pos"]) -> list[str]:
    return [str(t) for t in model.to_str_tokens(tokens[0])]


@torch.no_grad()
def next_token_table(model: nn.Module, tokens: Int[Tensor, "1 pos"], pos: int = -1, k: int = 8) -> pd.DataFrame:
    """The model's `k` likeliest next tokens after position `pos`: name, probability, logit."""
    logits = model(tokens.to(device_of(model)))[0, pos].float()
    probs = logits.softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]))
    ids = top.indices.tolist()
    return pd.DataFrame({"token": [str(t) for t in model.to_str_tokens(torch.tensor(ids))],
                         "probability": top.values.tolist(), "logit": logits[ids].tolist()})


@torch.no_grad()
def activation(model: nn.Module, tokens: Int[Tensor, "1 pos"], name: str) -> Float[Tensor, "pos ..."]:
    """The activation at hook point `name` on the prompt (its one sequence)."""
    if name not in model.hook_dict:
        raise ConfigError(f"hook point {name!r} is not in this model; e.g. {', '.join(list(model.hook_dict)[:4])}")
    _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n: n == name)
    return cache[name][0].float().cpu()
