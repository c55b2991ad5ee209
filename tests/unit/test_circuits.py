"""Circuits: patching and ablations on a hand-built model whose answers are known in closed form."""

import pytest
import torch

from workbench.config import ConfigError
from workbench.hooks.circuits import (
    ablated,
    activation_patching,
    direct_logit_attribution,
    kl_to,
    logit_diff,
    logit_lens,
    next_token_loss,
    next_token_margin,
    normalised,
    target_probability,
)
from workbench.models import ModelConfig, Transformer

V, A, B = 6, 1, 2  # vocabulary; the metric is logit(A) − logit(B) at the last position


@pytest.fixture
def model() -> Transformer:
    """One attention-only layer, identity embed/unembed, no norm or positions, q = k = 0 (uniform causal
    attention) and identity V·O: the last position's logits are e(last token) + the mean embedding so far."""
    m = Transformer(ModelConfig(n_layers=1, d_model=V, n_heads=1, d_head=V, d_mlp=0, norm="none",
                                positional="none", d_vocab=V, n_ctx=8)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embed.weight.copy_(torch.eye(V))
        m.unembed.weight.copy_(torch.eye(V))
        m.blocks[0].attn.qkv.weight[2 * V:].copy_(torch.eye(V))
        m.blocks[0].attn.out.weight.copy_(torch.eye(V))
    return m.requires_grad_(False)


def closed_form(tokens: list[int]) -> float:
    n = len(tokens)
    return (tokens[-1] == A) - (tokens[-1] == B) + (tokens.count(A) - tokens.count(B)) / n


CLEAN = [0, 1, 1, 3, 1]
CORRUPTED = [0, 2, 4, 2, 2]


def test_the_hand_built_model_computes_its_closed_form(model):
    for seq in (CLEAN, CORRUPTED):
        assert float(logit_diff(A, B)(model(torch.tensor([seq])))) == pytest.approx(closed_form(seq))


def test_residual_patching_gives_the_closed_form_answer_at_every_position(model):
    grid = activation_patching(model, torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B))
    assert grid.shape == (1, 5)
    for p in range(5):
        patched = CORRUPTED[:p] + [CLEAN[p]] + CORRUPTED[p + 1:]
        assert float(grid[0, p]) == pytest.approx(closed_form(patched), abs=1e-5)


def test_head_and_mlp_patching(model):
    clean, corrupted = torch.tensor([CLEAN]), torch.tensor([CORRUPTED])
    heads = activation_patching(model, clean, corrupted, logit_diff(A, B), "attn_head_out")
    mean_clean = (CLEAN.count(A) - CLEAN.count(B)) / 5
    assert float(heads[0, 0]) == pytest.approx((CORRUPTED[-1] == A) - (CORRUPTED[-1] == B) + mean_clean)
    mlps = activation_patching(model, clean, corrupted, logit_diff(A, B), "mlp_out")  # no MLP: nothing moves
    assert torch.allclose(mlps, torch.full((1, 5), closed_form(CORRUPTED)))


def test_ablations_zero_mean_and_resample(model):
    tokens = torch.tensor([CLEAN])
    with ablated(model, ["blocks.0.hook_attn_out"], "zero"):
        assert float(logit_diff(A, B)(model(tokens))) == pytest.approx(1.0)  # only e(last) = e(1) remains
    reference = torch.tensor([CORRUPTED, CORRUPTED])
    with ablated(model, ["blocks.0.hook_attn_out"], "mean", reference=reference):
        expected = 1 + (CORRUPTED.count(A) - CORRUPTED.count(B)) / 5
        assert float(logit_diff(A, B)(model(tokens))) == pytest.approx(expected)
    with ablated(model, ["blocks.0.hook_attn_out"], "resample", reference=reference,
                 generator=torch.Generator().manual_seed(0)):
        assert float(logit_diff(A, B)(model(tokens))) == pytest.approx(expected)  # both references are the same
    assert float(logit_diff(A, B)(model(tokens))) == pytest.approx(closed_form(CLEAN))  # hooks gone after the block


def test_metrics():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert target_probability(0)(logits) == pytest.approx(0.5)
    assert kl_to(logits)(logits) == pytest.approx(0.0, abs=1e-7)
    uniform = torch.zeros(2, 5, 7)
    assert next_token_loss(torch.randint(0, 7, (2, 5)))(uniform) == pytest.approx(float(torch.log(torch.tensor(7.0))))
    rescaled = normalised(logit_diff(0, 1), clean_value=2.0, corrupted_value=0.0)
    assert rescaled(logits) == pytest.approx(float(torch.log(torch.tensor(2.0))) / 2)


