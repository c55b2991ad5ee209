"""Attention variants (Scalable-Softmax, clipped, gated) against a naive per-head loop; the online softmax."""

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.hooks.attention import attention_patterns
from workbench.hooks.circuits import activation_patching, logit_diff
from workbench.models import ModelConfig, Transformer, build_model
from workbench.models.attention import ScalableSoftmax, online_softmax, safe_softmax

VARIANTS = ["softmax", "ssmax", "clipped", "gated", "uniform"]


def make(attention: str, **overrides) -> Transformer:
    torch.manual_seed(0)
    fields = {"n_layers": 2, "d_model": 24, "n_heads": 3, "d_mlp": 0, "d_vocab": 13, "n_ctx": 16,
              "positional": "none", "attention": attention, "init_std": 0.3}
    cfg = ModelConfig(**(fields | overrides))
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # biases and s away from their init, so a missed one shows
                p.add_(0.2 * torch.randn_like(p).abs())
    return model


def naive_attention(attn, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """One sequence, one head at a time, written from the papers' formulas."""
    pos = x.shape[0]
    causal = torch.ones(pos, pos, dtype=torch.bool).tril()
    out = attn.b_O.clone().expand(pos, -1).clone()
    for h in range(cfg.n_heads):
        q, k, v = (x @ attn.W_Q[h] + attn.b_Q[h], x @ attn.W_K[h] + attn.b_K[h], x @ attn.W_V[h] + attn.b_V[h])
        scores = q @ k.T / math.sqrt(cfg.d_head)
        if cfg.attention == "ssmax":  # × s · log(number of keys seen)
            scores = scores * attn.normalise.s[h] * torch.arange(1, pos + 1).float().log()[:, None]
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        if cfg.attention == "uniform":  # 1/(keys seen), scores unused
            pattern = causal.float() / torch.arange(1, pos + 1)[:, None]
        if cfg.attention == "clipped":
            pattern = ((cfg.clip_zeta - cfg.clip_gamma) * pattern + cfg.clip_gamma).clamp(0, 1)
        z = pattern @ v
        if cfg.attention == "gated":
            z = z * torch.sigmoid(x @ attn.gate.weight[h] + attn.gate.bias[h])[:, None]
        out = out + z @ attn.W_O[h]
    return out


@pytest.mark.parametrize("attention", VARIANTS)
def test_each_variant_equals_a_naive_per_head_loop(attention):
    model = make(attention)
    attn, cfg = model.blocks[0].attn, model.cfg
    x = torch.randn(2, 9, cfg.d_model, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = attn(x)
        for b in range(2):
            assert torch.allclose(ours[b], naive_attention(attn, x[b], cfg), atol=1e-5), attention


@pytest.mark.parametrize("attention", VARIANTS)
def test_hooks_and_tl_patching_run_on_each_variant(attention):
    model = make(attention)
    g = torch.Generator().manual_seed(2)
    clean, corrupted = torch.randint(0, 13, (2, 7), generator=g), torch.randint(0, 13, (2, 7), generator=g)
    patterns = attention_patterns(model, clean, [0, 1])
    assert patterns[1].shape == (2, 3, 7, 7) and bool((patterns[1] >= 0).all())
    grid = activation_patching(model, clean, corrupted, logit_diff(1, 2), "attn_head_out")
    assert grid.shape == (2, 3) and torch.isfinite(grid).all()
    _, cache = model.run_with_cache(clean)
    assert ("blocks.0.attn.hook_gate" in cache.cache_dict) == (attention == "gated")


def test_the_default_and_gated_keep_the_sdpa_fast_path():
    paths = {a: make(a).blocks[0].attn.pattern_needed() for a in VARIANTS}
    assert paths == {"softmax": False, "gated": False, "ssmax": True, "clipped": True, "uniform": True}


def test_ssmax_keeps_attention_focused_as_the_context_grows():
    """DESIGN §3: one key at logit 3, the rest at −2, s = 0.43."""
    ssmax = ScalableSoftmax(ModelConfig(n_heads=1, ssmax_s=0.43))
    expected = {10: (0.943, 0.940), 100: (0.600, 0.995), 1000: (0.129, 0.9996), 10000: (0.015, 1.000)}
    for n, (softmax_max, ssmax_max) in expected.items():
        scores = torch.full((1, 1, 1, n), -2.0)
        scores[..., 0] = 3.0
        assert float(scores.softmax(-1)[..., 0]) == pytest.approx(softmax_max, abs=6e-4)
        assert float(ssmax(scores).detach()[..., 0]) == pytest.approx(ssmax_max, abs=6e-4)
    # The closed form the ssmax experiment reports gives the same numbers as the module.
    from workbench.hooks.ssmax import max_weight_table

    table = max_weight_table(list(expected))
    assert table.softmax.tolist() == pytest.approx([v[0] for v in expected.values()], abs=6e-4)
    assert table.ssmax.tolist() == pytest.approx([v[1] for v in expected.values()], abs=6e-4)


def test_the_online_softmax_equals_softmax_in_fewer_passes():
    x = 30 * torch.randn(3, 100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    online, passes = online_softmax(x)
    assert torch.allclose(online, torch.softmax(x, -1), atol=1e-6, rtol=0)
    assert passes == {"reads": 2.0, "writes": 1.0}
    assert safe_softmax(x)[1]["reads"] == 3.0
    masked = x.clone()
    masked[:, :50_000] = float("-inf")  # whole leading chunks masked: the running max starts at -inf
    assert torch.allclose(online_softmax(masked)[0], torch.softmax(masked, -1), atol=1e-6, rtol=0)


def test_clipping_needs_zeta_above_gamma():
    with pytest.raises(ConfigError, match="clip_zeta=-0.1 must exceed model.clip_gamma=-0.03"):
        ModelConfig.parse({"attention": "clipped", "clip_zeta": -0.1}, where="model")


def test_the_set_mask_and_positions_by_hand():
    from workbench.tasks.base import set_prompt

    segments = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 0]])  # prefix (2), member 1 (2), member 2 (3), suffix (1)
    visible, positions = set_prompt(segments)
    P, M1, M2, S = [0, 1], [2, 3], [4, 5, 6], [7]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for q in range(8):
        for k in range(8):
            same_member = any(q in m and k in m for m in (M1, M2))
            expected[q, k] = k in P or same_member or q in P or q in S or (k in S and q in S)
    causal = torch.ones(8, 8, dtype=torch.bool).tril()  # the mask is ANDed with the model's causal one
    assert torch.equal(visible[0] & causal, expected & causal)
    assert positions[0].tolist() == [0, 1, 2, 3, 2, 3, 4, 5]  # members restart after the prefix; the suffix
    # continues after the longest member


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi", "relative-bias"])
def test_set_prompting_makes_the_output_independent_of_the_members_order(positional):
    from workbench.tasks.base import set_prompt

    model = make("softmax", positional=positional)
    prefix, members, suffix = [5, 6], [[1, 2], [3, 4, 7], [8]], [9, 10]
    outputs, plain = [], []
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        tokens = torch.tensor([prefix + sum((members[i] for i in order), []) + suffix])
        segments = torch.tensor([[0] * 2 + sum(([n + 1] * len(members[i]) for n, i in enumerate(order)), [])
                                 + [0] * 2])
        visible, positions = set_prompt(segments)
        with torch.no_grad():
            outputs.append(model(tokens, attention_mask=visible, positions=positions)[0, -2:])
            plain.append(model(tokens)[0, -2:])
    for other in outputs[1:]:
        assert torch.allclose(outputs[0], other, atol=1e-5)
    assert max(float((other - plain[0]).abs().max()) for other in plain[1:]) > 1e-3  # without it, order matters


