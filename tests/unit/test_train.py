import json
import math

import pytest
import torch

from tests.conftest import Interrupt, stop_at
from workbench.config import ConfigError
from workbench.models import ModelConfig, build_model
from workbench.models.io import load_state, load_weights, save_weights
from workbench.runs import Run
from workbench.tasks import BigramLanguage, BigramLanguageConfig, RepeatedTokens, RepeatedTokensConfig
from workbench.train import Phase, TrainConfig, Trainer, TrainingDiverged, lr_at, task_loss

TASK = RepeatedTokens(RepeatedTokensConfig(d_vocab=16, seq_len=16, min_segment=2, max_segment=7))


def tiny_model():
    return build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=16, n_ctx=16), seed=0)


def test_lr_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))


def test_training_approaches_the_bigram_entropy_rate():
    language = BigramLanguage(BigramLanguageConfig(d_vocab=16, seq_len=16))
    model = tiny_model()
    trainer = Trainer(model, language, TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup_steps=5), seed=0,
                      progress_bar=False)
    batch = language.sample(64, torch.Generator().manual_seed(99))
    before = task_loss(model, batch).item()
    trainer.fit()
    after = task_loss(model, batch).item()
    assert after < before - 0.3
    assert after < language.entropy_rate() + 0.25


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = Run.create(tmp_path, "unit", {}, "smoke", "test")
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = model(batch.tokens).float().mean() ** 2
        return loss * (math.nan if calls["n"] > 7 else 1.0)

    cfg = TrainConfig(steps=20, batch_size=4, checkpoint_every=5, warmup_steps=0)
    trainer = Trainer(tiny_model(), TASK, cfg, seed=0, run=run, loss_fn=loss_fn, progress_bar=False)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 8.*step-5\.safetensors"):
        trainer.fit()
    assert [p.name for p in run.checkpoints()] == ["step-5.safetensors"]
    load_weights(run.checkpoints()[0])  # intact


def noisy_loss(model, batch):
    """The task loss plus noise drawn from torch's *global* RNG, as dropout would: resume must restore it."""
    return task_loss(model, batch) * (1 + 0.5 * torch.rand(()))


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_checkpoint_restore_continues_bit_identically(tmp_path, optimizer):
    cfg = TrainConfig(steps=12, batch_size=8, checkpoint_every=5, warmup_steps=2, log_every=1, optimizer=optimizer,
                      lr=1e-3 if optimizer == "adamw" else 0.1)
    full = Trainer(tiny_model(), TASK, cfg, seed=3, run=Run.create(tmp_path, "a", {}, "smoke", ""), progress_bar=False,
                   loss_fn=noisy_loss)
    full.fit()
    part_run = Run.create(tmp_path, "b", {}, "smoke", "")
    part = Trainer(tiny_model(), TASK, cfg, seed=3, run=part_run, progress_bar=False, callback=stop_at(7),
                   loss_fn=noisy_loss)
    with pytest.raises(Interrupt):
        part.fit()
    assert part_run.checkpoints()[-1].name == "step-5.safetensors"
    state = {k.rsplit(".", 1)[1] for k in load_weights(part_run.checkpoints()[-1]) if k.startswith("optim.")}
    assert state == ({"momentum_buffer"} if optimizer == "sgd" else {"step", "exp_avg", "exp_avg_sq"})
    resumed = Trainer(tiny_model(), TASK, cfg, seed=3, run=part_run, progress_bar=False, loss_fn=noisy_loss)
    torch.manual_seed(12345)  # a disturbed global RNG must not matter: the checkpoint restores it
    resumed.restore(part_run.checkpoints()[-1])
    assert resumed.step == 5
    resumed.fit()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in part_run.metrics()] == [r["loss"] for r in full.run.metrics()]


