"""TransformerLens analysis idioms on our models: a real ActivationCache, weight and bias views, per-head
results, LayerNorm folding, token names."""

import pytest
import torch
from transformer_lens import ActivationCache, FactoredMatrix

from workbench.config import ConfigError
from workbench.models import ModelConfig, Transformer


def make(**overrides) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=11, n_ctx=16, positional="learned")
    model = Transformer(cfg.model_copy(update=overrides)).eval()
    with torch.no_grad():  # biases and norm weights away from their init, so a missed one shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def tokens():
    return torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(1))


def test_run_with_cache_returns_an_activation_cache_with_tl_shorthand(tokens):
    model = make()
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])
    assert torch.equal(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])
    _, plain = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre", return_cache_object=False)
    assert type(plain) is dict and list(plain) == ["blocks.0.hook_resid_pre"]
    assert torch.allclose(logits, model(tokens), atol=1e-5)  # caching the norms' scales leaves the output


def test_head_outputs_through_the_weight_views_equal_attn_out(tokens):
    model = make()
    _, cache = model.run_with_cache(tokens)
    for layer in range(2):
        z = cache["z", layer]
        manual = torch.einsum("bphd,hdm->bpm", z, model.W_O[layer]) + model.b_O[layer]
        assert torch.allclose(manual, cache["attn_out", layer], atol=1e-5)
        q = torch.einsum("bpm,hmd->bphd", cache["normalized", layer, "ln1"], model.W_Q[layer]) + model.b_Q[layer]
        assert torch.allclose(q, cache["q", layer], atol=1e-5)
        post = cache["post", layer]
        assert torch.allclose(post @ model.W_out[layer] + model.b_out[layer], cache["mlp_out", layer], atol=1e-5)
    assert isinstance(model.OV, FactoredMatrix) and model.OV.shape == (2, 4, 32, 32)
    assert torch.allclose(model.blocks[0].attn.OV.AB, model.W_V[0] @ model.W_O[0], atol=1e-6)
    assert torch.allclose(model.QK.AB[1, 2], model.W_Q[1, 2] @ model.W_K[1, 2].T, atol=1e-6)


def test_attn_result_hook_is_off_by_default_and_splits_the_output_by_head(tokens):
    model = make()
    logits, cache = model.run_with_cache(tokens)
    assert "blocks.0.attn.hook_result" not in cache.cache_dict
    model.set_use_attn_result(True)
    logits_on, on = model.run_with_cache(tokens)
    result = on["result", 0]
    assert result.shape == (3, 9, 4, 32)
    assert torch.allclose(result.sum(-2) + model.b_O[0], on["attn_out", 0], atol=1e-5)
    assert torch.allclose(logits_on, logits, atol=1e-5)


def test_cache_decompositions_agree_with_a_manual_one(tokens):
    model = make()
    _, cache = model.run_with_cache(tokens)
    final = cache["resid_post", -1]
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    assert torch.allclose(parts.sum(0), final, atol=1e-5)
    heads, head_labels = cache.stack_head_results(layer=-1, return_labels=True)
    assert head_labels[:2] == ["L0H0", "L0H1"] and heads.shape == (8, 3, 9, 32)
    attn = cache["attn_out", 0] + cache["attn_out", 1]
    assert torch.allclose(heads.sum(0) + model.b_O.sum(0), attn, atol=1e-5)
    accumulated = cache.accumulated_resid(layer=-1, incl_mid=True)
    assert torch.allclose(accumulated[-1], final, atol=1e-6)


@pytest.mark.parametrize("attention", ["softmax", "gated"])
def test_folding_the_norms_keeps_the_function(tokens, attention):
    model = make(attention=attention)
    with torch.no_grad():
        model.blocks[0].ln1.w.mul_(3.0)  # far from 1, so a reader left unfolded (the gate) shows
    before = model(tokens)
    model.fold_layer_norm()
    assert torch.allclose(model(tokens), before, atol=1e-4)


def test_logit_attributions_sum_to_the_logits_after_folding_the_norms(tokens):
    model = make()
    before = model(tokens)
    model.fold_layer_norm()
    assert torch.allclose(model(tokens), before, atol=1e-4)  # the same function
    assert torch.equal(model.ln_final.w, torch.ones(32))
    logits, cache = model.run_with_cache(tokens)
    parts = cache.decompose_resid(pos_slice=-1)  # [component batch d_model] at the last position
    targets = tokens[:, -1]
    # logit_attrs centres each part and divides it by ln_final's cached scale: exact once the norms are folded
    attrs = cache.logit_attrs(parts, tokens=targets, pos_slice=-1)  # [component batch]
    want = logits[torch.arange(3), -1, targets] - model.b_U[targets]
    assert torch.allclose(attrs.sum(0), want, atol=1e-4)