def test_set_prompts_refuse_overlapping_members():
    from workbench.tasks.base import set_prompt

    with pytest.raises(ConfigError, match="split by another member"):
        set_prompt(torch.tensor([[0, 1, 2, 1, 0]]))
    with pytest.raises(ConfigError, match="shared tokens between the set's members"):
        set_prompt(torch.tensor([[0, 1, 0, 2, 0]]))
    with pytest.raises(ConfigError, match="positions: expected integer indices in"):
        make("softmax")(torch.zeros(1, 3, dtype=torch.long), positions=torch.tensor([[0, 1, 16]]))


def test_order_sensitivity_with_and_without_the_set_mask():
    from workbench.hooks.order import order_sensitivity

    model = make("softmax", positional="rotary").double()
    g = torch.Generator().manual_seed(3)
    prefix, suffix = torch.zeros(2, 1, dtype=torch.long), torch.randint(1, 13, (2, 2), generator=g)
    members = [torch.randint(1, 13, (2, 3), generator=g) for _ in range(3)]
    with_set = order_sensitivity(model, prefix, members, suffix, set_mask=True)
    plain = order_sensitivity(model, prefix, members, suffix, set_mask=False)
    assert list(with_set.order) == ["0 1 2", "0 2 1", "1 0 2", "1 2 0", "2 0 1", "2 1 0"]
    assert with_set.max_logit_change.max() < 1e-10 and plain.max_logit_change.iloc[1:].min() > 1e-4
    assert plain.max_logit_change.iloc[0] == 0 and (plain.mean_kl.iloc[1:] > 0).all()


