"""Outlier metrics, sink attention and W8A8 fake quantisation (hooks.outliers)."""

import pytest
import torch

from workbench.hooks.outliers import (
    activation_outliers,
    dimension_maxima,
    fake_quantize,
    kurtosis,
    quantised_weights,
    sink_attention,
    w8a8_loss,
)
from workbench.models import ModelConfig, build_model
from workbench.tasks.language import BOS, DELIMITER, SegmentedLanguage, SegmentedLanguageConfig


def test_kurtosis_is_three_for_a_gaussian_and_large_with_an_outlier():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert kurtosis(x) == pytest.approx(3.0, abs=0.05)
    x[0] = 300.0
    assert kurtosis(x) > 100


@pytest.mark.parametrize("symmetric", [False, True])
def test_fake_quantize_uses_at_most_256_levels_and_errs_by_half_a_step(symmetric):
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(1)) * 3
    q = fake_quantize(x, 8, symmetric=symmetric)
    assert q.unique().numel() <= 256
    step = (2 * x.abs().max() / 254) if symmetric else (x.max() - x.min()) / 255
    assert float((q - x).abs().max()) <= float(step) / 2 + 1e-5
    # one outlier coarsens the grid for everything else: the failure the experiment measures
    error = float((q - x).abs().mean())
    x[0] = 1000.0
    assert float((fake_quantize(x, 8, symmetric=symmetric) - x)[1:].abs().mean()) > 10 * error


def model_and_batch(attention="softmax"):
    task = SegmentedLanguage(SegmentedLanguageConfig(d_vocab=32, seq_len=32, min_segment=3, max_segment=6))
    model = build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=32, d_vocab=32,
                                    attention=attention), seed=0).eval()
    return model, task.sample(8, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("attention", ["softmax", "clipped", "gated"])
def test_outlier_metrics_and_sinks_on_each_attention(attention):
    model, batch = model_and_batch(attention)
    stats = activation_outliers(model, batch.tokens)
    assert {len(v) for v in stats.values()} == {2}
    resid = model.run_with_cache(batch.tokens)[1]["blocks.1.hook_resid_post"]
    assert stats["resid_max"][1] == pytest.approx(float(resid.abs().max()))
    sinks = (batch.tokens == BOS) | (batch.tokens == DELIMITER)
    s = sink_attention(model, batch.tokens, sinks)
    assert s["mass"].shape == s["value_norm_ratio"].shape == (2, 4)
    assert bool(((s["mass"] >= 0) & (s["mass"] <= 1 + 1e-5)).all())
    dims = dimension_maxima(model, batch.tokens, 1, sinks)
    assert dims.shape == (32,) and float(dims.max()) <= stats["resid_max"][1] + 1e-5


def test_w8a8_gap_is_small_at_16_bits_and_weights_only_touch_matrices():
    model, batch = model_and_batch()
    quantised = quantised_weights(model)
    for (name, a), b in zip(model.named_parameters(), quantised.parameters(), strict=True):
        assert torch.equal(a, b) == (a.dim() < 2), name  # biases and norms stay float
    wide, narrow = w8a8_loss(model, batch, bits=16), w8a8_loss(model, batch, bits=4)
    assert abs(wide["w8a8_gap"]) < 1e-3 < abs(narrow["w8a8_gap"])
    assert wide["float_loss"] == narrow["float_loss"]
