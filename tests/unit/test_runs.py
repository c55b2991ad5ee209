import json

from workbench.runs import Run, atomic_write, list_runs, read_metrics


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
