"""The hooked Mamba block: its scans agree, LTI is a convolution, and TransformerLens's tools work on it."""

import pytest
import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.models import ModelConfig, Transformer, build_model
from workbench.models.mamba import lti_kernel, parallel_scan, sequential_scan


def mamba(**overrides):
    cfg = dict(n_layers=2, d_model=32, n_heads=4, d_vocab=16, n_ctx=64, block="mamba", positional="none")
    return build_model(ModelConfig(**(cfg | overrides)), seed=0).eval()


@pytest.mark.parametrize("length", [1, 7, 64, 100])
def test_parallel_scan_equals_the_sequential_scan(length):
    g = torch.Generator().manual_seed(length)
    decay, drive = torch.rand(3, length, 5, 4, generator=g), torch.randn(3, length, 5, 4, generator=g)
    assert torch.allclose(parallel_scan(decay, drive), sequential_scan(decay, drive), atol=1e-5)


def test_a_model_with_either_scan_gives_the_same_logits_and_gradients():
    tokens = torch.randint(0, 16, (4, 50), generator=torch.Generator().manual_seed(0))
    fast, slow = mamba(), mamba(mamba_scan="sequential")
    assert fast.cfg.mamba_scan == "parallel"  # the default
    slow.load_state_dict(fast.state_dict())
    out_fast, out_slow = fast(tokens), slow(tokens)
    assert torch.allclose(out_fast, out_slow, atol=1e-5)
    out_fast.square().mean().backward()
    out_slow.square().mean().backward()
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_the_lti_block_is_a_convolution_with_its_kernel():
    model = mamba(mamba_selective=False)
    tokens = torch.randint(0, 16, (2, 40), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(tokens)
    mixer = model.blocks[1].mamba
    u, y = cache["blocks.1.mamba.hook_conv"], cache["blocks.1.mamba.hook_ssm_out"]  # [batch pos inner]
    kernel = lti_kernel(mixer, tokens.shape[1])  # [inner pos]
    inner = kernel.shape[0]
    conv = F.conv1d(F.pad(u.transpose(1, 2), (tokens.shape[1] - 1, 0)), kernel.flip(-1)[:, None], groups=inner)
    assert torch.allclose(conv.transpose(1, 2) + mixer.D * u, y, atol=1e-5)
    delta = cache["blocks.1.mamba.hook_delta"]
    assert torch.equal(delta, delta[:, :1].expand_as(delta))  # one step size for every token
    with pytest.raises(ValueError, match="selective mixer has no fixed kernel"):
        lti_kernel(mamba().blocks[0].mamba, 4)


def test_the_selective_blocks_hooks_carry_their_documented_shapes():
    model = mamba()
    _, cache = model.run_with_cache(torch.zeros(3, 10, dtype=torch.long))
    inner, n = model.cfg.mamba_inner, model.cfg.mamba_d_state
    shapes = {"mamba.hook_in_proj": (3, 10, 2 * inner), "mamba.hook_conv": (3, 10, inner),
              "mamba.hook_delta": (3, 10, inner), "mamba.hook_B": (3, 10, n), "mamba.hook_C": (3, 10, n),
              "mamba.hook_state": (3, 10, inner, n), "mamba.hook_ssm_out": (3, 10, inner),
              "hook_mamba_out": (3, 10, 32)}
    for name, shape in shapes.items():
        assert cache[f"blocks.0.{name}"].shape == shape, name
    assert (cache["blocks.0.mamba.hook_delta"] > 0).all()


def test_tl_activation_patching_runs_on_a_mamba_model():
    from transformer_lens import patching

    model = mamba()
    g = torch.Generator().manual_seed(2)
    clean, corrupted = torch.randint(0, 16, (2, 12), generator=g), torch.randint(0, 16, (2, 12), generator=g)
    _, clean_cache = model.run_with_cache(clean)

    def metric(logits):
        return logits[:, -1, 3].mean()

    grid = patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    assert grid.shape == (2, 12)

    def patch_one(activation, hook):  # the same patch by hand: layer 1, position 4
        activation[:, 4] = clean_cache["blocks.1.hook_resid_pre"][:, 4]
        return activation

    with torch.no_grad():
        by_hand = metric(model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.hook_resid_pre", patch_one)]))
        corrupted_metric = metric(model(corrupted)).item()
    assert grid[1, 4].item() == pytest.approx(by_hand.item(), abs=1e-5)
    assert abs(grid[1, 9].item() - corrupted_metric) > 1e-2  # an earlier position reaches the last through the SSM


def test_attention_tools_skip_mamba_layers_and_say_so():
    from workbench.hooks.attention import attention_patterns

    model = build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=16, n_ctx=16,
                                    block=["mamba", "attention"]), seed=0)
    tokens = torch.zeros(1, 8, dtype=torch.long)
    with pytest.warns(UserWarning, match=r"skipping layers \[0\], which have no attention"):
        assert list(attention_patterns(model, tokens)) == [1]
    with pytest.raises(ValueError, match="layer 0 has no attention; layers with attention: \\[1\\]"):
        attention_patterns(model, tokens, [0])


