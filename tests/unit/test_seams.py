"""The core seams, each exercised by a toy experiment (tests/toys.py): real-valued inputs and a curriculum,
named loss components, variants (resumed after SIGKILL), phases that insert a module, snapshots by step,
per-layer blocks, looped hooks, batch attention masks, devices."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

import workbench
from tests.conftest import REPO, Interrupt, stop_at
from tests.toys import Regression, RegressionConfig, registered
from workbench.config import ConfigError
from workbench.device import resolve_device
from workbench.experiments.runner import evaluate_saved, load, resume, run
from workbench.models import ModelConfig, build_model
from workbench.models.io import load_weights
from workbench.runs import Run
from workbench.tasks import segment_mask
from workbench.train import snapshot_steps


@pytest.fixture(autouse=True)
def toys():
    with registered():
        yield


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- inputs, losses, curricula ---
def test_regression_task_is_real_valued_and_its_curriculum_reads_the_step():
    task = Regression(RegressionConfig(d=4, every=3))
    early = task.sample(2, torch.Generator().manual_seed(0), step=0)
    late = task.sample(2, torch.Generator().manual_seed(0), step=9)
    assert early.inputs.dtype == torch.float32 and early.inputs.shape == (2, 8, 4)
    assert (early.inputs[..., 1:] == 0).all() and (late.inputs[..., :4] != 0).all()
    with pytest.raises(ConfigError, match="real-valued"):
        early.tokens  # noqa: B018


def test_real_valued_run_with_a_curriculum_resumes_bit_identically(tmp_path):
    full = run("toy-regression", "smoke", out=tmp_path / "full", progress_bar=False)
    with pytest.raises(Interrupt):  # checkpoint at 10, curriculum step every 3: the resume crosses both
        run("toy-regression", "smoke", out=tmp_path / "cut", callback=stop_at(14), progress_bar=False)
    [cut] = (tmp_path / "cut").iterdir()
    resumed = resume(cut, progress_bar=False)
    assert same_weights(load(full["run_dir"]).model.state_dict(), load(cut).model.state_dict())
    assert resumed["metrics"] == full["metrics"]
    assert Run(cut).metrics() == Run(full["run_dir"]).metrics()


def test_load_goes_through_the_experiments_own_build(tmp_path):
    result = run("toy-regression", "smoke", out=tmp_path, progress_bar=False)
    model = workbench.load_model(result["run_dir"])
    assert "output_scale" in dict(model.named_parameters())  # build_model alone would lack it and fail
    assert evaluate_saved(result["run_dir"])["metrics"] == pytest.approx(result["metrics"])


def test_named_loss_components_are_all_logged(tmp_path):
    result = run("toy-phases", "smoke", out=tmp_path, progress_bar=False)
    rows = Run(result["run_dir"]).metrics()
    assert all({"loss", "mse", "l1"} <= row.keys() for row in rows)
    assert rows[0]["loss"] == pytest.approx(rows[0]["mse"] + 1e-3 * rows[0]["l1"], rel=1e-5)


# --- phases ---
def test_a_phase_inserts_a_module_and_resume_survives_it(tmp_path):
    full = run("toy-phases", "smoke", out=tmp_path / "full", progress_bar=False)
    rows = Run(full["run_dir"]).metrics()
    assert {r["phase"] for r in rows} == {"pretrain", "adapt"}
    with pytest.raises(Interrupt):  # inside phase 2 (steps 15–30), after its checkpoint at 20
        run("toy-phases", "smoke", out=tmp_path / "cut", callback=stop_at(24), progress_bar=False)
    [cut] = (tmp_path / "cut").iterdir()
    resume(cut, progress_bar=False)
    a, b = load(full["run_dir"]).model.state_dict(), load(cut).model.state_dict()
    assert "adapter.weight" in a and same_weights(a, b)
    # the optimizer state is keyed by name: the inserted module's moments sit under its own name
    from workbench.models.io import load_weights

    state = load_weights(Run(cut).checkpoints()[-1])
    assert "optim.adapter.weight.exp_avg" in state and "optim.blocks.0.attn.qkv.weight.exp_avg" in state
    # a snapshot from before the insertion loads into the smaller architecture
    early = workbench.load_model(cut, step=10)
    assert not hasattr(early, "adapter")


# --- snapshots ---
def test_snapshot_steps_are_log_spaced_and_bounded():
    steps = snapshot_steps(3000, 30)
    assert steps[0] == 0 and steps[-1] == 3000 and 20 <= len(steps) <= 32
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    assert gaps[-1] > 10 * gaps[2]  # dense early, sparse late
    assert snapshot_steps(100, 0) == []


def test_snapshots_load_by_step(tmp_path):
    result = run("toy-regression", "smoke", out=tmp_path, progress_bar=False)
    steps = workbench.snapshots(result["run_dir"])
    assert steps == snapshot_steps(30, 8)
    first, last = (workbench.load_model(result["run_dir"], step=s) for s in (steps[0], steps[-1]))
    assert same_weights(last.state_dict(), workbench.load_model(result["run_dir"]).state_dict())
    assert not torch.equal(first.blocks[0].attn.qkv.weight, last.blocks[0].attn.qkv.weight)
    with pytest.raises(ConfigError, match="no snapshot at step 7; snapshots: "):
        workbench.load_model(result["run_dir"], step=7)


# --- variants ---
def test_variants_train_in_one_run_and_a_criterion_compares_them(tmp_path):
    result = run("toy-variants", "smoke", out=tmp_path, progress_bar=False)
    run_dir = Run(result["run_dir"])
    assert run_dir.variants() == ["narrow", "wide"]
    for name in ("narrow", "wide"):
        assert (run_dir.path / "variants" / name / "model.safetensors").exists()
        assert run_dir.variant(name).metrics() and run_dir.variant(name).snapshots()
    [criterion] = result["criteria"]
    assert criterion["bound"] == pytest.approx(2.0 * result["metrics"]["narrow.mse"])
    assert criterion["passed"] == (result["metrics"]["wide.mse"] <= criterion["bound"])
    assert workbench.load_model(run_dir.path, variant="narrow").cfg.d_model == 8
    assert workbench.load_model(run_dir.path, variant="wide").cfg.d_model == 16
    with pytest.raises(ConfigError, match="trains variants narrow, wide; pick one"):
        workbench.load_model(run_dir.path)
    from workbench.experiments.runner import ship

    shipped = ship(run_dir.path, tmp_path / "data", allow_failed=True)  # both variants, snapshots shared out
    for name in ("narrow", "wide"):
        steps = workbench.snapshots(shipped, variant=name)
        assert len(steps) == 4  # 8 a run, shared by two variants
        half = load_weights(shipped / "variants" / name / "snapshots" / f"step-{steps[1]}.safetensors")
        assert all(v.dtype == torch.float16 for v in half.values())  # shipped snapshots are float16 …
        full = workbench.load_model(run_dir.path, variant=name, step=steps[1]).state_dict()
        replay = workbench.load_model(shipped, variant=name, step=steps[1]).state_dict()
        for key in full:  # … and load into the float32 model within fp16 rounding
            torch.testing.assert_close(replay[key], full[key], rtol=1e-3, atol=1e-4)
        assert same_weights(workbench.load_model(shipped, variant=name).state_dict(),
                            workbench.load_model(run_dir.path, variant=name).state_dict())


def test_set_reaches_into_a_variant_and_bad_variant_keys_name_themselves(tmp_path):
    result = run("toy-variants", "smoke", overrides={"variants.narrow.model.d_model": "12"}, out=tmp_path,
                 progress_bar=False)
    assert workbench.load_model(result["run_dir"], variant="narrow").cfg.d_model == 12
    with pytest.raises(ConfigError, match=r"variants.narrow: model.d_modl: unknown key 'd_modl'"):
        run("toy-variants", "smoke", overrides={"variants.narrow.model.d_modl": "12"}, out=tmp_path)
    with pytest.raises(ConfigError, match="variant name may use letters"):
        run("toy-variants", "smoke", overrides={"variants": {"a.b": {}}}, out=tmp_path)


def test_two_variant_run_resumes_after_sigkill_inside_the_second_variant(tmp_path):
    args = ["run", "toy-variants", "--smoke", "--set", "train.steps=600", "--set", "train.checkpoint_every=25",
            "--set", "train.log_every=25", "--out", str(tmp_path / "cut")]
    proc = subprocess.Popen([sys.executable, "-m", "tests.toys", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline, wide = time.time() + 240, None
    while time.time() < deadline:
        runs = list((tmp_path / "cut").glob("toy-variants-*"))
        wide = runs and Run(runs[0]).variant("wide")
        if wide and len(wide.checkpoints()) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cut = Run(runs[0])
    assert cut.status() == "interrupted" and not (wide.path / "model.safetensors").exists()
    assert (cut.path / "variants" / "narrow" / "model.safetensors").exists()
    narrow_before = (cut.path / "variants" / "narrow" / "model.safetensors").read_bytes()
    resumed = resume(cut.path, progress_bar=False)
    full = run("toy-variants", "smoke", overrides={"train.steps": 600, "train.checkpoint_every": 25,
                                                    "train.log_every": 25}, out=tmp_path / "full", progress_bar=False)
    for name in ("narrow", "wide"):
        a = workbench.load_model(full["run_dir"], variant=name).state_dict()
        assert same_weights(a, workbench.load_model(cut.path, variant=name).state_dict()), name
    assert (cut.path / "variants" / "narrow" / "model.safetensors").read_bytes() == narrow_before  # not retrained
    assert resumed["metrics"] == full["metrics"]


def test_cli_eval_and_runs_cover_variants(tmp_path):
    result = run("toy-variants", "smoke", out=tmp_path, progress_bar=False)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tests.toys", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    listing = cli("runs", "--out", str(tmp_path))
    assert "variants: narrow, wide" in listing.stdout
    evaluated = cli("eval", result["run_dir"], "--json")
    assert json.loads(evaluated.stdout.splitlines()[-1])["metrics"] == pytest.approx(result["metrics"])


# --- blocks, loops, masks ---
def test_per_layer_block_pattern_and_mlp_widths():
    cfg = ModelConfig(n_layers=4, d_model=16, n_heads=2, d_vocab=11, n_ctx=8, block=["attention", "mlp"],
                      d_mlp=[0, 24, 32, 40])
    model = build_model(cfg, seed=0)
    assert [type(b).__name__ for b in model.blocks] == ["Block", "MLPBlock", "Block", "MLPBlock"]
    assert model.blocks[0].mlp is None and model.blocks[2].mlp.fc_in.out_features == 32
    assert cfg.attention_layers == [0, 2]
    _, cache = model.run_with_cache(torch.zeros(1, 5, dtype=torch.long))
    assert "blocks.1.attn.hook_pattern" not in cache and "blocks.1.hook_mlp_out" in cache
    with pytest.raises(ConfigError, match=r"layers \[1, 3\] have no attention"):
        model.W_Q  # noqa: B018
    from workbench.hooks.attention import attention_patterns

    with pytest.warns(UserWarning, match=r"skipping layers \[1, 3\]"):
        assert list(attention_patterns(model, torch.zeros(1, 5, dtype=torch.long))) == [0, 2]
    with pytest.raises(ConfigError, match="give one per layer or a pattern"):
        ModelConfig.parse({"n_layers": 3, "block": ["attention", "mlp"]})
    with pytest.raises(ConfigError, match="'mlp' blocks but model.d_mlp is 0"):
        ModelConfig.parse({"n_layers": 2, "block": ["attention", "mlp"], "d_mlp": 0})


def test_looped_block_fires_its_hooks_once_per_iteration_with_shared_weights():
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=11, n_ctx=8, loops=3)
    model = build_model(cfg, seed=0)
    tokens = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(0))
    logits, cache = model.run_with_cache(tokens)
    resid = [cache[f"blocks.0.loop.{t}.hook_resid_post"] for t in range(3)]
    assert not torch.equal(resid[0], resid[1]) and not torch.equal(resid[1], resid[2])
    # the same weights, applied three times by hand
    block, x = model.blocks[0].block, cache["blocks.0.loop.0.hook_resid_pre"]
    for t in range(3):
        x = block(x)
        torch.testing.assert_close(x, resid[t])
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in build_model(cfg.model_copy(update={"loops": 1})).parameters())
    torch.testing.assert_close(model(tokens), logits)  # fast path (no hooks) equals the cached run


def test_looped_read_outs_per_iteration_and_more_loops_at_test_time():
    """Yang et al.'s looped model by hand: x0 = embed; Y_1 = block(x0); Y_{t+1} = block(Y_t + x0)."""
    from workbench.hooks.icl import iteration_outputs

    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_input=4, d_output=1, n_ctx=8, loops=3,
                      loop_input_injection=True)
    model = build_model(cfg, seed=0)
    x = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    outputs = iteration_outputs(model, x)
    x0 = model.embed(x) + model.pos_embed(torch.arange(6))
    state, block = model.blocks[0].block(x0), model.blocks[0].block
    for t in range(3):
        if t:
            state = block(state + x0)
        torch.testing.assert_close(outputs[t], model.unembed(model.ln_final(state)))
    outputs[-1].sum().backward()  # gradients flow through the read-outs (a loss over the last T trains)
    assert all(p.grad is not None for p in model.blocks[0].parameters())
    longer = model.with_loops(6)
    assert longer.cfg.loops == 6 and model.cfg.loops == 3
    torch.testing.assert_close(iteration_outputs(longer, x)[:3], outputs.detach())
    with pytest.raises(ValueError, match="needs a looped model"):
        iteration_outputs(model.with_loops(1), x)