def test_restore_without_the_global_rng_state_would_diverge(tmp_path):
    """The RNG test above can fail: dropping the global RNG state from the restore changes the weights."""
    cfg = TrainConfig(steps=8, batch_size=8, checkpoint_every=4, warmup_steps=0, log_every=1)
    full = Trainer(tiny_model(), TASK, cfg, seed=3, progress_bar=False, loss_fn=noisy_loss)
    full.fit()
    run = Run.create(tmp_path, "c", {}, "smoke", "")
    with pytest.raises(Interrupt):
        Trainer(tiny_model(), TASK, cfg, seed=3, run=run, progress_bar=False, callback=stop_at(5),
                loss_fn=noisy_loss).fit()
    resumed = Trainer(tiny_model(), TASK, cfg, seed=3, run=run, progress_bar=False, loss_fn=noisy_loss)
    resumed.restore(run.checkpoints()[-1])
    torch.manual_seed(12345)  # clobber the restored global RNG state
    resumed.fit(resume=False)
    assert not torch.equal(full.model.W_E, resumed.model.W_E)


def test_checkpoint_step_comes_from_its_metadata_not_its_name(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=4, checkpoint_every=4, warmup_steps=0)
    run = Run.create(tmp_path, "d", {}, "smoke", "")
    Trainer(tiny_model(), TASK, cfg, seed=0, run=run, progress_bar=False).fit()
    [ckpt] = run.checkpoints()
    renamed = ckpt.with_name("step-9.safetensors")
    ckpt.rename(renamed)
    (run.path / "checkpoints" / "step-x.safetensors").write_bytes(b"stray")  # ignored, never crashes
    assert run.checkpoints() == [renamed]
    trainer = Trainer(tiny_model(), TASK, cfg, seed=0, run=run, progress_bar=False)
    trainer.restore(renamed)
    assert trainer.step == 4
    save_weights(tiny_model().state_dict(), tmp_path / "plain.safetensors")  # a model file is no checkpoint
    with pytest.raises(ConfigError, match="checkpoint format None"):
        trainer.restore(tmp_path / "plain.safetensors")


def test_weights_refuse_wrong_shapes_and_non_safetensors(tmp_path):
    model = tiny_model()
    path = tmp_path / "w.safetensors"
    save_weights(model.state_dict(), path)
    other = build_model(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=16, n_ctx=16))
    with pytest.raises(ConfigError, match="do not match the config.*shape"):
        load_state(other, load_weights(path), path)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="empty"):
        load_weights(tmp_path / "empty.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="not a valid safetensors"):
        load_weights(tmp_path / "trunc.safetensors")


def jump_at(step_of_jump: int, eval_every: int):
    """An evaluation whose metric jumps 0 → 1 in the eval interval ending at `step_of_jump` (and drifts a little
    elsewhere), counting evaluations to know the step."""
    calls = {"n": 0}

    def evaluate(model):
        calls["n"] += 1
        step = calls["n"] * eval_every
        return {"score": (1.0 if step >= step_of_jump else 0.0) + 0.01 * step / eval_every, "label": "text"}
    return evaluate


def test_dense_windows_keep_snapshots_where_the_metrics_moved_most(tmp_path):
    cfg = TrainConfig(steps=60, batch_size=4, eval_every=10, warmup_steps=0, snapshots=0, dense_windows=1)
    run = Run.create(tmp_path, "d", {}, "smoke", "")
    Trainer(tiny_model(), TASK, cfg, seed=0, run=run, evaluate=jump_at(40, 10), progress_bar=False).fit()
    # every eval step, and each step of the interval (30, 40] where the score jumped; nothing pending
    assert list(run.snapshots()) == [0, 10, 20, 30, *range(31, 40), 40, 50, 60]
    assert not list((run.path / "snapshots" / "pending").glob("*.safetensors"))
    state = json.loads((run.path / "snapshots" / "dense.json").read_text())
    assert [(w["start"], w["end"]) for w in state["windows"]] == [(30, 40)]


def test_dense_windows_resume_as_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=60, batch_size=4, eval_every=10, warmup_steps=0, snapshots=0, dense_windows=2,
                      checkpoint_every=20, log_every=1)
    full = Run.create(tmp_path, "full", {}, "smoke", "")
    Trainer(tiny_model(), TASK, cfg, seed=0, run=full, evaluate=jump_at(50, 10), progress_bar=False).fit()
    part = Run.create(tmp_path, "part", {}, "smoke", "")
    with pytest.raises(Interrupt):  # past the jump and its eval, so the rewind must undo a kept window
        Trainer(tiny_model(), TASK, cfg, seed=0, run=part, evaluate=jump_at(50, 10), progress_bar=False,
                callback=stop_at(55)).fit()
    evaluate = jump_at(50, 10)
    evaluate(None), evaluate(None), evaluate(None), evaluate(None)  # the resumed run evaluates from step 50
    Trainer(tiny_model(), TASK, cfg, seed=0, run=part, evaluate=evaluate, progress_bar=False).fit()
    assert list(part.snapshots()) == list(full.snapshots())
    assert (part.path / "snapshots" / "dense.json").read_text() == (full.path / "snapshots" / "dense.json").read_text()


