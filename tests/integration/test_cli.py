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
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == (0 if result["passed"] else 1), out.stderr  # 12 steps: criteria missed, exit 1
    assert result["experiment"] == "induction" and result["mode"] == "smoke"
    assert result["config"]["train"]["steps"] == 12
    assert result["command"].startswith("workbench run induction --smoke")
    listing = workbench("runs", "--out", str(tmp_path))
    assert "induction" in listing.stdout and "done" in listing.stdout
    evaluated = workbench("eval", result["run_dir"], "--json")
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["metrics"] == pytest.approx(result["metrics"])


def test_bad_input_in_a_real_process_exits_2_with_one_line(tmp_path):
    """The full catalog runs in-process (test_bad_input.py); this checks the real exit code and stderr."""
    out = workbench("run", "induction", "--smoke", "--set", "model.d_model=30", "--out", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: model.d_model=30 is not divisible by model.n_heads=4; pick d_model a multiple of n_heads "
        "or set model.d_head explicitly"]
    assert not list(tmp_path.iterdir())


def test_circuit_discovers_on_the_shipped_induction_model():
    out = workbench("circuit", "data/induction-circuit", "--method", "acdc", "--pairs", "4", "--path", "L0H2:L1H1.k",
                    "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["method"] == "ACDC" and result["edges"] == 81 and 0 < result["kept"] < 81
    curve = result["curve"]
    assert curve[0]["edges"] == 0 and curve[-1]["edges"] == 81
    assert curve[-1]["faithfulness"] == pytest.approx(1.0, abs=1e-4)  # the full graph is the clean run
    assert 0 < result["cpr"] <= 1.05 and result["path_patching"]["L0H2:L1H1.k"] > 0


def test_notebooks_help_documents_every_flag(capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit) as done:
        main(["notebooks", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "--execute run every notebook" in text and "without it, list the notebooks" in text
    assert "--export {html} also write each executed notebook" in text and "--out OUT where executed" in text


def test_report_is_one_offline_page_with_criteria_figures_and_the_command(tmp_path):
    from workbench.cli import main

    out = tmp_path / "report.html"
    assert main(["report", str(REPO / "data" / "set-prompting"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "Set-based prompting: order independence" in page and "set.max_logit_change" in page
    assert "workbench run set-prompting --quick" in page and page.count("Plotly.newPlot") >= 2
    assert page.count("* plotly.js v") == 1 and "<script src" not in page  # embedded once, nothing fetched


def test_figures_writes_every_figure_of_a_snapshot_and_names_a_bad_format(tmp_path):
    out = workbench("figures", "data/induction", "--step", "260", "--format", "html", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    written = sorted(p.stem for p in tmp_path.glob("*.html"))
    assert written == ["attention_map", "induction_scores", "loss_by_position", "previous_token_scores",
                       "training"]
    bad = workbench("figures", "data/induction", "--format", "gif", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown figure format(s) gif" in bad.stderr
