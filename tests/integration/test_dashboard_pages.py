"""Fast page tests with Streamlit's AppTest (in-process), plus the dashboard's safety settings.
The real-browser tests in tests/browser load every page on a freshly started server."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from workbench import experiments
from workbench.cli import dashboard_command
from workbench.runs import Run

PAGES = REPO / "workbench" / "dashboard" / "views"


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """Pages read the runs root at run time from the environment, never a default bound at import."""
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path))
    return tmp_path


def page(name):
    """A page as users meet it: through the app's navigation (its links to other pages resolve)."""
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=60).run()
    return at.switch_page(f"views/{name}.py").run()


@pytest.mark.parametrize("name", ["home", "experiment", "compare", "dynamics", "attention", "icl", "codebooks",
                                  "circuits", "performance"])
def test_every_page_renders_without_exception(name, runs_root):
    assert not page(name).exception


def test_home_shows_a_corrupt_run_readably_and_a_live_run_as_running(runs_root):
    (runs_root / "broken").mkdir()
    (runs_root / "broken" / "config.json").write_text("{oops")
    live = Run.create(runs_root, "induction", {}, "smoke", "test")  # holds its lock like a training process
    at = page("home")
    assert not at.exception
    assert any("broken: cannot be read" in w.value and "not valid JSON" in w.value for w in at.warning)
    table = at.dataframe[-1].value
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
    # the page opens on the most induction-like head: on `0 5 9 13 5 9 13`, the shipped model's L1H1
    assert fig["data"][0]["z"]["shape"] == "7, 7" and fig["layout"]["title"]["text"] == "layer 1 head 1"


def test_home_lists_the_runs_of_its_root_and_no_others(runs_root, tmp_path_factory, monkeypatch):
    empty = page("home")
    assert any(str(runs_root) in i.value for i in empty.info)  # the tmp root, not the checkout's runs/
    run = Run.create(runs_root, "induction", {}, "smoke", "test")
    run.unlock()
    assert list(page("home").dataframe[-1].value.index) == [run.path.name]


def test_dashboard_binds_loopback_with_xsrf_protection_on():
    from workbench.cli import parser

    assert parser().parse_args(["dashboard"]).host == "127.0.0.1"
    cmd = dashboard_command("127.0.0.1", 8501)
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.enableXsrfProtection"] == "true"
    assert cmd[4].endswith("workbench/dashboard/app.py")


def test_attention_page_lists_each_variant_like_a_model(runs_root):
    from tests.toys import registered
    from workbench.experiments.runner import run

    with registered():
        result = run("toy-variants", "smoke", out=runs_root, progress_bar=False)
        at = page("attention")
        name = Path(result["run_dir"]).name
        options = at.selectbox[0].options
        assert f"run: {name} (done) / narrow" in options and f"run: {name} (done) / wide" in options
        at.selectbox[0].set_value(f"run: {name} (done) / narrow").run()
        assert not at.exception and not at.error
        assert at.radio[0].options == ["sampled from the task"]  # real-valued inputs: no typed token ids


@pytest.mark.parametrize("name", experiments.names("icl"))
def test_icl_page_renders_each_icl_experiment(name, runs_root):
    from workbench.experiments.runner import run

    run(name, "smoke", out=runs_root, progress_bar=False)
    at = page("icl")
    at.selectbox[0].set_value(name).run()
    assert not at.exception and not at.error
    assert at.get("plotly_chart"), "no figure"
    slider = at.select_slider[0]  # replay: the views redraw for an early snapshot
    assert str(slider.value) == slider.options[-1]
    slider.set_value(int(slider.options[0])).run()
    assert not at.exception and not at.error and at.get("plotly_chart")