def test_identity_read_in_and_mlp_read_out_equal_a_hand_written_classifier():
    """Reddy's bursty classifier: inputs are the residual stream; an MLP reads the last position out."""
    cfg = ModelConfig(n_layers=1, d_model=8, n_heads=1, norm="none", d_input=8, read_in="identity", d_output=3,
                      readout=[16, 12], act="relu", positional="none", n_ctx=5)
    model = build_model(cfg, seed=0)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    out, cache = model.run_with_cache(x)
    torch.testing.assert_close(cache["hook_embed"], x)
    resid = x + cache["blocks.0.hook_attn_out"]
    hidden = torch.relu(model.readout[0].linear(resid))
    hidden = torch.relu(hidden @ model.readout[1].linear.weight.T + model.readout[1].linear.bias)
    torch.testing.assert_close(out, hidden @ model.unembed.weight.T + model.unembed.bias)
    assert cache["readout.1.hook_post"].shape == (2, 5, 12) and out.shape == (2, 5, 3)
    torch.testing.assert_close(model.W_E, torch.eye(8))
    with pytest.raises(ConfigError, match="MLP"):
        model.W_U  # noqa: B018
    with pytest.raises(ConfigError, match="d_input == model.d_model"):
        ModelConfig.parse({"d_model": 8, "n_heads": 1, "d_input": 6, "read_in": "identity"})
    with pytest.raises(ConfigError, match="hidden widths must be ≥ 1"):
        ModelConfig.parse({"readout": [0]})


