"""Codebook layers: top-k by cosine similarity, straight-through gradients, per-head groups, and attaching
to any hook point of our models and of a TransformerLens bridge without changing them once detached."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.hooks.codebook import CodebookLayer, CodebookSpec, attach, attached, codebook_mse, codebooks, detach
from workbench.models import ModelConfig, build_model


@pytest.fixture
def model():
    return build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=11, n_ctx=16), seed=0)


def tokens(n=3, pos=10, vocab=11):
    return torch.randint(0, vocab, (n, pos), generator=torch.Generator().manual_seed(1))


def test_top_k_by_cosine_similarity_to_the_layernormed_input():
    layer = CodebookLayer(8, CodebookSpec(codes=20, k=3))
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    normed = F.layer_norm(x, (8,))
    similarity = F.normalize(normed, dim=-1) @ F.normalize(layer.codes[0], dim=-1).T  # by hand
    expected = similarity.topk(3, dim=-1).indices
    torch.testing.assert_close(layer.choose(x[:, None])[:, 0], expected)
    torch.testing.assert_close(layer(x), layer.codes[0][expected].sum(1))  # the output is the sum of its codes
    mean = CodebookLayer(8, CodebookSpec(codes=20, k=3, combine="mean"))
    mean.codes.data.copy_(layer.codes.data)
    torch.testing.assert_close(mean(x), layer.codes[0][expected].mean(1))


def test_gradients_reach_the_chosen_codes_and_optionally_pass_straight_through_to_the_input():
    layer = CodebookLayer(8, CodebookSpec(codes=20, k=2))
    x = torch.randn(6, 8, requires_grad=True)
    upstream = torch.randn(6, 8)
    assert not layer(x).requires_grad or torch.autograd.grad(
        (layer(x) * upstream).sum(), x, allow_unused=True)[0] is None  # Tamkin: no gradient to the input
    through = CodebookLayer(8, CodebookSpec(codes=20, k=2, input_gradient=True))
    through.codes.data.copy_(layer.codes.data)
    x.grad = None
    (through(x) * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)  # straight through: identity to the input
    torch.testing.assert_close(through(x), layer(x))  # the forward is the same either way
    layer.codes.grad = None
    (layer(x) * upstream).sum().backward()
    chosen = layer.choose(x.detach()[:, None])[:, 0].unique()
    used = layer.codes.grad[0].abs().sum(-1) > 0
    assert set(used.nonzero().flatten().tolist()) == set(chosen.tolist())  # only chosen codes learn
    layer.codes.grad = None
    layer(x)
    layer.mse.backward()  # the reconstruction term trains codes only: stop-gradient on the input
    assert layer.codes.grad.abs().sum() > 0


def test_per_head_codebooks_keep_one_group_per_head(model):
    with codebooks(model, {"blocks.0.attn.hook_z": CodebookSpec(codes=30, k=2, per_head=True)}) as books:
        _, cache = model.run_with_cache(tokens())
        layer = books["blocks.0.attn.hook_z"]
        assert layer.codes.shape == (4, 30, 8)  # head, code, d_head
        codes = cache["blocks.0.attn.hook_z.codebook.hook_codes"]
        assert codes.shape == (3, 10, 4, 2) and codes.max() < 30
        z = cache["blocks.0.attn.hook_z"]  # what the codebook wrote: per head, the sum of that head's codes
        torch.testing.assert_close(z[0, 0, 2], layer.codes[2, codes[0, 0, 2]].sum(0))
        read = cache["blocks.0.attn.hook_z.codebook.hook_input"]  # what it read: the heads' own z
        torch.testing.assert_close(layer.choose(read), codes)


def test_attach_and_detach_restore_the_model_bit_for_bit(model):
    x = tokens()
    before, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    layer = attach(model, "blocks.1.hook_mlp_out", CodebookSpec(codes=40, k=1))
    assert not torch.equal(model(x), before)
    assert "blocks.1.hook_mlp_out.codebook.codes" in model.state_dict() and list(attached(model)) == [
        "blocks.1.hook_mlp_out"]
    model(x)
    assert codebook_mse(model) == layer.mse and layer.mse > 0
    detach(model, "blocks.1.hook_mlp_out")
    assert torch.equal(model(x), before) and model.state_dict().keys() == state.keys()
    assert not [n for n in model.hook_dict if "codebook" in n]


def test_codes_initialise_from_activations_and_dead_codes_are_replaced(model):
    layer = attach(model, "blocks.1.hook_mlp_out", CodebookSpec(codes=500, k=1))
    model.train()
    _, cache = model.run_with_cache(tokens(8, 16))
    assert layer.counts.sum() == 8 * 16 and (layer.counts == 0).sum() > 0
    acts = cache["blocks.1.hook_mlp_out.codebook.hook_input"].reshape(-1, 32)  # what the codebook read
    alive = layer.counts[0] > 0
    kept = layer.codes[0, alive].clone()
    assert layer.replace_dead(acts) == int((~alive).sum()) and layer.counts.sum() == 0
    assert torch.equal(layer.codes[0, alive], kept)  # codes that fired are left alone
    fresh = layer.codes[0, ~alive]  # the dead ones are now activation vectors
    assert (fresh[:, None] == acts[None]).all(-1).any(-1).all()


def test_codebooks_attach_to_a_transformer_bridge_and_cache_their_codes(native_bridge):
    bridge = native_bridge
    x = tokens(2, 10, 50)
    before = bridge(x)
    with codebooks(bridge, {"blocks.1.hook_mlp_out": CodebookSpec(codes=50, k=1)}):
        out, cache = bridge.run_with_cache(x)
        assert cache["blocks.1.hook_mlp_out.codebook.hook_codes"].shape == (2, 10, 1, 1)
        assert not torch.equal(out, before)
    assert torch.equal(bridge(x), before)


def test_bad_codebook_requests_name_the_problem(model):
    with pytest.raises(ConfigError, match="k=5 exceeds the codebook size C=4"):
        attach(model, "blocks.1.hook_mlp_out", CodebookSpec(codes=4, k=5))
    with pytest.raises(ConfigError, match="hook point 'blocks.9.hook_mlp_out' does not exist"):
        attach(model, "blocks.9.hook_mlp_out", CodebookSpec())
    with pytest.raises(ConfigError, match="per_head needs"):
        attach(model, "blocks.1.hook_mlp_out", CodebookSpec(per_head=True))
    attach(model, "blocks.1.hook_mlp_out", CodebookSpec(codes=8))
    with pytest.raises(ConfigError, match="already attached"):
        attach(model, "blocks.1.hook_mlp_out", CodebookSpec(codes=8))
    with pytest.raises(ConfigError, match="no codebook attached here"):
        detach(model, "blocks.0.hook_mlp_out")


def test_code_precision_recall_and_the_matched_neuron_baseline_by_hand():
    from workbench.hooks.features import best_unit_precision, code_table, search_codes

    labels = torch.tensor([0, 0, 1, 1, 1, -1, 2, 2])
    codes = torch.tensor([[5], [5], [5], [7], [7], [7], [1], [1]])
    table = code_table(codes, labels, n_codes=8, n_labels=3).set_index("code")
    assert list(table.index) == [1, 5, 7]
    assert table.loc[5, "label"] == 0 and table.loc[5, "precision"] == pytest.approx(2 / 3)
    assert table.loc[5, "recall"] == 1.0  # both label-0 tokens
    assert table.loc[7, "label"] == 1 and table.loc[7, "precision"] == pytest.approx(2 / 3)
    assert table.loc[7, "recall"] == pytest.approx(2 / 3)
    # unit 0 ranks label-1 tokens first; unit 1 is noise: best precision at recall 2/3 is 1.0, from unit 0
    acts = torch.tensor([[0.1, 0.5], [0.2, 0.9], [0.9, 0.1], [0.8, 0.3], [0.3, 0.2], [0.4, 0.8], [0, 0], [0, 0.]])
    assert best_unit_precision(acts, labels, 1, 2 / 3) == (1.0, 0)
    assert best_unit_precision(acts, labels, 1, 1.0) == (pytest.approx(3 / 4), 0)  # 0.9 0.8 0.4(−1) 0.3
    # recall 1/2 needs 2 of 4 positives: keeping down to the 2nd (+ − +) gives 2/3, but going on through a run of
    # positives (+ − + + +) gives 4/5: the threshold at the need-th positive is not the best one
    ranked, positives = torch.tensor([[5.0], [4], [3], [2], [1], [0]]), torch.tensor([1, 0, 1, 1, 1, 0])
    assert best_unit_precision(ranked, positives, 1, 0.5) == (pytest.approx(4 / 5), 0)

    text = [list("0123"), list("1213")]
    found = search_codes(torch.tensor([[[3], [4], [3], [4]], [[3], [4], [3], [4]]]), text, r"1[23]$", context=2)
    # code 4 ends "01", "23", "12", "13" (2 of 4 match); code 3 ends "0", "12", "1", "21" (1 of 4)
    assert found.code.tolist() == [4, 3] and found.precision.tolist() == [0.5, 0.25]
    with pytest.raises(ConfigError, match="does not compile"):
        search_codes(torch.zeros(1, 2, 1, dtype=torch.long), [["0", "1"]], "(")


def test_matched_neuron_baseline_is_the_best_threshold_by_brute_force():
    from workbench.hooks.features import best_unit_precision

    g = torch.Generator().manual_seed(0)
    acts, labels = torch.randn(200, 7, generator=g), torch.randint(0, 3, (200,), generator=g)
    for recall in (0.1, 0.5, 0.9):
        brute = 0.0
        for unit in range(7):
            order = acts[:, unit].argsort(descending=True)
            hits = (labels[order] == 1).double().cumsum(0)
            ok = hits >= math.ceil(recall * int((labels == 1).sum()))
            brute = max(brute, float((hits / torch.arange(1, 201))[ok].max()))
        assert best_unit_precision(acts, labels, 1, recall)[0] == pytest.approx(brute)


def test_topk_sae_recovers_a_planted_dictionary():
    from workbench.hooks.sae import TopKSAE, fraction_unexplained, train_sae

    g = torch.Generator().manual_seed(0)
    d, features, k, n = 16, 24, 2, 20000
    planted = F.normalize(torch.randn(features, d, generator=g), dim=-1)
    active = torch.rand(n, features, generator=g).argsort(-1)[:, :k]
    coefficients = torch.zeros(n, features).scatter(1, active, 1 + torch.rand(n, k, generator=g))
    x = coefficients @ planted
    sae = train_sae(x, latents=features, k=k, steps=3000, batch=512, lr=3e-3, progress_bar=False)
    assert fraction_unexplained(sae, x) < 0.1
    z = sae.encode(x[:100])
    assert ((z > 0).sum(-1) <= k).all()  # at most k latents active
    # every planted feature has a decoder row pointing its way
    match = (planted @ sae.W_dec.T).max(-1).values
    assert (match > 0.9).float().mean() >= 0.9, match
    with pytest.raises(ConfigError, match="k=30 must lie in"):
        TopKSAE(d, features, 30)


def test_forced_codes_change_the_output_only_where_asked(model):
    from workbench.hooks.codebook import forced_codes, js_divergence

    layer = attach(model, "blocks.1.hook_mlp_out", CodebookSpec(codes=40, k=1))
    x = tokens(2, 6)
    _, cache = model.run_with_cache(x)
    chosen = cache["blocks.1.hook_mlp_out.codebook.hook_codes"]
    where = torch.zeros(2, 6, dtype=torch.bool)
    where[1, 3] = True
    other = int((chosen[1, 3, 0, 0] + 1) % 40)
    with forced_codes(model, {"blocks.1.hook_mlp_out": (where, torch.tensor(other))}):
        _, forced = model.run_with_cache(x)
    ids = forced["blocks.1.hook_mlp_out.codebook.hook_codes"]
    assert ids[1, 3, 0, 0] == other and torch.equal(ids[~where], chosen[~where])
    torch.testing.assert_close(forced["blocks.1.hook_mlp_out"][1, 3], layer.codes[0, other])
    torch.testing.assert_close(forced["blocks.1.hook_mlp_out"][0], cache["blocks.1.hook_mlp_out"][0])  # untouched
    with pytest.raises(ConfigError, match=r"code ids must lie in \[0, 39\]"), \
            forced_codes(model, {"blocks.1.hook_mlp_out": (where, torch.tensor(40))}):
        pass
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert js_divergence(p, q) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert js_divergence(p, p) == 0


def test_the_codebook_experiment_saves_and_reloads_its_codebooks(tmp_path):
    import workbench
    from workbench.experiments.runner import evaluate_saved, run

    result = run("codebook", "smoke", out=tmp_path, progress_bar=False)
    model = workbench.load_model(result["run_dir"], variant="codebook")
    sites = attached(model)
    assert len(sites) == 4 and "blocks.0.attn.hook_z" in sites and sites["blocks.0.attn.hook_z"].codes.shape[0] == 4
    assert not attached(workbench.load_model(result["run_dir"], variant="base"))
    assert evaluate_saved(result["run_dir"])["metrics"] == pytest.approx(result["metrics"], nan_ok=True)
    # the base variant was taken from the codebook variant's phase boundary: the same as training it alone
    from workbench.experiments import get

    exp = get("codebook")
    alone = exp.train(exp.config("smoke").variant("base"), run=None, progress_bar=False)
    shared = workbench.load_model(result["run_dir"], variant="base")
    assert all(torch.equal(v, shared.state_dict()[k]) for k, v in alone.state_dict().items())
    # by default only the codes learn in the codebook phase: the rest of the model is still the base model
    coded = model.state_dict()
    assert all(torch.equal(v, coded[k]) for k, v in shared.state_dict().items())
    assert [r["step"] for r in workbench.runs.Run(result["run_dir"]).variant("base").metrics()][-1] == 20
