"""Every registered experiment: smoke run end to end, reload, re-evaluate, resume identically.
Experiments with variants are checked model by model (each variant is a sub-run)."""

import json

import pytest
import torch

from tests.conftest import Interrupt, stop_at
from workbench import experiments
from workbench.experiments.runner import evaluate_saved, load, load_models, resume, run
from workbench.runs import Run


def models_of(run_dir) -> dict:
    """Every model of a saved run by variant name ("" for a single-model run)."""
    models = load_models(run_dir)[2]
    return models if isinstance(models, dict) else {"": models}


def sub_runs(run: Run) -> list[Run]:
    return [run.variant(v) for v in run.variants()] or [run]

RESULT_KEYS = {"experiment", "mode", "config", "metrics", "criteria", "passed", "seconds", "version", "git_sha"}


@pytest.mark.parametrize("name", experiments.names())
def test_smoke_run_end_to_end(name, tmp_path):
    result = run(name, mode="smoke", out=tmp_path, progress_bar=False)
    assert result.keys() >= RESULT_KEYS
    exp = experiments.get(name)
    assert [c["name"] for c in result["criteria"]] == [c.name for c in exp.criteria]
    assert result["passed"] == all(c["passed"] for c in result["criteria"] if c["counts"])
    run_dir = Run(result["run_dir"])
    assert run_dir.status() == "done"
    assert json.loads((run_dir.path / "result.json").read_text())["metrics"] == result["metrics"]
    assert all(sub.metrics() for sub in sub_runs(run_dir)) and list((run_dir.path / "figures").glob("*.json"))
    # reload and re-evaluate: same numbers, nothing written
    before = sorted(p.name for p in run_dir.path.rglob("*"))
    again = evaluate_saved(run_dir.path)
    assert again["metrics"] == pytest.approx(result["metrics"], rel=1e-5)
    assert sorted(p.name for p in run_dir.path.rglob("*")) == before
    for variant in run_dir.variants() or [None]:
        _, cfg, model = load(run_dir.path, variant=variant)
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
    full_models, resumed_models = models_of(full["run_dir"]), models_of(resumed["run_dir"])
    for variant, model in full_models.items():
        a, b = model.state_dict(), resumed_models[variant].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), variant
    assert resumed["metrics"] == full["metrics"]
    for sub in sub_runs(Run(cut_dir)):
        steps = [r["step"] for r in sub.metrics()]
        assert steps == sorted(set(steps))  # no duplicated rows after the resume
