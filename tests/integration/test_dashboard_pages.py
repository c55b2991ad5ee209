"""Fast page tests with Streamlit's AppTest (in-process), plus the dashboard's safety settings.
The real-browser tests in tests/browser load every page on a freshly started server."""

import json
import tomllib

import pytest
from streamlit.testing.v1 import AppTest

import workbench.runs
from tests.conftest import REPO
from workbench.cli import parser
from workbench.runs import Run

PAGES = REPO / "apps" / "dashboard" / "pages"


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(workbench.runs, "DEFAULT_ROOT", tmp_path)
    return tmp_path


def page(name):
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=60).run()


@pytest.mark.parametrize("name", ["home", "attention", "train", "performance"])
def test_every_page_renders_without_exception(name, runs_root):
    assert not page(name).exception


def test_home_shows_a_corrupt_run_readably_and_a_live_run_as_running(runs_root):
    (runs_root / "broken").mkdir()
    (runs_root / "broken" / "config.json").write_text("{oops")
    live = Run.create(runs_root, "induction", {}, "smoke", "test")  # holds its lock like a training process
    at = page("home")
    assert not at.exception
    assert any("broken: cannot be read" in w.value and "not valid JSON" in w.value for w in at.warning)
    table = at.table[-1].value
    assert table.loc[live.path.name, "status"] == "running"
    live.unlock()


@pytest.mark.parametrize("text, message", [
    ("", "prompt: empty"), ("1 2 banana", "'banana' is not a token id"), ("1 999", "outside the vocabulary"),
    ("1 " * 65, "exceed the model's n_ctx=64"), ("import os; os.system('touch /tmp/x')", "is not a token id"),
])
def test_attention_form_rejects_bad_prompts_readably(text, message, runs_root):
    at = page("attention")
    at.radio[0].set_value("typed token ids").run()
    at.text_input[0].input(text).run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_attention_form_accepts_a_typed_prompt(runs_root):
    at = page("attention")
    at.radio[0].set_value("typed token ids").run()
    at.text_input[0].input("0 5 9 13 5 9 13").run()
    assert not at.exception and not at.error
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["data"][0]["z"]["shape"] == "7, 7" and fig["layout"]["title"]["text"] == "layer 1 head 0"


def test_dashboard_binds_loopback_with_xsrf_protection_on():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True
    args = parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"
