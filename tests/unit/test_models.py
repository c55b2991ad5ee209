import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.models import ModelConfig, build_model

ATTN_HOOKS = ["hook_q", "hook_k", "hook_v", "hook_z", "hook_attn_scores", "hook_pattern"]


def naive_attention(attn, x, bias=None):
    """Reference: per-head loops, explicit softmax — no shared code with the model's paths.
    `bias(h, q, k)` is an additive score bias (e.g. a relative-position bias)."""
    cfg = attn.cfg
    out = torch.zeros(x.shape[0], x.shape[1], cfg.d_model)
    pos = x.shape[1]
    for h in range(cfg.n_heads):
        q = x @ attn.W_Q[h] + attn.qkv.bias[h * cfg.d_head:(h + 1) * cfg.d_head]
        k = x @ attn.W_K[h] + attn.qkv.bias[(cfg.n_heads + h) * cfg.d_head:(cfg.n_heads + h + 1) * cfg.d_head]
        v = x @ attn.W_V[h] + attn.qkv.bias[(2 * cfg.n_heads + h) * cfg.d_head:(2 * cfg.n_heads + h + 1) * cfg.d_head]
        scores = q @ k.transpose(1, 2) / math.sqrt(cfg.d_head)
        if bias is not None:
            scores = scores + torch.tensor([[bias(h, i, j) for j in range(pos)] for i in range(pos)])
        mask = torch.triu(torch.ones(pos, pos, dtype=torch.bool), 1)
        scores = scores.masked_fill(mask, float("-inf"))
        out += torch.softmax(scores, -1) @ v @ attn.W_O[h]
    return out + attn.out.bias


def test_attention_equals_naive_reference():
    cfg = ModelConfig(n_layers=1, d_model=24, n_heads=3, d_vocab=11, n_ctx=9, positional="none")
    attn = build_model(cfg, seed=1).blocks[0].attn
    torch.nn.init.normal_(attn.qkv.bias)
    x = torch.randn(2, 9, 24)
    torch.testing.assert_close(attn(x), naive_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_relative_bias_attention_equals_naive_reference():
    cfg = ModelConfig(n_layers=1, d_model=24, n_heads=3, d_vocab=11, n_ctx=9, positional="relative-bias")
    attn = build_model(cfg, seed=1).blocks[0].attn
    torch.nn.init.normal_(attn.rel_bias)
    x = torch.randn(2, 7, 24)
    table = attn.rel_bias.detach()
    reference = naive_attention(attn, x, bias=lambda h, q, k: table[h, q - k + cfg.n_ctx - 1].item())
    torch.testing.assert_close(attn(x), reference, atol=1e-5, rtol=1e-5)  # the fast path (SDPA with a bias)
    _, cache = build_model(cfg, seed=1).run_with_cache(torch.zeros(1, 3, dtype=torch.long))
    assert "blocks.0.attn.hook_pattern" in cache
    grad = torch.autograd.grad(attn(x).sum(), attn.rel_bias)[0]
    assert grad[:, cfg.n_ctx - 1:cfg.n_ctx + 6].abs().sum() > 0 and grad[:, :cfg.n_ctx - 1].abs().sum() == 0  # causal


def test_looped_with_input_injection_equals_naive_reference():
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=11, n_ctx=8, loops=3, loop_input_injection=True,
                      positional="none")
    model = build_model(cfg, seed=2)
    tokens = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(0))
    x0 = model.embed(tokens)
    x = x0
    for t in range(3):  # Yang et al.: the loop's input is added back before every iteration after the first
        x = model.blocks[0].block(x + x0 if t else x)
    torch.testing.assert_close(model(tokens), model.unembed(model.ln_final(x)))


def test_shapes_and_hook_names(variant_model, tokens):
    cfg = variant_model.cfg
    logits, cache = variant_model.run_with_cache(tokens)
    assert logits.shape == (3, 10, cfg.d_vocab)
    for layer in range(cfg.n_layers):
        for name in ATTN_HOOKS:
            assert f"blocks.{layer}.attn.{name}" in cache
        assert cache[f"blocks.{layer}.attn.hook_z"].shape == (3, 10, cfg.n_heads, cfg.d_head)
        assert cache[f"blocks.{layer}.attn.hook_pattern"].shape == (3, cfg.n_heads, 10, 10)
        for name in ["hook_resid_pre", "hook_attn_out", "hook_resid_post"]:
            assert cache[f"blocks.{layer}.{name}"].shape == (3, 10, cfg.d_model)
        assert (f"blocks.{layer}.hook_resid_mid" in cache) == (cfg.d_mlp > 0)
        if cfg.d_mlp == 0:  # an attention-only layer's MLP node, for TL's graph tools, writes zeros
            assert not cache[f"blocks.{layer}.hook_mlp_out"].any()
    assert "hook_embed" in cache and "ln_final.hook_normalized" in cache
    assert ("hook_pos_embed" in cache) == (cfg.positional == "learned")


def test_fast_path_equals_explicit_path(variant_model, tokens):
    fast = variant_model(tokens)
    explicit, cache = variant_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert len(cache) == variant_model.cfg.n_layers  # proves the explicit path ran
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=0)


def test_causal_pattern_is_lower_triangular_and_normalised(variant_model, tokens):
    _, cache = variant_model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    upper = pattern.triu(1).abs().max()
    assert (upper == 0) if variant_model.cfg.mask == "causal" else (upper > 0)


def test_names_filter_caches_only_what_was_asked(variant_model, tokens):
    _, cache = variant_model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    assert list(cache.keys()) == ["blocks.1.hook_resid_post"]


def test_weight_views_have_tl_shapes(variant_model):
    cfg = variant_model.cfg
    assert variant_model.W_Q.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
    assert variant_model.W_O.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model)
    assert variant_model.W_E.shape == (cfg.d_vocab, cfg.d_model)
    assert variant_model.W_U.shape == (cfg.d_model, cfg.d_vocab)


def test_weight_views_reconstruct_q():
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=5, n_ctx=4), seed=0)
    _, cache = model.run_with_cache(torch.zeros(1, 4, dtype=torch.long), names_filter="blocks.0.attn.hook_q")
    resid = model.blocks[0].ln1(model.W_E[torch.zeros(1, 4, dtype=torch.long)] + model.W_pos[:4])
    q = torch.einsum("bpm,hmd->bphd", resid, model.blocks[0].attn.W_Q)
    torch.testing.assert_close(q + model.blocks[0].attn.qkv.bias[:16].view(2, 8), cache["blocks.0.attn.hook_q"],
                               atol=1e-5, rtol=1e-5)


def test_seeded_init_is_deterministic():
    cfg = ModelConfig(d_vocab=9, n_ctx=8)
    a, b, c = build_model(cfg, seed=3), build_model(cfg, seed=3), build_model(cfg, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.W_E, c.W_E)


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 3), 17), "outside|ids must lie"),
    (torch.full((1, 3), -1), "ids must lie"),
    (torch.zeros(1, 13, dtype=torch.long), "exceeds model.n_ctx"),
    (torch.zeros(3), "expected an integer tensor"),
])
def test_bad_tokens_raise_clear_errors(bad, message):
    model = build_model(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_vocab=17, n_ctx=12))
    with pytest.raises(ConfigError, match=message):
        model(bad)
