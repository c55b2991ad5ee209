"""The key-retrieval task of the ssmax experiment: shapes, determinism, right answers, distinct keys."""

import pytest
import torch

from workbench.config import ConfigError
from workbench.tasks.retrieval import BOS, FIRST_KEY, PAD, SEP, KeyRetrieval, RetrievalConfig


def sample(seed=0, batch=64, **fields):
    task = KeyRetrieval(RetrievalConfig(**({"min_pairs": 3, "max_pairs": 7, "queries": 2} | fields)))
    return task, task.sample(batch, torch.Generator().manual_seed(seed))


def test_shapes_and_determinism():
    task, a = sample()
    assert task.seq_len == 2 * 7 + 2 + 2 * 2
    assert a.tokens.shape == a.targets.shape == a.loss_mask.shape == (64, task.seq_len)
    assert a.meta["query_pos"].shape == a.meta["key_pos"].shape == a.meta["answer"].shape == (64, 2)
    _, b = sample()
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.loss_mask, b.loss_mask)
    assert not torch.equal(a.tokens, sample(seed=1)[1].tokens)
    assert int(a.tokens.max()) < task.d_vocab and len(task.token_names()) == task.d_vocab


def test_every_scored_position_is_a_query_whose_target_is_its_value():
    task, batch = sample()
    c = task.cfg
    for row in range(64):
        tokens, n = batch.tokens[row].tolist(), int(batch.meta["pairs"][row])
        assert c.min_pairs <= n <= c.max_pairs
        assert tokens[0] == BOS and tokens[2 * n + 1] == SEP and all(t == PAD for t in tokens[2 * n + 2 + 2 * 2:])
        pairs = {tokens[1 + 2 * i]: tokens[2 + 2 * i] for i in range(n)}
        assert all(FIRST_KEY <= k < FIRST_KEY + c.n_keys <= v for k, v in pairs.items())  # separate ranges
        scored = batch.loss_mask[row].nonzero().flatten().tolist()
        assert scored == batch.meta["query_pos"][row].tolist()
        for j, q in enumerate(scored):
            assert tokens[q] in pairs and int(batch.targets[row, q]) == pairs[tokens[q]] == tokens[q + 1]
            assert int(batch.meta["answer"][row, j]) == pairs[tokens[q]]
            assert tokens[int(batch.meta["key_pos"][row, j])] == tokens[q]
        assert len({tokens[q] for q in scored}) == len(scored)  # queries ask distinct keys


def test_keys_are_distinct_and_a_fixed_length_is_possible():
    task, batch = sample(min_pairs=40, max_pairs=40, n_keys=40, batch=32)
    assert bool((batch.meta["pairs"] == 40).all())
    keys = batch.tokens[:, 1:81:2]
    assert all(len(set(row.tolist())) == 40 for row in keys)  # every key once: a permutation of all 40


def test_bad_configs_are_refused():
    with pytest.raises((ConfigError, ValueError), match="n_keys"):
        RetrievalConfig(max_pairs=10, n_keys=8)
    with pytest.raises((ConfigError, ValueError), match="min_pairs"):
        RetrievalConfig(min_pairs=2, queries=3)