def test_resume_after_a_phase_that_freezes_weights_is_bit_identical(tmp_path):
    """The frozen weights' last gradients from the phase before must not count in the next phase's clipping:
    a resumed run has none, so counting them made the two runs clip differently."""
    def freeze_embedding(model):
        model.embed.weight.requires_grad_(False)

    def phases():
        return [Phase("all", TrainConfig(steps=6, batch_size=8, warmup_steps=0, checkpoint_every=3, log_every=1)),
                Phase("frozen", TrainConfig(steps=6, batch_size=8, warmup_steps=0, checkpoint_every=3, log_every=1,
                                            grad_clip=0.01), setup=freeze_embedding)]  # clips every step

    full = Trainer(tiny_model(), TASK, phases(), seed=3, progress_bar=False)
    full.fit()
    run = Run.create(tmp_path, "p", {}, "smoke", "")
    with pytest.raises(Interrupt):
        Trainer(tiny_model(), TASK, phases(), seed=3, run=run, progress_bar=False, callback=stop_at(8)).fit()
    assert run.checkpoints()[-1].name == "step-6.safetensors"  # where the frozen phase starts
    resumed = Trainer(tiny_model(), TASK, phases(), seed=3, run=run, progress_bar=False)
    resumed.fit()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def retrain_block_phases(prefix: str = "blocks.0."):
    """Train everything, then re-initialise `prefix` and train it alone (the induction experiment's recipe)."""
    step = {"batch_size": 8, "warmup_steps": 0, "checkpoint_every": 3, "log_every": 1}
    return [Phase("all", TrainConfig(steps=6, **step)),
            Phase("retrain", TrainConfig(steps=6, optimizer="sgd", lr=0.1, trainable=(prefix,), **step),
                  setup=lambda model: model.reinit((prefix,)))]


