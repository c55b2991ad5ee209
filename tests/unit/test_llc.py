"""The local learning coefficient through devinterp: our tasks adapted to its data interface."""

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.llc import LLCConfig, estimate_llc, llc_over_training, saved_llc, task_data
from workbench.models import ModelConfig, build_model
from workbench.tasks import RepeatedTokens, RepeatedTokensConfig
from workbench.train import masked_mean, position_losses

TASK = RepeatedTokens(RepeatedTokensConfig(d_vocab=16, seq_len=16, min_segment=2, max_segment=7))
FAST = LLCConfig(chains=1, draws=8, batch_size=8, sequences=64)


def tiny_model():
    return build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=16, n_ctx=16), seed=0).eval()


def test_the_loss_devinterp_samples_is_the_training_objective_row_by_row():
    dataset, loss_fn = task_data(TASK, FAST)
    model = tiny_model()
    batch = TASK.sample(FAST.sequences, torch.Generator().manual_seed(FAST.seed))
    assert torch.equal(dataset[:]["input_ids"], batch.tokens)
    with torch.no_grad():
        ours = position_losses(model, batch)
        for row in range(4):
            expected = masked_mean(ours[row : row + 1], batch.loss_mask[row : row + 1])
            assert loss_fn(model, batch.tokens[row : row + 1]).mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_llc_estimate_starts_from_the_task_loss_and_is_finite():
    model = tiny_model()
    result = estimate_llc(model, TASK, FAST)
    batch = TASK.sample(FAST.sequences, torch.Generator().manual_seed(FAST.seed))
    with torch.no_grad():
        loss = masked_mean(position_losses(model, batch), batch.loss_mask).item()
    assert result["init_loss"] == pytest.approx(loss, rel=0.05)  # init batches are a sample of the same data
    assert math.isfinite(result["llc"]) and math.isfinite(result["llc_std"])


def test_llc_refuses_a_task_that_is_not_next_token():
    from workbench.tasks.regression import LinearRegression, RegressionConfig

    with pytest.raises(ConfigError, match="LinearRegression is not a next-token task"):
        task_data(LinearRegression(RegressionConfig()), FAST)


def test_llc_over_training_saves_one_row_per_snapshot_in_the_run(tmp_path):
    import workbench

    result = workbench.run("induction", mode="smoke", out=tmp_path, progress_bar=False,
                           overrides={"train.dense_windows": 0, "train.snapshots": 4})
    table = llc_over_training(result["run_dir"], cfg=FAST, progress=False)
    assert list(table["step"]) == workbench.snapshots(result["run_dir"])
    assert [r["step"] for r in saved_llc(result["run_dir"])] == list(table["step"])
    with pytest.raises(ConfigError, match="no snapshots"):
        llc_over_training(workbench.run("induction", mode="smoke", out=tmp_path, progress_bar=False,
                                        overrides={"train.dense_windows": 0, "train.snapshots": 0})["run_dir"],
                          cfg=FAST, progress=False)