@pytest.mark.parametrize("attention", VARIANTS)
def test_each_variant_trains_without_nan_gradients(attention):
    model = make(attention).train()
    tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(4))
    model(tokens).logsumexp(-1).mean().backward()  # causal masking puts -inf in every row but the last
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if attention == "ssmax":
        assert model.blocks[0].attn.normalise.s.grad.abs().sum() > 0


@pytest.mark.parametrize("learn", [True, False])
def test_ssmax_s_is_trained_only_when_asked(learn):
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10, attention="ssmax",
                                    ssmax_learn_s=learn), seed=0)
    normalise = model.blocks[0].attn.normalise
    assert ("blocks.0.attn.normalise.s" in dict(model.named_parameters())) == learn
    assert "blocks.0.attn.normalise.s" in model.state_dict()  # saved either way
    tokens = torch.randint(0, 10, (4, 8), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(tokens).logsumexp(-1).mean().backward()
    optimizer.step()
    assert torch.equal(normalise.s, torch.full((2,), 0.43)) != learn


def test_uniform_attention_weighs_every_visible_key_equally_and_leaves_q_and_k_untrained():
    model = make("uniform")
    tokens = torch.randint(0, 13, (2, 6), generator=torch.Generator().manual_seed(0))
    pattern = attention_patterns(model, tokens, [0])[0]
    assert torch.allclose(pattern, torch.ones(6, 6).tril() / torch.arange(1, 7)[:, None])
    model(tokens).sum().backward()
    qk = 2 * model.cfg.n_heads * model.cfg.d_head  # the fused projection's q and k rows
    grad = model.blocks[0].attn.qkv.weight.grad
    assert float(grad[:qk].abs().max()) == 0 and float(grad[qk:].abs().max()) > 0


def test_a_sliding_window_hides_keys_beyond_it_on_both_paths_and_per_layer():
    model = make("softmax", window=[3, 0], n_ctx=16)
    tokens = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(4))
    patterns = attention_patterns(model, tokens, [0, 1])
    q, k = torch.arange(9)[:, None], torch.arange(9)[None, :]
    assert (patterns[0][..., (q - k >= 3) | (k > q)] == 0).all()  # layer 0 sees the last 3 keys only
    assert (patterns[0][..., (q - k < 3) & (k <= q)] > 0).all()
    assert (patterns[1][..., q - k >= 3][..., 0] > 0).all()  # layer 1 is global
    with torch.no_grad():
        fast = model(tokens)  # nothing hooked: SDPA with the window as a mask
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")  # the explicit path
        assert torch.allclose(fast, model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, hook: a)]), atol=1e-5)
    with pytest.raises(ValueError, match="model.window=4 needs model.mask='causal'"):
        ModelConfig(window=4, mask="bidirectional")
