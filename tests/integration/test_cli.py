"""The `workbench` command as a user runs it: real subprocesses, real exit codes."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def workbench(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_list_shows_the_catalog():
    out = workbench("list")
    assert out.returncode == 0 and "induction" in out.stdout and "Olsson" in out.stdout


def test_run_smoke_json_last_line_then_runs_and_eval(tmp_path):
    out = workbench("run", "induction", "--smoke", "--json", "--out", str(tmp_path), "--set", "train.steps=12")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["experiment"] == "induction" and result["mode"] == "smoke"
    assert result["config"]["train"]["steps"] == 12
    assert result["command"].startswith("workbench run induction --smoke")
    listing = workbench("runs", "--out", str(tmp_path))
    assert "induction" in listing.stdout and "done" in listing.stdout
    evaluated = workbench("eval", result["run_dir"], "--json")
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["metrics"] == pytest.approx(result["metrics"])


@pytest.mark.parametrize("args, message", [
    (["run", "inducton", "--smoke"], "unknown experiment 'inducton'"),
    (["run", "induction", "--smoke", "--set", "model.n_layrs=3"], "unknown key 'n_layrs'"),
    (["run", "induction", "--smoke", "--set", "model.n_layers=three"], "model.n_layers"),
    (["run", "induction", "--smoke", "--set", "model.d_model=30"], "not divisible by model.n_heads"),
    (["run", "induction", "--smoke", "--set", "train.steps=0"], "train.steps"),
    (["run", "induction", "--smoke", "--set", "task.seq_len=200"], "exceeds model.n_ctx"),
    (["run", "induction", "--smoke", "--seed", "-1"], "--seed"),
    (["run", "induction", "--smoke", "--set", "nokey"], "expected key=value"),
    (["eval", "does/not/exist"], "not a run directory"),
])
def test_bad_input_is_one_clear_line_and_no_run_dir(args, message, tmp_path):
    out = workbench(*args, "--out", str(tmp_path)) if args[0] == "run" else workbench(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.stderr
    assert not list(tmp_path.iterdir())