def test_a_phase_with_trainable_prefixes_trains_only_them_and_resumes_bit_identically(tmp_path):
    full = Trainer(tiny_model(), TASK, retrain_block_phases(), seed=3, progress_bar=False,
                   callback=lambda p: p.step == 6 and stash.update(
                       {k: v.clone() for k, v in full.model.state_dict().items()}))
    stash = {}
    full.fit()
    after = full.model.state_dict()
    for name, value in after.items():
        moved = not torch.equal(stash[name], value)
        assert moved == name.startswith("blocks.0."), name  # the rest kept its step-6 values
    assert all(p.requires_grad for p in full.model.parameters())  # the freeze lasts only for the phase
    run = Run.create(tmp_path, "r", {}, "smoke", "")
    with pytest.raises(Interrupt):
        Trainer(tiny_model(), TASK, retrain_block_phases(), seed=3, run=run, progress_bar=False,
                callback=stop_at(10)).fit()
    assert run.checkpoints()[-1].name == "step-9.safetensors"  # inside the retrain phase
    resumed = Trainer(tiny_model(), TASK, retrain_block_phases(), seed=3, run=run, progress_bar=False)
    torch.manual_seed(12345)
    resumed.fit()
    for (k, a), b in zip(after.items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_phase_with_its_own_task_trains_on_it():
    shorter = RepeatedTokens(RepeatedTokensConfig(d_vocab=16, seq_len=12, min_segment=2, max_segment=5))
    lengths = []

    def recording_loss(model, batch):
        lengths.append(batch.inputs.shape[1])
        return task_loss(model, batch)

    phases = [Phase("first", TrainConfig(steps=3, batch_size=4, warmup_steps=0)),
              Phase("second", TrainConfig(steps=2, batch_size=4, warmup_steps=0), task=shorter)]
    Trainer(tiny_model(), TASK, phases, seed=0, progress_bar=False, loss_fn=recording_loss).fit()
    assert lengths == [16, 16, 16, 12, 12]


def test_reinit_draws_fresh_values_for_the_named_parameters_only():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    model.reinit(("blocks.0.attn.",))
    for name, value in model.state_dict().items():
        fresh = name.startswith("blocks.0.attn.") and name.endswith("weight")  # biases start at zero either way
        assert torch.equal(before[name], value) != fresh, name
    assert float(model.get_parameter("blocks.0.attn.qkv.weight").std()) == pytest.approx(model.cfg.init_std, rel=0.2)
    with pytest.raises(ConfigError, match="reinit: prefix 'blocks.7.' matches no parameter"):
        model.reinit(("blocks.0.", "blocks.7."))  # one prefix that matches nothing is enough


def test_a_trainable_prefix_that_matches_nothing_names_the_phase():
    with pytest.raises(ConfigError, match="phase 'retrain': trainable prefix 'block.0.' matches no parameter"):
        Trainer(tiny_model(), TASK, [Phase("retrain", TrainConfig(steps=2, trainable=("block.0.",)))], seed=3,
                progress_bar=False).fit()


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    cfg = TrainConfig(steps=12, batch_size=8, warmup_steps=0, checkpoint_every=100, log_every=1)
    run = Run.create(tmp_path, "k", {}, "smoke", "")
    with pytest.raises(Interrupt):
        Trainer(tiny_model(), TASK, cfg, seed=0, run=run, progress_bar=False, callback=stop_at(5)).fit()
    assert not run.checkpoints() and [r["step"] for r in run.metrics()] == [1, 2, 3, 4, 5]
    Trainer(tiny_model(), TASK, cfg, seed=0, run=run, progress_bar=False).fit()  # starts over from step 0
    assert [r["step"] for r in run.metrics()] == list(range(1, 13))


def test_dense_windows_resume_from_a_checkpoint_inside_a_kept_window(tmp_path):
    """The checkpoint (15) lies inside the window (10, 20] the run kept before it was killed (25): the resumed
    run writes only steps 16–19 again, so 11–15 must survive the rewind."""
    cfg = TrainConfig(steps=40, batch_size=4, eval_every=10, warmup_steps=0, snapshots=0, dense_windows=1,
                      checkpoint_every=15, log_every=1)
    full = Run.create(tmp_path, "full", {}, "smoke", "")
    Trainer(tiny_model(), TASK, cfg, seed=0, run=full, evaluate=jump_at(20, 10), progress_bar=False).fit()
    assert list(full.snapshots()) == [0, 10, *range(11, 20), 20, 30, 40]
    part = Run.create(tmp_path, "part", {}, "smoke", "")
    with pytest.raises(Interrupt):
        Trainer(tiny_model(), TASK, cfg, seed=0, run=part, evaluate=jump_at(20, 10), progress_bar=False,
                callback=stop_at(25)).fit()
    evaluate = jump_at(20, 10)
    evaluate(None)  # the resumed run (from step 15) evaluates from step 20
    Trainer(tiny_model(), TASK, cfg, seed=0, run=part, evaluate=evaluate, progress_bar=False).fit()
    assert list(part.snapshots()) == list(full.snapshots())
    assert (part.path / "snapshots" / "dense.json").read_text() == (full.path / "snapshots" / "dense.json").read_text()