def test_codebook_page_searches_codes_and_forces_one(runs_root):
    from workbench.experiments.runner import run

    run("codebook", "smoke", out=runs_root, progress_bar=False)
    at = page("codebooks")
    smoke = next(o for o in at.selectbox[0].options if "run:" in o and "codebook" in o and "base" not in o)
    at.selectbox[0].set_value(smoke).run()
    assert not at.exception and not at.error
    at.slider[0].set_value(0.0).run()  # every code, whatever its precision
    at.radio[0].set_value("by regex over contexts").run()
    at.text_input[0].set_value(r"\d$").run()  # any code that fires on a digit
    assert not at.exception and not at.error
    assert at.dataframe and len(at.dataframe[0].value) > 0
    assert at.get("plotly_chart"), "no intervention figure"
    at.text_input[1].set_value("12x").run()
    assert any("not one" in e.value for e in at.error)  # a bad prompt is one readable line


def test_circuits_page_discovers_with_each_method_and_rejects_a_bad_prompt(runs_root):
    at = page("circuits")
    assert not at.exception and at.metric[0].value == "81"  # the shipped induction model's graph
    slider, final_cpr = at.select_slider[0], at.metric[1].value  # discovery at a snapshot: the circuit as it formed
    assert slider.value == "final" and "300" in slider.options
    slider.set_value(300).run()
    assert not at.exception and not at.error and at.metric[1].value != final_cpr
    slider.set_value("final").run()
    at.slider[0].set_value(2).run()  # pairs: EAP at every snapshot, quickly
    at.radio(key="method").set_value("EAP").run()
    at.button[1].click().run()  # "Run EAP at every snapshot" (the first button runs patching)
    assert not at.exception and not at.error and any(c.key == "over_training" for c in at.get("plotly_chart"))
    at.radio(key="method").set_value("ACDC").run()
    assert not at.exception and any("ACDC kept" in c.value for c in at.caption)
    at.text_input[0].input("1 2 banana").run()
    assert not at.exception and any("'banana' is not a token id" in e.value for e in at.error)


def test_circuits_page_shows_a_compiled_models_true_circuit_beside_the_found_one(runs_root):
    at = page("circuits")
    at.radio(key="circuit_models").set_value("compiled (ground truth)").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles[0] == "the true circuit (live edges)" and "true edges found" in titles[1], titles
    assert "SelectorWidth" in at.code[0].value or "Aggregate" in at.code[0].value
    precision = next(m for m in at.metric if m.label == "edge precision")
    at.radio(key="compiled_method").set_value("ACDC").run()
    assert not at.exception and next(m for m in at.metric if m.label == "edge recall").value == "1.00"
    assert precision.value


def test_home_draws_a_shipped_experiments_figures_with_its_variants_side_by_side(runs_root):
    at = page("home")
    at.toggle(key="figures-length-gen").set_value(True).run()
    assert not at.exception
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert [spec["layout"]["title"]["text"].split(":")[0] for spec in specs] == [
        "copying beyond the training length", "where copying breaks"]
    names = {trace.get("name") for trace in specs[0]["data"]}
    assert {"learned", "rotary", "alibi", "relative-bias", "none"} <= names  # every encoding in one figure


def test_dynamics_step_slider_replays_the_induction_head_forming(runs_root):
    """Early in training the best head's pattern is diffuse; at the end it is the induction stripe: moving the
    slider redraws the map from that snapshot."""
    at = page("dynamics")
    assert not at.exception
    assert at.selectbox[0].value == "shipped: induction"
    assert "Dense snapshots over steps 200–300, 1000–1100, 1400–1500" in " ".join(c.value for c in at.caption)
    slider = at.select_slider[0]
    steps = slider.options
    assert len([s for s in steps if 200 <= int(s) <= 300]) >= 10  # dense where the head forms

    def best_map():
        return next(c for c in at.get("plotly_chart") if json.loads(c.proto.spec)["layout"]["title"]["text"]
                    .startswith("layer "))

    final = json.loads(best_map().proto.spec)
    slider.set_value(200).run()
    assert not at.exception
    early = json.loads(best_map().proto.spec)
    assert early["layout"]["title"]["text"].endswith("at step 200")
    assert early["data"][0]["z"] != final["data"][0]["z"]


