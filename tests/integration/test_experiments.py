"""Every registered experiment: smoke run end to end, reload, re-evaluate, resume identically."""

import json

import pytest
import torch

from tests.conftest import Interrupt, stop_at
from workbench import experiments
from workbench.experiments.runner import evaluate_saved, load, resume, run
from workbench.runs import Run

RESULT_KEYS = {"experiment", "mode", "config", "metrics", "criteria", "passed", "seconds", "version", "git_sha"}


@pytest.mark.parametrize("name", experiments.names())
def test_smoke_run_end_to_end(name, tmp_path):
    result = run(name, mode="smoke", out=tmp_path, progress_bar=False)
    assert result.keys() >= RESULT_KEYS
    exp = experiments.get(name)
    assert [c["name"] for c in result["criteria"]] == [c.name for c in exp.criteria]
    assert result["passed"] == all(c["passed"] for c in result["criteria"])
    run_dir = Run(result["run_dir"])
    assert run_dir.status() == "done"
    assert json.loads((run_dir.path / "result.json").read_text())["metrics"] == result["metrics"]
    assert run_dir.metrics() and list((run_dir.path / "figures").glob("*.json"))
    # reload and re-evaluate: same numbers, nothing written
    before = sorted(p.name for p in run_dir.path.rglob("*"))
    again = evaluate_saved(run_dir.path)
    assert again["metrics"] == pytest.approx(result["metrics"], rel=1e-5)
    assert sorted(p.name for p in run_dir.path.rglob("*")) == before
    _, cfg, model = load(run_dir.path)
    assert all(fig.to_dict()["data"] for fig in exp.figures(model, cfg).values())


@pytest.mark.parametrize("name", experiments.names())
def test_resume_continues_identically(name, tmp_path):
    overrides = {"train.checkpoint_every": 10, "train.log_every": 1}
    full = run(name, mode="smoke", overrides=overrides, out=tmp_path / "full", progress_bar=False)
    with pytest.raises(Interrupt):
        run(name, mode="smoke", overrides=overrides, out=tmp_path / "cut", callback=stop_at(15), progress_bar=False)
    [cut_dir] = (tmp_path / "cut").iterdir()
    assert Run(cut_dir).status() == "interrupted"
    resumed = resume(cut_dir, progress_bar=False)
    a, b = load(full["run_dir"])[2].state_dict(), load(resumed["run_dir"])[2].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == full["metrics"]
    steps = [r["step"] for r in Run(cut_dir).metrics()]
    assert steps == sorted(set(steps))  # no duplicated rows after the resume