def test_bad_requests_name_the_problem(model):
    tokens = torch.tensor([CLEAN])
    with pytest.raises(ConfigError, match="same shape"):
        activation_patching(model, tokens, torch.tensor([CORRUPTED[:4]]), logit_diff(A, B))
    with pytest.raises(ConfigError, match="scalar"):
        activation_patching(model, tokens, torch.tensor([CORRUPTED]), lambda logits: logits[:, -1, 0])
    with pytest.raises(ConfigError, match="choose one of"):
        activation_patching(model, tokens, torch.tensor([CORRUPTED]), logit_diff(A, B), "neurons")
    with pytest.raises(ConfigError, match="'blocks.3.hook_attn_out' does not exist"), \
            ablated(model, ["blocks.3.hook_attn_out"], "zero"):
        pass
    with pytest.raises(ConfigError, match="needs reference"), ablated(model, ["blocks.0.hook_attn_out"], "mean"):
        pass
    with pytest.raises(ConfigError, match="nothing to recover"):
        normalised(logit_diff(A, B), 1.0, 1.0)
    with pytest.raises(ConfigError, match=r"positions: each must lie in \[0, 3\].*\[-1\]"):
        next_token_margin(tokens, torch.tensor([-1]))  # would score the last position against the first token
    with pytest.raises(ConfigError, match="positions"):
        next_token_loss(tokens, [4])  # the last position has no next token in the prompt
    mamba = Transformer(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=V, n_ctx=16,
                                    block=["attention", "mamba"]))
    with pytest.raises(ConfigError, match="block 1 has no attention or MLP"):
        direct_logit_attribution(mamba, tokens, A, B)


def test_patching_and_ablation_run_on_a_transformer_bridge(native_bridge):
    bridge = native_bridge
    g = torch.Generator().manual_seed(0)
    clean, corrupted = torch.randint(0, 50, (2, 6), generator=g), torch.randint(0, 50, (2, 6), generator=g)
    metric = logit_diff(3, 4)
    with torch.no_grad():
        clean_value, corrupted_value = float(metric(bridge(clean))), float(metric(bridge(corrupted)))
    grid = activation_patching(bridge, clean, corrupted, metric, "resid_pre")
    assert grid.shape == (2, 6)
    assert float(grid[0, -1]) != pytest.approx(corrupted_value)  # the last position's own input matters
    heads = activation_patching(bridge, clean, corrupted, metric, "attn_head_out")
    assert heads.shape == (2, 4)
    with torch.no_grad(), ablated(bridge, ["blocks.1.hook_mlp_out"], "zero"):
        assert float(metric(bridge(clean))) != pytest.approx(clean_value)


def test_direct_logit_attribution_on_the_hand_built_model(model):
    dla = direct_logit_attribution(model, torch.tensor([CLEAN]), A, B)
    assert dla["L0H0"] == pytest.approx((CLEAN.count(A) - CLEAN.count(B)) / 5)  # the mean embedding
    assert dla["embed"] == pytest.approx((CLEAN[-1] == A) - (CLEAN[-1] == B))
    assert dla.sum() == pytest.approx(closed_form(CLEAN))


def test_attributions_and_the_logit_lens_add_up_on_a_random_model():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=11, n_ctx=16,
                                positional="learned")).eval().requires_grad_(False)
    for p in m.parameters():  # biases and norm weights away from their init, so a missed one shows
        if p.dim() == 1:
            p.add_(0.1 * torch.randn_like(p))
    tokens = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    logits = m(tokens)
    dla = direct_logit_attribution(m, tokens, 3, 4)
    assert list(dla.index[:2]) == ["L0H0", "L0H1"] and {"MLP1", "bias", "unembed bias"} <= set(dla.index)
    assert dla.sum() == pytest.approx(float((logits[:, -1, 3] - logits[:, -1, 4]).mean()), abs=1e-5)
    lens = logit_lens(m, tokens, 3)
    assert len(lens) == 3 and lens.iloc[-1] == pytest.approx(float(logits[:, -1, 3].mean()), abs=1e-5)
    per_sequence = torch.tensor([3, 5, 7])  # one target per sequence, as direct logit attribution takes
    lens = logit_lens(m, tokens, per_sequence)
    assert lens.iloc[-1] == pytest.approx(float(logits[:, -1].gather(-1, per_sequence[:, None]).mean()), abs=1e-5)
    assert torch.equal(m(tokens), logits)  # the model itself was not folded


def test_circuit_figures(model):
    from workbench.viz.circuits import logit_attribution_bars, patching_heatmap

    grid = activation_patching(model, torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B))
    fig = patching_heatmap(grid, ("layer", "pos"), columns=[str(t) for t in CORRUPTED])
    heat = fig.data[0]
    assert heat.zmid == 0 and list(heat.x) == ["0 0", "1 2", "2 4", "3 2", "4 2"]  # repeated tokens stay apart
    assert heat.z[0][4] == pytest.approx(float(grid[0, 4]))
    with pytest.raises(ValueError, match="column labels"):
        patching_heatmap(grid, ("layer", "pos"), columns=["a"])
    two = torch.cat([grid, grid])
    named = patching_heatmap(two, ("layer", "pos"), columns="abcde", rows=["L0", "L1"]).data[0]
    assert list(named.x) == list("abcde") and list(named.y) == ["L0", "L1"]  # distinct labels keep no index
    with pytest.raises(ValueError, match="distinct labels"):
        patching_heatmap(two, ("layer", "pos"), rows=["L0", "L0"])
    bars = logit_attribution_bars(direct_logit_attribution(model, torch.tensor([CLEAN]), A, B)).data[0]
    assert "L0H0" in list(bars.x)
