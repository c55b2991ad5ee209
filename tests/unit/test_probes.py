"""Probes recover planted linear structure; the hidden-state language's oracle is exact; Dyck strings and trees."""

import itertools

import pytest
import torch

from workbench.hooks.probes import (
    distance_spearman,
    fit_distance_probe,
    pair_distances,
    ridge_predict,
    softmax_probe_accuracy,
    spearman,
)
from workbench.tasks.dyck import CLOSES, OPENS, Dyck, DyckConfig, depths, tree_distances
from workbench.tasks.hidden_states import HiddenStates, HiddenStatesConfig, ngram_accuracy


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_the_softmax_probe_reads_a_planted_linear_label_and_not_noise():
    x = torch.randn(2000, 16, generator=g())
    direction = torch.randn(16, 4, generator=g(1))
    labels = (x @ direction).argmax(1)  # linearly decodable by construction
    assert softmax_probe_accuracy(x[:1000], labels[:1000], x[1000:], labels[1000:], 4) > 0.95
    noise = torch.randint(0, 4, (2000,), generator=g(2))
    assert softmax_probe_accuracy(x[:1000], noise[:1000], x[1000:], noise[1000:], 4) < 0.35


def test_the_depth_and_distance_probes_recover_planted_structure():
    # residuals = a random linear image of (depth, a 2-d tree embedding) plus noise
    n, pos, f = 64, 10, 12
    coords = torch.randn(n, pos, 2, generator=g())
    depth = torch.randint(0, 6, (n, pos), generator=g(1)).float()
    mix = torch.randn(3, f, generator=g(2))
    acts = torch.cat([depth[..., None], coords], -1) @ mix + 0.01 * torch.randn(n, pos, f, generator=g(3))
    predicted = ridge_predict(acts[:32].reshape(-1, f), depth[:32].flatten(), acts[32:].reshape(-1, f))
    assert (predicted - depth[32:].flatten()).abs().max() < 0.1  # ρ itself is below 1 only through ties
    true = ((coords[:, :, None] - coords[:, None, :]) ** 2).sum(-1)  # squared distances of the planted embedding
    B = fit_distance_probe(acts[:32], true[:32], rank=4, steps=500, lr=3e-2)
    assert distance_spearman(pair_distances(acts[32:], B), true[32:]) > 0.95
    assert distance_spearman(pair_distances(acts[32:], torch.randn(f, 4, generator=g(5))), true[32:]) < 0.9


def test_spearman_averages_tied_ranks():
    assert spearman(torch.tensor([1.0, 1, 2, 3]), torch.tensor([1.0, 1, 2, 3])) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)


def test_the_oracle_is_exact_forward_filtering_on_a_tiny_language():
    task = HiddenStates(HiddenStatesConfig(n_states=4, n_tokens=2, successors=2, p_first=0.7, seq_len=4))
    tokens = torch.tensor([[0, 1, 1, 0]])
    emits = task.emission
    for t in range(3):
        # brute force: sum over every state path consistent with tokens ≤ t, then one more step
        future = torch.zeros(2)
        for path in itertools.product(range(4), repeat=t + 2):
            if any(emits[s] != tokens[0, i] for i, s in enumerate(path[: t + 1])):
                continue
            steps = zip(path[:-1], path[1:], strict=True)
            p = 0.25 * torch.prod(torch.stack([task.transition[a, b] for a, b in steps]))
            future[emits[path[-1]]] += p
        assert torch.allclose(task.oracle(tokens, 1)[0, t], future / future.sum(), atol=1e-6)


def test_ngram_baselines_count_the_table_they_are_scored_with():
    tokens = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1]])
    assert ngram_accuracy(tokens, tokens, 2, 1, 1, 0) == 1.0  # alternating: the bigram is perfect
    assert ngram_accuracy(tokens, tokens, 2, 2, 2, 1) == 1.0


def test_dyck_strings_are_balanced_within_depth_and_their_trees_are_consistent():
    task = Dyck(DyckConfig(length=20, max_depth=3))
    tokens = task.sample(64, g()).tokens
    d = depths(tokens)
    assert (d >= 0).all() and (d <= 3).all() and (d[:, -1] == 0).all()
    for row in tokens[:8]:
        stack = []
        for t in row.tolist()[1:]:
            if t in OPENS:
                stack.append(t)
            else:
                assert CLOSES.index(t) == OPENS.index(stack.pop())  # the right type closes
        dist = tree_distances(row)
        assert torch.equal(dist, dist.T) and (dist.diagonal() == 0).all()
        first_close = next(i for i, t in enumerate(row.tolist()) if t in CLOSES)
        assert dist[first_close, first_close - 1] == 1  # a close bracket hangs under the bracket it closes
        assert dist[0, 1] == 1  # the first bracket hangs under BOS, the root
