"""Scaling laws: the power-law fit, the order-2 language's exact floor, and the fit across variants."""

import numpy as np
import pytest
import torch

from workbench import experiments
from workbench.config import ConfigError
from workbench.hooks.scaling import fit_power_law
from workbench.tasks.language import Order2Language, Order2LanguageConfig

N = np.array([3.3e3, 7.1e3, 12.6e3, 25.7e3, 56.8e3, 100e3, 224e3])


@pytest.mark.parametrize("alpha, L_inf", [(0.75, 1.8), (0.5, 2.4), (1.0, 0.3)])
def test_fit_recovers_a_planted_power_law(alpha, L_inf):
    fit = fit_power_law(N, L_inf + (2e3 / N) ** alpha)
    assert fit.alpha == pytest.approx(alpha, abs=1e-4) and fit.L_inf == pytest.approx(L_inf, abs=1e-4)
    assert fit.x0 == pytest.approx(2e3, rel=1e-3) and fit.r2 == pytest.approx(1.0)


def test_fit_under_noise_stays_close_and_reports_r2_below_one():
    rng = np.random.default_rng(0)
    loss = (1.8 + (2e3 / N) ** 0.75) * np.exp(rng.normal(0, 0.002, len(N)))
    fit = fit_power_law(N, loss)
    assert abs(fit.alpha - 0.75) < 0.1 and abs(fit.L_inf - 1.8) < 0.02 and 0.99 < fit.r2 < 1


def test_fit_needs_three_sizes_and_a_falling_loss():
    with pytest.raises(ConfigError, match="needs ≥ 3 distinct sizes; got 2"):
        fit_power_law([1e3, 1e3, 2e3], [3.0, 3.0, 2.5])
    with pytest.raises(ConfigError, match="does not fall"):
        fit_power_law(N, 2 + N / 1e5)


def test_order2_language_floor_is_the_entropy_of_its_samples():
    task = Order2Language(Order2LanguageConfig())
    V, pi, P = task.d_vocab, task.stationary, task.transition
    next_pi = (pi[:, None] * P).reshape(V, V, V).sum(0).reshape(-1)
    assert torch.allclose(next_pi, pi, atol=1e-12)  # stationary over contexts (a, b) → (b, c)
    assert ((P > 0).sum(1) == task.cfg.support).all()
    batch = task.sample(512, torch.Generator().manual_seed(0))
    tokens = batch.inputs
    nll = -P[tokens[:, :-2] * V + tokens[:, 1:-1], tokens[:, 2:]].log().mean()
    assert float(nll) == pytest.approx(task.entropy_floor(), abs=0.02)  # 31k tokens: σ ≈ 0.006
    assert not batch.loss_mask[:, 0].any() and batch.loss_mask[:, 1:-1].all()  # scored from token 2 on


def test_combined_metrics_fit_the_variants_and_the_data_axis():
    exp, floor = experiments.get("scaling"), 1.8
    metrics = {}
    for i, n in enumerate(N):
        loss = floor + (2e3 / n) ** 0.7
        metrics |= {f"s{i}.loss": loss, f"s{i}.excess": loss - floor, f"s{i}.params": n, f"s{i}.tokens": 4e6}
    for j, d in enumerate([5e5, 1e6, 2e6]):  # the data axis: the size of s3 on smaller budgets
        loss = metrics["s3.loss"] - (1e5 / 4e6) ** 0.5 + (1e5 / d) ** 0.5
        metrics |= {f"d{j}.loss": loss, f"d{j}.excess": loss - floor, f"d{j}.params": N[3], f"d{j}.tokens": d}
    out = exp.combine_metrics(metrics)
    assert out["alpha"] == pytest.approx(0.7, abs=1e-3) and abs(out["L_inf_minus_floor"]) < 1e-3
    assert out["loss_decreasing"] == 1 and out["sizes"] == 7 and out["N_span"] == pytest.approx(N[-1] / N[0])
    assert out["data_beta"] == pytest.approx(0.5, abs=1e-3) and out["data_r2"] == pytest.approx(1.0)
    assert all(c["passed"] for c in exp.check(metrics | out))
    metrics["s6.loss"] = metrics["s5.loss"] + 0.01  # the largest model worse than the next: not decreasing
    assert exp.combine_metrics(metrics)["loss_decreasing"] == 0


def test_a_scaling_run_needs_three_sizes():
    exp = experiments.get("scaling")
    variants = exp.config("smoke").variants
    with pytest.raises(ConfigError, match=r"needs ≥ 3 model sizes at the largest token budget; got 2 \(d16L1, d24L1\)"):
        exp.config("smoke", {"variants": {k: variants[k] for k in ("d16L1", "d24L1")}})