def test_token_names_read_and_write_tokens():
    model = make()
    model.token_names = [str(d) for d in range(10)] + ["BOS"]
    ids = model.to_tokens("4031")
    assert ids.tolist() == [[10, 4, 0, 3, 1]]
    assert model.to_str_tokens(ids[0]) == ["BOS", "4", "0", "3", "1"]
    assert model.to_tokens("BOS 4 0", prepend_bos=False).tolist() == [[10, 4, 0]]
    assert model.to_single_token("7") == 7
    assert torch.equal(model.tokens_to_residual_directions("7"), model.W_U[:, 7])
    with pytest.raises(ConfigError, match="cannot read 'x"):
        model.to_tokens("40x")
    with pytest.raises(ConfigError, match="not one of this model's tokens"):
        model.to_single_token("EOS")


def test_stacked_views_name_what_does_not_stack():
    model = make(d_mlp=[64, 0])
    with pytest.raises(ConfigError, match="do not stack"):
        _ = model.W_in
    assert model.blocks[0].mlp.W_in.shape == (32, 64)
    with pytest.raises(ConfigError, match="tied_embeddings"):
        make(tied_embeddings=True).fold_layer_norm()


def test_experiment_models_name_their_tokens_as_their_task_does():
    from workbench.experiments import get

    exp = get("codebook")
    model = exp.build(exp.config("smoke"))
    assert model.to_str_tokens(model.to_tokens("40")[0]) == ["BOS", "4", "0"]


@pytest.mark.parametrize("d_mlp", [0, 64])
def test_tl_attribution_patch_runs_on_our_models_at_node_and_edge_level(d_mlp):
    from transformer_lens.tools.analysis import attribution_patch
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig

    model = make(d_mlp=d_mlp)
    g = torch.Generator().manual_seed(2)
    clean, corrupt = torch.randint(0, 11, (1, 8), generator=g), torch.randint(0, 11, (1, 8), generator=g)

    def metric(logits):
        return logits[0, -1, 3] - logits[0, -1, 4]

    nodes = attribution_patch(model, clean, corrupt, metric, EdgeAttributionConfig(granularity="node")).node_scores
    edges = attribution_patch(model, clean, corrupt, metric, EdgeAttributionConfig(granularity="edge"))
    assert not (model.cfg.use_attn_result or model.cfg.use_split_qkv_input or model.cfg.use_hook_mlp_in)
    assert len(edges.edge_scores) > len(nodes)
    for node, score in nodes.items():  # a writer's outgoing edges add up to its node score
        assert edges.node_scores[node] == pytest.approx(score, abs=1e-5)
    if d_mlp == 0:  # the absent MLPs are zero writers
        assert all(score == 0 for node, score in nodes.items() if node.kind == "mlp_out")
    # a head's node score is (z_clean − z_corrupt) · ∂metric/∂z on the corrupt run, z read through our hooks
    _, clean_cache = model.run_with_cache(clean, names_filter="blocks.1.attn.hook_z")
    seen = {}

    def keep(z, hook):
        z.retain_grad()
        seen["z"] = z

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", keep)]):
        metric(model(corrupt)).backward()
    delta = (clean_cache["blocks.1.attn.hook_z"] - seen["z"].detach()) * seen["z"].grad
    head = next(n for n in nodes if n.kind == "attn_head_out" and n.layer == 1 and n.head == 2 and n.position == 7)
    assert nodes[head] == pytest.approx(float(delta[0, 7, 2].sum()), abs=1e-6)


def test_the_hook_switches_leave_the_output_unchanged(tokens):
    model = make()
    plain = model(tokens)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    assert model.cfg.use_split_qkv_input and not make().cfg.use_split_qkv_input  # switches belong to one model
    _, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_q_input"].shape == (3, 9, 4, 32)
    assert torch.equal(cache["blocks.1.hook_mlp_in"], cache["blocks.1.hook_resid_mid"])
    assert torch.allclose(model(tokens), plain, atol=1e-5)