def test_experiment_page_is_built_from_the_catalog_with_variants_side_by_side(runs_root):
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=120).run()
    at.query_params["experiment"] = "ssmax"
    at.switch_page("views/experiment.py").run()
    assert not at.exception
    assert at.title[0].value == experiments.get("ssmax").title
    criteria = at.dataframe[0].value
    assert list(criteria["criterion"]) == [c.name for c in experiments.get("ssmax").criteria]
    assert criteria["needs"].str.contains("× softmax.accuracy.x4 = ").any()  # a comparison shows its bound
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]
    assert titles and all(titles)
    assert [c.value for c in at.caption].count("`softmax`") >= 1  # per-variant figures, one column per variant


@pytest.mark.parametrize("name", experiments.names("expressivity"))
def test_experiment_page_draws_each_expressivity_experiment_from_its_shipped_run(name, runs_root):
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=120).run()
    at.query_params["experiment"] = name
    at.switch_page("views/experiment.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == experiments.get(name).title
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]
    assert titles and all(titles), titles


def test_experiment_page_refuses_a_bad_override_before_any_run_exists(runs_root):
    at = page("experiment")
    at.text_area[0].input("model.n_layers=banana").run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception
    assert any("n_layers" in e.value for e in at.error), [e.value for e in at.error]
    assert not list(runs_root.iterdir())


def test_compare_overlays_runs_and_tabulates_their_criteria(runs_root):
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=60).run()
    at.query_params["run"] = ["shipped: ssmax / softmax", "shipped: ssmax / ssmax"]
    at.switch_page("views/compare.py").run()
    assert not at.exception
    assert at.multiselect[0].value == ["shipped: ssmax / softmax", "shipped: ssmax / ssmax"]
    names = [t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert set(names) == {"shipped: ssmax / softmax", "shipped: ssmax / ssmax"}
    table = at.dataframe[0].value
    assert list(table.columns) == ["shipped: ssmax / softmax", "shipped: ssmax / ssmax"] and len(table) >= 1


def test_inspector_hook_point_choice_changes_the_figure(runs_root):
    at = page("inspector")
    assert not at.exception

    def title():
        return json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]

    assert "hook_resid_post" in title()
    at.selectbox[1].set_value("blocks.0.attn.hook_pattern").run()  # [0]: the model picker
    assert not at.exception
    assert title().startswith("blocks.0.attn.hook_pattern [4 × ")
    at.text_input[0].input("BOS 7 oops").run()
    assert any("cannot read 'oops'" in e.value for e in at.error), [e.value for e in at.error]


def test_dynamics_says_which_snapshot_is_corrupt_instead_of_a_stack_trace(runs_root):
    import shutil

    from workbench.runs import data_root

    copy = runs_root / "induction-copy"
    shutil.copytree(data_root() / "induction", copy)
    (copy / "snapshots" / "step-250.safetensors").write_bytes(b"not a safetensors file")
    at = page("dynamics")
    label = next(o for o in at.selectbox[0].options if "induction-copy" in o)
    at.selectbox[0].set_value(label).run()
    assert not at.exception
    assert any("Cannot score every snapshot" in e.value and "step-250" in e.value for e in at.error), \
        [e.value for e in at.error]
    at.select_slider[0].set_value(250).run()
    assert not at.exception
    assert any("Cannot load this model" in e.value for e in at.error)


def test_home_criteria_tables_show_their_text_as_written(runs_root):
    """st.table reads cells as Markdown: a strict bound ("> 0.2") must not become a quote, so the text is escaped."""
    tables = [t.value for t in page("home").table]
    needs = {v for t in tables if "needs" in t.columns for v in t["needs"]}
    assert r"\> 0\.2" in needs and not any(v.startswith(">") for v in needs)