def test_a_mamba_layer_refuses_an_mlp_width():
    with pytest.raises(ValueError, match=r"layers \[0, 1\] are 'mamba' blocks, which have no MLP"):
        ModelConfig(n_layers=2, block="mamba", d_mlp=64)


def test_selective_copying_hides_its_data_among_filler_and_asks_for_it_in_order():
    from workbench.tasks.selective_copy import FILLER, MARKER, SelectiveCopy, SelectiveCopyConfig

    cfg = SelectiveCopyConfig(context=20, n_copy=3, n_symbols=5)
    batch = SelectiveCopy(cfg).sample(64, torch.Generator().manual_seed(0))
    context, markers = batch.tokens[:, :20], batch.tokens[:, 20:]
    assert (markers == MARKER).all() and batch.loss_mask[:, 20:].all() and not batch.loss_mask[:, :20].any()
    assert ((context != FILLER).sum(1) == 3).all() and (batch.meta["is_data"].sum(1) == 3).all()
    for row in range(64):
        data = context[row][context[row] != FILLER]
        assert torch.equal(batch.targets[row, 20:], data)  # the data tokens, in the order they appeared
    assert len({tuple(p.tolist()) for p in batch.meta["places"]}) > 50  # the places vary: content, not position


@pytest.mark.parametrize("option", [{"attention": "ssmax"}, {"positional": "rotary"}, {"mask": "bidirectional"}])
def test_an_all_mamba_config_refuses_attention_options(option):
    with pytest.raises(ValueError, match=f"model.{next(iter(option))}=.* configures attention, but every layer"):
        ModelConfig(n_layers=2, d_model=16, block="mamba", **option)


def test_mamba_options_without_a_mamba_layer_and_a_state_of_zero_are_refused():
    with pytest.raises(ValueError, match="model.mamba_d_state=4 configures Mamba blocks, but model.block='attention'"):
        ModelConfig(mamba_d_state=4)
    with pytest.raises(ValueError, match="mamba_d_state"):
        ModelConfig(block="mamba", mamba_d_state=0)


def test_asking_a_mamba_layer_for_an_attention_hook_is_one_clear_error():
    model = Transformer(ModelConfig(n_layers=2, d_model=16, block=["mamba", "attention"], n_ctx=8, d_vocab=8))
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="hook 'blocks.0.attn.hook_pattern': layer 0 is a 'mamba' block.*"
                       "blocks.0.mamba.hook_delta"):
        model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    with pytest.raises(ConfigError, match="did you mean blocks.1.attn.hook_pattern"):
        model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_patern"])
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_pattern", "blocks.0.mamba.hook_B"])
    assert set(cache.keys()) == {"blocks.1.attn.hook_pattern", "blocks.0.mamba.hook_B"}
