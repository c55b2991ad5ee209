"""Grokking: the modular-addition task, the Fourier tools against hand-built answers, and the smoke preset."""

import math

import pytest
import torch

from workbench import experiments
from workbench.config import ConfigError
from workbench.experiments.runner import evaluate_saved, run
from workbench.hooks.fourier import (
    basis_frequencies,
    basis_labels,
    fourier_basis,
    frequency_energy,
    key_frequencies,
    key_frequency_logits,
    neuron_frequency_fractions,
    restricted_and_excluded_loss,
    top_frequencies,
)
from workbench.tasks import ModularAddition, ModularConfig
from workbench.tasks.base import token_names

P = 23


def task(**kw) -> ModularAddition:
    return ModularAddition(ModularConfig(p=P, **kw))


def wave(k: int, phase: float = 0.0, p: int = P) -> torch.Tensor:
    return torch.cos(2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p + phase)


# --- task ---
def test_split_sizes_and_no_overlap():
    t = task(train_fraction=0.4)
    assert len(t.train_pairs) == int(0.4 * P * P) and len(t.train_pairs) + len(t.test_pairs) == P * P
    assert not set(t.train_pairs.tolist()) & set(t.test_pairs.tolist())
    assert sorted(t.train_pairs.tolist() + t.test_pairs.tolist()) == list(range(P * P))


def test_split_is_seeded():
    assert torch.equal(task().train_pairs, task().train_pairs)
    assert not torch.equal(task().train_pairs, task(split_seed=1).train_pairs)


def test_sequences_targets_and_mask():
    batch = task().test_set()
    a, b = batch.meta["a"], batch.meta["b"]
    assert torch.equal(batch.tokens, torch.stack([a, b, torch.full_like(a, P)], 1))
    assert torch.equal(batch.targets[:, -1], (a + b) % P)
    assert batch.loss_mask[:, -1].all() and not batch.loss_mask[:, :-1].any()
    assert token_names(task(), P + 1) == [str(i) for i in range(P)] + ["="]


def test_full_batch_and_minibatch():
    t, g = task(), torch.Generator().manual_seed(0)
    assert torch.equal(t.sample(10_000, g).tokens, t.train_set().tokens)  # ≥ the training set: all of it
    assert torch.equal(t.sample(len(t.train_pairs), g).tokens, t.train_set().tokens)
    mini = t.sample(16, torch.Generator().manual_seed(1))
    pairs = (mini.tokens[:, 0] * P + mini.tokens[:, 1]).tolist()
    assert len(set(pairs)) == 16 and set(pairs) <= set(t.train_pairs.tolist())
    assert torch.equal(mini.tokens, t.sample(16, torch.Generator().manual_seed(1)).tokens)


# --- Fourier ---
@pytest.mark.parametrize("p", [7, 8, 97])
def test_basis_is_orthonormal_in_tl_order(p):
    F = fourier_basis(p)
    assert F.shape == (p, p)
    assert torch.allclose(F @ F.T, torch.eye(p), atol=1e-5)
    assert basis_labels(p)[:4] == ["const", "cos 1", "sin 1", "cos 2"]
    assert torch.allclose(F[1], torch.cos(2 * math.pi * torch.arange(p) / p) * math.sqrt(2 / p), atol=1e-6)
    assert len(basis_frequencies(p)) == p


def test_embedding_from_k_frequencies_is_found():
    keys = [2, 5, 9]
    W_E = torch.stack([wave(k, phase) for k, phase in zip(keys, [0.3, 1.1, 2.0], strict=True)], 1)
    W_E = (W_E @ torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).float()
    freqs, fraction = top_frequencies(W_E, 3)
    assert freqs == keys and fraction == pytest.approx(1.0, abs=1e-5)
    assert frequency_energy(W_E).sum() == pytest.approx(float(W_E.pow(2).sum()), rel=1e-5)
    assert top_frequencies(W_E, 2)[1] < 1


def test_neuron_key_frequency():
    a, b = wave(4)[:, None], wave(7, 0.5)[None, :]
    acts = torch.stack([a * wave(4, 1.0)[None, :] + a, b.expand(P, P)], -1).float()  # [a b neuron]
    fractions = neuron_frequency_fractions(acts)
    assert fractions.argmax(-1).tolist() == [4, 7]
    assert fractions.max(-1).values.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    noise = torch.randn(P, P, 2, generator=torch.Generator().manual_seed(0))
    assert key_frequencies(neuron_frequency_fractions(torch.cat([acts, noise], -1))) == [4, 7]
    assert key_frequencies(neuron_frequency_fractions(noise)) == []


def test_restricted_and_excluded_loss_of_the_fourier_algorithm():
    x = torch.arange(P, dtype=torch.float64)
    angle = 2 * math.pi * (x[:, None, None] + x[None, :, None] - x[None, None, :]) / P  # [a b c]
    logits = 10 * sum(torch.cos(k * angle) for k in (3, 8))
    restricted, excluded = restricted_and_excluded_loss(logits, [3, 8], task().train_pairs)
    assert restricted < 0.1  # the algorithm lives entirely in the key frequencies
    assert excluded == pytest.approx(math.log(P), rel=1e-3)  # without them the logits are flat
    assert restricted_and_excluded_loss(logits, [], task().train_pairs)[0] == pytest.approx(math.log(P))
    # a frequency named twice (w and P − w) counts once, so the parts still cancel
    assert restricted_and_excluded_loss(logits, [3, 8, P - 3], task().train_pairs) == pytest.approx(
        (restricted, excluded))


def test_key_frequency_logits_skip_the_vanishing_sine_at_half_an_even_modulus():
    p = 10
    x = torch.arange(p, dtype=torch.float64)
    logits = torch.cos(2 * math.pi * 3 * (x[:, None, None] + x[None, :, None] - x[None, None, :]) / p)
    assert key_frequency_logits(logits, [5]).abs().max() < 1e-9  # frequency 3 has nothing along frequency 5


# --- the experiment ---
def test_smoke_preset_end_to_end(tmp_path):
    result = run("grokking", mode="smoke", out=tmp_path, progress_bar=False)
    exp = experiments.get("grokking")
    assert exp.family == "circuits"
    assert [c["name"] for c in result["criteria"]] == [c.name for c in exp.criteria]
    metrics = result["metrics"]
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 < metrics["embed_top5_fourier_fraction"] <= 1
    figures = {p.stem for p in (tmp_path.glob("*/figures/*.json"))}
    assert figures >= {"training", "embedding_fourier", "neuron_clusters", "progress_measures"}
    assert evaluate_saved(result["run_dir"])["metrics"] == pytest.approx(metrics, rel=1e-5)


def test_solved_epochs_are_read_from_the_log(tmp_path):
    exp = experiments.get("grokking")
    cfg = exp.config("smoke")

    class Log:
        def metrics(self):
            return [{"step": 10, "train_accuracy": 0.5, "test_accuracy": 0.01},
                    {"step": 20, "train_accuracy": 0.995, "test_accuracy": 0.2},
                    {"step": 400, "train_accuracy": 1.0, "test_accuracy": 0.991}]

    assert exp.run_metrics(cfg, Log()) == {"train_solved_epoch": 20, "test_solved_epoch": 400,
                                           "grokking_delay_epochs": 380}


def test_config_refuses_a_vocabulary_that_does_not_match_p():
    with pytest.raises(ConfigError, match="model.d_vocab=90"):
        experiments.get("grokking").config("quick", {"task.p": 89})
