"""TransformerLens tools run on our models, and our hooks run on TL's own TransformerBridge."""

import pytest
import torch
from transformer_lens import patching

from workbench.hooks.attention import attention_patterns, head_scores
from workbench.models import ModelConfig, build_model


def test_tl_activation_patching_runs_on_our_model():
    model = build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=20, n_ctx=8), seed=0).eval()
    clean = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    corrupt = clean.clone()
    corrupt[:, 3] = (corrupt[:, 3] + 1) % 20
    _, clean_cache = model.run_with_cache(clean)

    def metric(logits):
        return logits[:, -1, 0].mean()

    result = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, metric)
    assert result.shape == (2, 8)
    clean_value, corrupt_value = metric(model(clean)).item(), metric(model(corrupt)).item()
    # Patching the corrupted position at layer 0 restores the clean run exactly; other positions do nothing.
    assert result[0, 3].item() == pytest.approx(clean_value, abs=1e-5)
    assert result[0, 0].item() == pytest.approx(corrupt_value, abs=1e-5)


def test_attention_hooks_on_a_transformer_bridge(native_bridge):
    bridge = native_bridge
    tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
    patterns = attention_patterns(bridge, tokens, [1])
    assert list(patterns) == [1] and patterns[1].shape == (3, 4, 12, 12)
    torch.testing.assert_close(patterns[1].sum(-1), torch.ones(3, 4, 12))
    scores = head_scores(bridge, tokens)
    assert len(scores) == 2 * 4
    fractions = scores[["previous_token", "generalised_induction", "duplicate_token", "sink"]]
    assert ((fractions >= 0) & (fractions <= 1)).all().all()
    assert (scores.entropy > 0).all()
