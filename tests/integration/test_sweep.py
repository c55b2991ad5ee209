"""`workbench sweep` runs a grid through a real local Ray cluster (loopback only)."""

import json

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
