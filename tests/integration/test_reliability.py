"""Lose no run: SIGKILL mid-training and resume bit-identically; concurrent runs; no code from files."""

import ast
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO
from workbench.config import ConfigError
from workbench.models.io import load_weights
from workbench.runs import Run, list_runs, read_metrics, step_files

# Long enough to be killed twice; checkpoints often so kills land near (and sometimes inside) writes.
ARGS = ["run", "induction", "--smoke", "--set", "train.steps=200", "--set", "train.checkpoint_every=10",
        "--set", "train.eval_every=50", "--set", "train.log_every=5", "--seed", "7"]


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(root, at_least, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [p for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []
        if runs and any(step >= at_least for step in step_files(runs[0] / "checkpoints")):
            return runs[0]
        assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read()}"
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint ≥ {at_least} under {root}")


def test_sigkill_twice_then_resume_gives_bit_identical_weights(tmp_path):
    full = start(*ARGS, "--out", str(tmp_path / "full"))
    cut = start(*ARGS, "--out", str(tmp_path / "cut"))
    run_dir = wait_for_checkpoint(tmp_path / "cut", 30, cut)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    assert Run(run_dir).status() == "interrupted"
    again = start("resume", str(run_dir))
    wait_for_checkpoint(tmp_path / "cut", 100, again)
    again.send_signal(signal.SIGKILL)
    again.wait()
    for ckpt in Run(run_dir).checkpoints():  # every checkpoint left by the kills is whole
        load_weights(ckpt)
    finish = subprocess.run([sys.executable, "-m", "workbench", "resume", str(run_dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert finish.returncode in (0, 1), finish.stderr  # finished (1: a smoke run misses its criteria)
    assert full.wait(timeout=300) in (0, 1)
    [full_dir] = (tmp_path / "full").iterdir()
    a, b = load_weights(full_dir / "model.safetensors"), load_weights(run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == [r["step"] for r in read_metrics(full_dir / "metrics.jsonl")]
    assert not list(run_dir.rglob(".*.tmp"))
    assert len(Run(run_dir).checkpoints()) <= 3  # keep_checkpoints


def test_two_runs_started_together_complete_in_distinct_directories(tmp_path):
    procs = [start("run", "induction", "--smoke", "--out", str(tmp_path)) for _ in range(2)]
    seen_running = False
    while any(p.poll() is None for p in procs):
        statuses = {info.status for info in list_runs(tmp_path)}
        assert "corrupt" not in statuses
        seen_running |= "running" in statuses
        time.sleep(0.05)
    assert [p.returncode for p in procs] in ([0, 0], [0, 1], [1, 0], [1, 1])  # both finished (1: criteria missed)
    infos = list_runs(tmp_path)
    assert len({i.path for i in infos}) == 2 and {i.status for i in infos} == {"done"}
    assert seen_running
    for info in infos:
        load_weights(info.path / "model.safetensors")


class MakesAFile:
    """Unpickling this would create a file: the attack a checkpoint loader must not fall for."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_checkpoint_is_refused_and_never_run(tmp_path):
    from workbench.experiments.runner import load

    data = tmp_path / "data" / "induction"
    data.mkdir(parents=True)
    (data / "config.json").write_text((REPO / "data" / "induction" / "config.json").read_text())
    marker = tmp_path / "pwned"
    (data / "model.safetensors").write_bytes(pickle.dumps(MakesAFile(str(marker))))
    with pytest.raises(ConfigError, match="model.safetensors: not a valid safetensors file"):
        load(data)
    assert not marker.exists()


FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}


def forbidden_uses(path):
    """AST scan: imports of pickle-like modules, eval/exec calls, torch.load without weights_only=True."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"imports {n}" for n in names if n and n.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in {"eval", "exec", "compile", "__import__"}:
                problems.append(f"calls {fn.id}()")
            if isinstance(fn, ast.Attribute) and fn.attr == "load" and getattr(fn.value, "id", "") == "torch":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                problems += [] if safe else ["torch.load without weights_only=True"]
    return [f"{path.relative_to(REPO)}:{p}" for p in problems]


def test_no_code_execution_paths_in_package_or_dashboard():
    files = [*(REPO / "workbench").rglob("*.py"), *(REPO / "apps").rglob("*.py")]
    assert len(files) > 10
    assert [p for f in files for p in forbidden_uses(f)] == []


def test_the_scanner_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\neval('1')\ntorch.load('x')\ntorch.load('y', weights_only=True)\n")
    bad = bad.rename(REPO / "tests" / f".scan_probe_{os.getpid()}.py")
    try:
        found = forbidden_uses(bad)
    finally:
        bad.unlink()
    expected = ["imports pickle", "calls eval()", "torch.load without weights_only=True"]
    assert [f.split(":", 1)[1] for f in found] == expected
