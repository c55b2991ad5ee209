import itertools

import pytest
import torch

from workbench.models import ModelConfig, build_model

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent

# Contract tests run over every model variant the config allows.
VARIANTS = [
    dict(positional=pos, mask=mask, norm=norm, d_mlp=d_mlp, tied_embeddings=tied)
    for pos, mask, (norm, d_mlp, tied) in itertools.product(
        ["learned", "rotary", "alibi", "relative-bias", "none"], ["causal", "bidirectional"],
        [("layer", 0, False), ("rms", 48, True), ("none", 32, False)],
    )
]


def variant_id(v: dict) -> str:
    return "-".join(f"{v[k]}" for k in ("positional", "mask", "norm")) + f"-mlp{v['d_mlp']}"


@pytest.fixture(params=VARIANTS, ids=variant_id)
def variant_model(request):
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=17, n_ctx=12, **request.param)
    return build_model(cfg, seed=0).eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 17, (3, 10), generator=torch.Generator().manual_seed(0))


class Interrupt(Exception):
    """Raised by a training callback to cut a run short, as a kill would."""


def stop_at(step):
    """A `Progress` callback that interrupts training when it logs `step`."""
    def callback(progress):
        if progress.step == step:
            raise Interrupt
    return callback


@pytest.fixture
def native_bridge():
    """TL's TransformerBridge built offline (boot_native): 2 layers, d_model 32, 4 heads, MLP 64, vocabulary 50."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16,
                                  act_fn="gelu", seed=0)
    return TransformerBridge.boot_native(cfg).eval()
