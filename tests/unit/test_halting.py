"""Adaptive computation time: halting respects its budget, its weights sum to 1, and it is differentiable."""

import pytest
import torch

from workbench.config import ConfigError
from workbench.hooks.halting import forward_with_ponder, iterations_used
from workbench.models import ModelConfig, build_model
from workbench.tasks.hops import HopsConfig, PointerHops


def act_model(loops=5, threshold=0.99, seed=0):
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, d_vocab=20, n_ctx=12, loops=loops, halting=True,
                      halt_threshold=threshold)
    return build_model(cfg, seed=seed)


def halting(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_halt", "hook_ponder")))
    return cache["blocks.0.hook_halt"], cache["blocks.0.hook_ponder"]


@pytest.mark.parametrize("bias", [-6.0, 0.0, 1.0, 6.0])  # from never halting to halting at once
def test_halting_weights_sum_to_one_within_the_budget(bias):
    model = act_model()
    torch.nn.init.constant_(model.blocks[0].halt.bias, bias)
    weights, ponder = halting(model, torch.randint(0, 20, (4, 12), generator=torch.Generator().manual_seed(0)))
    assert weights.shape == (4, 12, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(4, 12), atol=1e-6) and (weights >= 0).all()
    n = iterations_used(ponder)
    assert ((n >= 1) & (n <= 5)).all()  # never past the budget of 5 iterations
    assert ((weights > 0).sum(-1) == n).all()  # N iterations contributed, then nothing
    if bias == -6.0:
        assert (n == 5).all()  # p ≈ 0.0025 a step never reaches 0.99: the budget stops every position
    if bias == 6.0:
        assert (n == 1).all() and torch.allclose(ponder, torch.full_like(ponder, 2.0))  # N + R = 1 + 1


def test_output_is_the_halting_weighted_sum_of_iterations():
    model = act_model()
    tokens = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(1))
    names = [f"blocks.0.loop.{t}.hook_resid_post" for t in range(5)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names or n.endswith("hook_halt"))
    states = torch.stack([cache[n] for n in names], -2)  # [batch pos loop d]
    expected = (cache["blocks.0.hook_halt"][..., None] * states).sum(-2)
    assert torch.allclose(model.read_out(expected), model(tokens), atol=1e-5)


def test_halting_is_differentiable_through_the_ponder_cost_and_the_task_loss():
    model = act_model(threshold=0.9)
    tokens = torch.randint(0, 20, (8, 12), generator=torch.Generator().manual_seed(2))
    output, ponder = forward_with_ponder(model, tokens)
    ponder.mean().backward()
    halt = model.blocks[0].halt
    assert halt.weight.grad.abs().sum() > 0 and halt.bias.grad < 0  # a higher bias halts sooner: less cost
    model.zero_grad()
    output, _ = forward_with_ponder(model, tokens)
    output.logsumexp(-1).mean().backward()
    assert halt.weight.grad.abs().sum() > 0  # the task loss reaches the halting unit through the weights


def test_bad_act_configs_get_one_line():
    with pytest.raises(ValueError, match=r"model.halt_threshold=1.5: the halting threshold \(1 − ε\) must lie in"):
        ModelConfig(loops=4, halting=True, halt_threshold=1.5)
    with pytest.raises(ValueError, match="model.halting needs model.loops ≥ 2"):
        ModelConfig(halting=True)
    with pytest.raises(ConfigError, match="no adaptive computation time"):
        forward_with_ponder(build_model(ModelConfig(d_vocab=20, n_ctx=12)), torch.zeros(1, 4, dtype=torch.long))


def test_pointer_hops_answers_are_the_permutation_applied_h_times():
    task = PointerHops(HopsConfig(n_symbols=6, max_hops=4))
    batch = task.sample(256, torch.Generator().manual_seed(0))
    f, x, h = batch.meta["f"], batch.meta["x"], batch.meta["hops"]
    for i in range(256):
        y = int(x[i])
        for _ in range(int(h[i])):
            y = int(f[i, y])
        assert int(batch.targets[i, -1]) == task.symbol_token + y != task.symbol_token + int(x[i])
        pairs = batch.inputs[i, :6]
        assert sorted((pairs // 6).tolist()) == list(range(6)) and ((pairs % 6) == f[i, pairs // 6]).all()
    assert set(h.tolist()) == {1, 2, 3, 4}
    curriculum = PointerHops(HopsConfig(n_symbols=6, max_hops=4, hops_start=1, hops_every=100))
    assert (curriculum.sample(64, torch.Generator(), step=0).meta["hops"] == 1).all()
    assert set(curriculum.sample(256, torch.Generator(), step=150).meta["hops"].tolist()) == {1, 2}
