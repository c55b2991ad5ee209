"""`workbench sweep` runs a grid through a real local Ray cluster (loopback only)."""

import json
from pathlib import Path

from workbench.runs import Run
from workbench.sweep import combinations, parse_grid, sweep


def test_grid_product():
    grid = parse_grid(["train.lr=1e-3, 3e-3", "model.n_heads=2,4"])
    assert grid == {"train.lr": ["1e-3", "3e-3"], "model.n_heads": ["2", "4"]}
    assert len(combinations(grid)) == 4 and {"train.lr": "3e-3", "model.n_heads": "2"} in combinations(grid)


def test_local_sweep_runs_every_combination(tmp_path):
    summary = sweep("induction", "smoke", {"train.lr": ["1e-3", "3e-3"]}, out=tmp_path)
    assert [r["overrides"] for r in summary["runs"]] == [{"train.lr": "1e-3"}, {"train.lr": "3e-3"}]
    lrs = set()
    for r in summary["runs"]:
        run = Run(r["run_dir"])
        assert run.status() == "done"
        lrs.add(run.header["config"]["train"]["lr"])
    assert lrs == {1e-3, 3e-3}
    [saved] = tmp_path.glob("sweep-induction-*.json")
    assert json.loads(saved.read_text())["runs"][0]["metrics"] == summary["runs"][0]["metrics"]


def test_task_diversity_sweep_over_m_writes_the_combined_transition(tmp_path):
    import plotly.io as pio

    summary = sweep("task-diversity", "smoke", {"task.M": ["4", "64"]}, out=tmp_path)
    assert [r["config"]["task"]["M"] for r in summary["runs"]] == [4, 64]
    assert all(r["config"]["variants"] == {} for r in summary["runs"])  # one model per sweep point
    from workbench import experiments

    fig = experiments.get("task-diversity").combine_sweep(summary["runs"])["transition"]
    model_new = next(t for t in fig.data if t.name == "model, new tasks")
    assert list(model_new.x) == [4, 64] and len(model_new.y) == 2
    assert Path(summary["figures"]["transition"]).read_text() == pio.to_json(fig)  # the file the sweep wrote
