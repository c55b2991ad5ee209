"""`workbench sweep` runs a grid through a real local Ray cluster (loopback only)."""

import json
import os
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


def test_scaling_sweep_trains_each_size_on_a_worker_and_fits_the_law(tmp_path):
    """`workbench sweep scaling --smoke`: no grid, so each of the experiment's sizes is one point, and the fit
    across them (the experiment's own combine_metrics) and its criteria come back in the summary."""
    summary = sweep("scaling", "smoke", out=tmp_path)
    assert [r["variant"] for r in summary["runs"]] == ["d16L1", "d24L1", "d32L1"]
    widths = [Run(r["run_dir"]).header["config"]["model"]["d_model"] for r in summary["runs"]]
    assert widths == [16, 24, 32] and all(r["config"]["variants"] == {} for r in summary["runs"])
    assert {"alpha", "L_inf_minus_floor", "r2", "d16L1.loss"} <= summary["metrics"].keys()
    assert [c["metric"] for c in summary["criteria"]][0] == "r2" and isinstance(summary["passed"], bool)
    assert Path(summary["figures"]["size"]).exists()


def test_sweep_runs_unchanged_on_an_existing_ray_cluster(tmp_path):
    """`ray start --head` on 127.0.0.1 in the test, then the same sweep with `--address`."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=120)
    try:
        summary = sweep("scaling", "smoke", {"variant": ["d16L1", "d24L1", "d32L1"]}, out=tmp_path,
                        address=f"127.0.0.1:{port}")
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert summary["address"] == f"127.0.0.1:{port}"
    assert all(Run(r["run_dir"]).status() == "done" for r in summary["runs"]) and "alpha" in summary["metrics"]