def test_segment_mask_equals_a_hand_written_visibility_matrix():
    segments = torch.tensor([[1, 1, 2, 2, 2, 3]])
    # causal AND same segment, written out by hand: row = query, column = key
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    for positional in ("none", "alibi", "rotary"):
        model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=11, n_ctx=8,
                                        positional=positional), seed=0)
        tokens = torch.randint(0, 11, (1, 6), generator=torch.Generator().manual_seed(0))
        mask = segment_mask(segments)
        explicit, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: "pattern" in n)
        for layer in range(2):
            assert torch.equal(cache[f"blocks.{layer}.attn.hook_pattern"][0] > 0, expected.expand(2, -1, -1))
        torch.testing.assert_close(model(tokens, attention_mask=mask), explicit, atol=1e-5, rtol=0)  # fast path
        # no absolute positions: a segment in the packed batch computes what it computes alone
        torch.testing.assert_close(explicit[:, 2:5], model(tokens[:, 2:5]), atol=1e-5, rtol=0)


def test_bidirectional_mask_with_a_next_token_objective_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.mask='bidirectional' with RepeatedTokens: .*own target"):
        run("induction", "smoke", overrides={"model.mask": "bidirectional"}, out=tmp_path)
    assert not list(tmp_path.iterdir())


# --- devices ---
def test_device_resolution_and_clear_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="model.device='cuda' is not available"):
            resolve_device("cuda")


