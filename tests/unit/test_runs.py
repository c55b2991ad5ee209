import json
import sys

import pytest

from workbench import runs
from workbench.runs import Run, atomic_write, exchange, list_runs, read_metrics, replace_dir


def test_run_directory_layout_and_status(tmp_path):
    run = Run.create(tmp_path, "induction", {"a": 1}, "smoke", "cmd")
    assert run.path.name.startswith("induction-")
    assert (run.path / "checkpoints").is_dir() and (run.path / "figures").is_dir()
    assert run.header["config"] == {"a": 1} and run.header["schema_version"] == 1
    assert run.status() == "running"
    run.unlock()
    assert run.status() == "failed"
    atomic_write(run.path / "result.json", json.dumps({"passed": True}))
    assert run.status() == "done"
    [info] = list_runs(tmp_path)
    assert (info.experiment, info.status, info.passed) == ("induction", "done", True)


def test_list_runs_reports_corrupt_directories(tmp_path):
    (tmp_path / "broken-run").mkdir()
    (tmp_path / "broken-run" / "config.json").write_text("{not json")
    [info] = list_runs(tmp_path)
    assert info.status == "corrupt" and "not valid JSON" in info.error


def test_torn_metrics_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write(tmp_path / "x.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_list_runs_is_newest_first_across_experiments(tmp_path, monkeypatch):
    import workbench.runs

    clock = iter([100.0, 200.0, 300.0])
    monkeypatch.setattr(workbench.runs.time, "time", lambda: next(clock))
    made = [Run.create(tmp_path, name, {}, "smoke", "") for name in ("zeta", "alpha", "mid")]
    for run in made:
        run.unlock()
    assert [info.experiment for info in list_runs(tmp_path)] == ["mid", "alpha", "zeta"]  # not by name


def test_stray_checkpoint_names_never_crash_the_listing(tmp_path):
    run = Run.create(tmp_path, "induction", {}, "smoke", "")
    run.unlock()
    (run.path / "checkpoints" / "step-x.safetensors").write_bytes(b"")
    (run.path / "checkpoints" / "step-12.safetensors.bak").write_bytes(b"")
    assert run.checkpoints() == [] and run.status() == "failed"
    [info] = list_runs(tmp_path)
    assert info.status == "failed" and info.error is None


def test_home_is_explicit_or_the_current_project(tmp_path, monkeypatch):
    from workbench.runs import data_root, home, runs_root

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    monkeypatch.delenv("WORKBENCH_RUNS", raising=False)
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    monkeypatch.chdir(project / "notebooks")
    assert home() == project and runs_root() == project / "runs" and data_root() == project / "data"
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "elsewhere"))
    assert data_root() == tmp_path / "elsewhere" / "data"
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "r"))
    assert runs_root() == tmp_path / "r"


def tree(folder, name: str, text: str):
    (folder / name).mkdir()
    (folder / name / "file.txt").write_text(text)
    return folder / name


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    a, b = tree(tmp_path, "a", "A"), tree(tmp_path, "b", "B")
    assert exchange(a, b)  # tmp file systems on Linux (ext4, tmpfs, overlayfs) all support it
    assert (a / "file.txt").read_text() == "B" and (b / "file.txt").read_text() == "A"
    with pytest.raises(FileNotFoundError):
        exchange(a, tmp_path / "missing")


@pytest.mark.parametrize("atomic", [True, False])
def test_replace_dir_puts_the_new_tree_in_place_and_leaves_nothing_else(tmp_path, monkeypatch, atomic):
    swaps = []  # exchange's answers; where the OS has none, two renames
    monkeypatch.setattr(runs, "exchange", lambda a, b: swaps.append(atomic and exchange(a, b)) or swaps[-1])
    replace_dir(tree(tmp_path, "new", "first"), tmp_path / "target")  # nothing there yet: a plain rename
    replace_dir(tree(tmp_path, "newer", "second"), tmp_path / "target")
    assert swaps == [atomic and sys.platform == "linux"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert [p.name for p in (tmp_path / "target").iterdir()] == ["file.txt"]
    assert (tmp_path / "target" / "file.txt").read_text() == "second"
