"""The expressivity tasks and measurements: inverse permutation, parity with and without a chain, topic documents,
and the attention SVM (its gradient, its QP's KKT conditions)."""

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.hooks.expressivity import accuracy_by_source, block_ratio, shuffled_block_ratio, token_ov
from workbench.hooks.svm import AttentionSVM, attention_svm, cosine, kkt_residuals, svm_constraints
from workbench.models import ModelConfig, build_model
from workbench.tasks.parity import EQUALS, Parity, ParityConfig
from workbench.tasks.permutation import InversePermutation, InversePermutationConfig
from workbench.tasks.topics import Topics, TopicsConfig


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("scratch", [False, True])
def test_inverse_permutation_asks_row_i_for_the_value_destined_to_it(scratch):
    task = InversePermutation(InversePermutationConfig(n_items=5, n_values=7, scratch=scratch))
    batch = task.sample(64, g())
    n, values = 5, 7
    rows, vals = batch.tokens[:, :n] // values, batch.tokens[:, :n] % values
    outputs = task.output_positions()
    assert outputs.tolist() == (list(range(5, 10)) if scratch else list(range(5)))
    for b in range(64):
        for i in range(n):
            j = int((rows[b] == i).nonzero())  # the one token destined to row i
            assert batch.targets[b, outputs[i]] == vals[b, j] and batch.meta["source"][b, i] == j
            assert bool(batch.meta["later"][b, i]) == (j > i)
    assert batch.loss_mask.sum(1).eq(n).all() and batch.loss_mask[:, outputs].all()
    if scratch:
        assert (batch.tokens[:, n:] == task.cfg.blank).all()


def test_accuracy_by_source_averages_each_row_and_source_cell():
    correct = torch.tensor([[True, False], [True, True], [False, True]])
    source = torch.tensor([[0, 1], [1, 0], [0, 1]])
    grid = accuracy_by_source(correct, source)
    assert grid[0, 0] == 0.5 and grid[0, 1] == 1 and grid[1, 1] == 0.5 and grid[1, 0] == 1


@pytest.mark.parametrize("cot", [False, True])
def test_parity_targets_are_the_running_parities_and_the_answer_comes_last(cot):
    task = Parity(ParityConfig(n_bits=6, cot=cot))
    batch = task.sample(32, g())
    bits = batch.tokens[:, :6]
    assert (batch.tokens[:, 6] == EQUALS).all() and batch.tokens.shape[1] == (12 if cot else 7)
    running = bits.cumsum(1) % 2
    assert torch.equal(batch.targets[:, task.answer_position()], bits.sum(1) % 2)
    assert torch.equal(batch.meta["parity"], bits.sum(1) % 2)
    if cot:  # the chain written after "=" is the running parity, each token the one the step before predicted
        assert torch.equal(batch.tokens[:, 7:], running[:, :-1]) and torch.equal(batch.targets[:, 6:], running)
    assert batch.loss_mask[:, 6:].all() and not batch.loss_mask[:, :6].any()


def test_generate_continues_greedily_and_refuses_to_read_past_the_context():
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=6, d_vocab=5), seed=0).eval()
    prompt = torch.tensor([[1, 2, 3]])
    out = model.generate(prompt, 4)  # reads at most 6 tokens: the 4th new one is written, never read
    assert out.shape == (1, 7) and torch.equal(out[:, :3], prompt)
    assert out[0, 3] == model(prompt)[0, -1].argmax()
    with pytest.raises(ConfigError, match="beyond its n_ctx=6"):
        model.generate(prompt, 5)


def test_topic_documents_use_only_their_topics_and_mask_at_least_one_token():
    task = Topics(TopicsConfig(n_topics=5, words_per_topic=4, topics_per_doc=2, doc_len=16))
    batch = task.sample(128, g())
    topic = task.topic_of()[batch.targets]
    assert ((topic[..., None] == batch.meta["topics"][:, None, :]).any(-1)).all()
    assert torch.equal(batch.tokens == task.mask_token, batch.loss_mask) and batch.loss_mask.any(1).all()
    assert torch.equal(batch.tokens[~batch.loss_mask], batch.targets[~batch.loss_mask])


def test_block_ratio_reads_block_structure_and_token_ov_is_the_product_of_its_weights():
    groups = torch.arange(6) // 3
    blocks = (groups[:, None] == groups[None, :]).float() * 3 - 0.5
    assert block_ratio(blocks, groups) == pytest.approx(2.5 / 0.5)
    assert block_ratio(torch.ones(6, 6), groups) == pytest.approx(1.0)
    assert shuffled_block_ratio(torch.ones(6, 6), groups) == pytest.approx(1.0)  # any grouping fits a constant
    planted = torch.arange(100) // 10  # 10 blocks of 10, as the topics experiment has them
    assert shuffled_block_ratio((planted[:, None] == planted[None, :]).float() * 3 - 0.5, planted) < 1.0
    model = build_model(ModelConfig(n_layers=1, d_model=8, n_heads=1, n_ctx=4, d_vocab=5), seed=0)
    expected = model.embed.weight @ model.W_V[0, 0] @ model.W_O[0, 0] @ model.W_U
    assert torch.allclose(token_ov(model), expected)


def test_the_svm_gradient_equals_autograd_where_autograd_is_exact():
    model = AttentionSVM(problems=3, n=4, tokens=5, d=6, seed=0)
    with torch.no_grad():
        model.W.normal_(generator=g(1))
    model.loss().sum().backward()
    assert torch.allclose(model.gradient(), model.W.grad, atol=1e-12)


def test_the_attention_svm_meets_its_kkt_conditions():
    model = AttentionSVM(problems=1, n=6, tokens=8, d=10, seed=3)
    X, chosen = model.X[0], model.token_scores[0].argmax(-1)
    W = attention_svm(X, chosen)
    kkt = kkt_residuals(X, chosen, W)
    assert kkt["primal_violation"] < 1e-8 and kkt["stationarity"] < 1e-6 and kkt["min_multiplier"] >= 0
    assert kkt["active"] >= 1
    margins = svm_constraints(X, chosen) @ W.flatten().numpy()
    assert margins.min() == pytest.approx(1.0, abs=1e-6)  # the tightest constraint sits on the margin
    # a feasible W of smaller norm does not exist: scaling the solution down breaks a constraint
    assert (svm_constraints(X, chosen) @ (0.99 * W).flatten().numpy()).min() < 1


def test_normalised_gd_turns_w_towards_the_svm_of_the_tokens_it_selects():
    model = AttentionSVM(problems=2, n=6, tokens=8, d=10, seed=0)
    for _ in range(1000):
        before = model.W.detach().clone()
        model.normalised_step(0.1)
    assert torch.allclose((model.W.detach() - before).flatten(1).norm(dim=1), torch.tensor(0.1).double())
    target = torch.stack([attention_svm(model.X[p], model.selected()[p]) for p in range(2)])
    assert cosine(model.W.detach(), target).min() > 0.98
    assert math.isfinite(float(model.loss().sum()))