def test_resume_with_a_device_override_continues(tmp_path):
    with pytest.raises(Interrupt):
        run("toy-regression", "smoke", out=tmp_path, callback=stop_at(14), progress_bar=False)
    [cut] = tmp_path.iterdir()
    result = resume(cut, progress_bar=False, device="auto")
    assert result["config"]["model"]["device"] == "auto"
    assert workbench.load_model(cut, device="cpu").device.type == "cpu"


def test_a_criterion_judged_only_in_full_runs_is_still_measured_and_reported_in_quick():
    from workbench.experiments.base import Criterion, verdict

    far = Criterion("far", "m", ">=", 1.0, "tests", modes=("full",))
    near = Criterion("near", "m", ">=", 0.1, "tests")
    quick = [c.check({"m": 0.5}, "quick") for c in (far, near)]
    full = [c.check({"m": 0.5}, "full") for c in (far, near)]
    assert quick[0]["value"] == 0.5 and not quick[0]["passed"] and not quick[0]["counts"]
    assert full[0]["counts"] and quick[1]["counts"]
    assert verdict(quick) and not verdict(full)
    assert far.needs == "≥ 1 (judged in full runs)"
    assert far.check({"m": 0.5})["counts"]  # no mode given: every criterion counts


def test_a_metric_made_of_parts_is_nan_when_any_part_is_so_its_criterion_fails():
    from workbench.experiments.base import Criterion, strict_max, strict_min

    nan = float("nan")
    assert min([0.9, nan]) == 0.9  # what Python's min does: the NaN is dropped
    assert math.isnan(strict_min([0.9, nan])) and math.isnan(strict_max([0.1, nan]))
    assert strict_min([0.9, 0.3]) == 0.3 and strict_max(v for v in (0.9, 0.3)) == 0.9
    assert not Criterion("all exact", "m", ">=", 0.5, "tests").check({"m": strict_min([0.9, nan])})["passed"]


def test_a_variant_run_shows_the_criteria_reading_its_metrics_or_no_variants():
    from workbench.experiments.base import Criterion
    from workbench.experiments.runner import criteria_rows

    class Exp:
        criteria = [Criterion("a alone", "a.x", ">=", 0.0, "tests"),
                    Criterion("b against a", "b.x", "<=", 1.0, "tests", versus="a.x"),
                    Criterion("across", "share", ">=", 0.0, "tests"),
                    Criterion("a dotted non-variant", "probe.acc", ">=", 0.0, "tests")]

    metrics = {"a.x": 1.0, "b.x": 0.5, "share": 0.5, "probe.acc": 0.9}
    result = {"config": {"variants": {"a": {}, "b": {}}}, "criteria": [c.check(metrics) for c in Exp.criteria]}
    shown = {v: [r["criterion"] for r in criteria_rows(Exp, result, v)] for v in ("a", "b", None)}
    assert shown["a"] == ["a alone", "b against a", "across", "a dotted non-variant"]
    assert shown["b"] == ["b against a", "across", "a dotted non-variant"]
    assert shown[None] == [c.name for c in Exp.criteria]
