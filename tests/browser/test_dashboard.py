"""Drive the dashboard in headless Chromium: every page renders cleanly, controls change figures."""

import json
import re
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
TIMEOUT = 60_000


def assert_clean(page):
    """No Streamlit exception box and no traceback text anywhere on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "Error:" not in body, body[:2000]


def wait_for_render(page):
    page.wait_for_selector('[data-testid="stApp"]', timeout=TIMEOUT)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT)


def test_home_on_a_cold_server_shows_catalog(server, page):
    """First load of a freshly started server (the lazy-import race lived here). The time until the page is
    interactive is logged to out/browser-timings.json (a measurement, not an assertion: speed is benchmarked)."""
    start = time.perf_counter()
    page.goto(server)
    page.get_by_text("Catalog").wait_for(timeout=TIMEOUT)
    page.get_by_text("induction").first.wait_for(timeout=TIMEOUT)
    page.get_by_role("heading", name="Runs").wait_for(timeout=TIMEOUT)  # the page's last section
    wait_for_render(page)
    seconds = time.perf_counter() - start
    assert_clean(page)
    out = REPO / "out" / "browser-timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"first_page_interactive_s": round(seconds, 2)}))
    print(f"first page interactive {seconds:.2f} s after the server answered its health check")


def heatmap_state(page):
    return page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        return plot && plot.data ? JSON.stringify([plot.layout.title.text, plot.data[0].z]) : null;
    }""")


def plot_title(containing: str) -> str:
    """JS: the title of the first plotly figure whose title contains `containing` ('' until one is drawn)."""
    return ("() => [...document.querySelectorAll('.js-plotly-plot')].map(p => p.layout.title.text)"
            f".find(t => t && t.includes('{containing}')) || ''")


def choose(page, label, option):
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.scroll_into_view_if_needed()  # a select that a click first scrolls to closes again as the page scrolls
    page.wait_for_timeout(300)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_attention_page_head_selector_changes_the_figure(server, page):
    page.goto(f"{server}/attention")
    page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    before = heatmap_state(page)
    assert before and "layer 1 head 1" in before  # opens on the shipped model's induction head
    choose(page, "head", "0")
    page.wait_for_function("(old) => { const p = document.querySelector('.js-plotly-plot');"
                           " return p && p.layout.title.text.includes('head 0'); }", arg=before, timeout=TIMEOUT)
    after = heatmap_state(page)
    assert after != before
    assert_clean(page)


def test_attention_page_rejects_a_bad_prompt_readably(server, page):
    page.goto(f"{server}/attention")
    page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    page.get_by_text("typed token ids").click()
    box = page.get_by_label("token ids (space separated)")
    box.fill("1 2 banana")
    box.press("Enter")
    page.get_by_text("'banana' is not a token id").wait_for(timeout=TIMEOUT)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_smoke_run_from_the_experiment_page_completes_and_appears_in_compare(server, page):
    page.goto(f"{server}/experiment?experiment=induction")
    page.get_by_role("tab", name="Run it").click()
    page.get_by_text("smoke — a plumbing check").click()
    wait_for_render(page)
    assert_clean(page)
    page.get_by_role("button", name="Run").click()
    page.get_by_role("button", name="Cancel").wait_for(timeout=TIMEOUT)  # offered while it trains
    page.get_by_text("saved to").wait_for(timeout=120_000)
    wait_for_render(page)
    assert_clean(page)
    assert page.get_by_text("induction (smoke) did not pass").count() == 1  # 30 steps: a plumbing check
    run_name = page.get_by_text("saved to").inner_text().split("/")[-1].split("`")[0].split(";")[0].strip()
    page.goto(f"{server}/compare")
    page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    legend = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name)")
    assert any(run_name in name for name in legend), (run_name, legend)


def test_performance_page_plots_the_shipped_bench(server, page):
    page.goto(f"{server}/performance")
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=TIMEOUT)  # step ratios, cache costs, MFU
    wait_for_render(page)
    assert_clean(page)
    assert "ours/plain" in page.inner_text("body")


def figure_titled(page, prefix):
    return page.evaluate("""(prefix) => {
        const plot = [...document.querySelectorAll('.js-plotly-plot')]
            .find(p => p.layout && p.layout.title && p.layout.title.text.includes(prefix));
        return plot ? JSON.stringify([plot.layout.title.text, plot.data[1].y]) : null;
    }""", prefix)


def test_icl_page_draws_a_fresh_regression_task(server, runs_dir, page):
    from workbench.experiments.runner import run

    run("icl-linear", mode="smoke", out=runs_dir, progress_bar=False)  # a regression model to pick
    page.goto(f"{server}/icl")
    page.get_by_text("experiment").first.wait_for(timeout=TIMEOUT)
    choose(page, "experiment", "icl-linear")
    page.get_by_role("button", name="Draw a fresh task").wait_for(timeout=TIMEOUT)
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].some("
                           "p => p.layout && p.layout.title.text.includes('task #0'))", timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    before = figure_titled(page, "task #0")
    page.get_by_role("button", name="Draw a fresh task").click()
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].some("
                           "p => p.layout && p.layout.title.text.includes('task #1'))", timeout=TIMEOUT)
    after = figure_titled(page, "task #1")
    assert before and after and json.loads(before)[1] != json.loads(after)[1]  # new truth, new predictions
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=TIMEOUT)
    wait_for_render(page)  # error curves, the fresh task, three probe charts
    assert_clean(page)


def test_icl_page_shows_the_shipped_markov_and_bursty_models(server, page):
    page.goto(f"{server}/icl")
    page.get_by_text("experiment").first.wait_for(timeout=TIMEOUT)
    for experiment, title in [("icl-markov", "KL(Bayes"), ("bursty", "circuit attention during training")]:
        choose(page, "experiment", experiment)
        page.wait_for_function("title => [...document.querySelectorAll('.js-plotly-plot')].some("
                               "p => p.layout && p.layout.title.text.includes(title))", arg=title, timeout=TIMEOUT)
        wait_for_render(page)
        assert_clean(page)


def test_a_deep_link_runs_through_the_app_navigation(server, page):
    """Loading /attention first (a new session) shows the app's navigation, not legacy per-file pages."""
    page.goto(f"{server}/attention")
    page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    sidebar = page.inner_text('[data-testid="stSidebar"]')
    assert "In-context learning" in sidebar and "Performance" in sidebar and "app" not in sidebar.split()


def test_codebook_page_finds_codes_by_regex(server, runs_dir, page):
    from workbench.experiments.runner import run

    run("codebook", mode="smoke", out=runs_dir, progress_bar=False)  # a codebook model to pick
    page.goto(f"{server}/codebooks")
    page.get_by_text("model").first.wait_for(timeout=TIMEOUT)
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="model").first
    box.click()
    page.get_by_role("option").filter(has_text="run:").filter(has_not_text="base").first.click()
    page.get_by_role("heading", name="Search").wait_for(timeout=TIMEOUT)
    page.get_by_text("by regex over contexts").click()
    wait_for_render(page)
    page.get_by_role("heading", name="Intervene: force this code").wait_for(timeout=TIMEOUT)
    wait_for_render(page)
    # the codes the search found; waited for, since under a loaded CI the rerun can still be drawing it
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=TIMEOUT)
    assert_clean(page)


def test_circuits_page_runs_patching_and_discovery(server, page):
    page.goto(f"{server}/circuits")  # the shipped induction model is picked by default
    page.get_by_role("button", name="Run patching").wait_for(timeout=TIMEOUT)
    wait_for_render(page)
    page.get_by_text("CPR (area under faithfulness").wait_for(timeout=TIMEOUT)  # discovery ran (EAP-IG)
    page.get_by_role("button", name="Run patching").click()
    page.wait_for_function("""() => [...document.querySelectorAll('.js-plotly-plot')].some(
        p => p.layout && p.layout.title && p.layout.title.text.includes('patching:') && p.data[0].type === 'heatmap'
             && p.data[0].z.length === 2)""", timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)


def test_circuits_page_shows_a_compiled_models_true_circuit_beside_the_found_one(server, page):
    page.goto(f"{server}/circuits")
    page.get_by_text("compiled (ground truth)").click()
    page.wait_for_function(f"() => ({plot_title('the true circuit')})() !== ''", timeout=TIMEOUT)
    page.wait_for_function(f"() => ({plot_title('true edges found')})() !== ''", timeout=TIMEOUT)
    # the program's source is the view's last element; until it is drawn the previous view's stale elements linger
    page.wait_for_function("() => document.body.innerText.includes('def make_')", timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    legend = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(
        p => p.data.filter(t => t.showlegend !== false && t.name).map(t => t.name))""")
    assert "found and true" in legend, legend
    assert "logit difference written" not in page.inner_text("body")  # the trained view is gone
    (REPO / "docs").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "docs" / "circuits-compiled.png"), full_page=True)


def test_dynamics_step_slider_changes_the_attention_map(server, page):
    page.goto(f"{server}/dynamics")
    title = plot_title("layer ")
    page.wait_for_function(f"() => ({title})().includes('at step 2500')", timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    slider = page.get_by_role("slider")
    slider.focus()
    for _ in range(8):  # back through the late log-spaced snapshots into the dense window where the head forms
        page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"() => ({title})().includes('at step ') && !({title})().includes('at step 2500')",
                           timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    assert "layer " in page.evaluate(title)


def test_all_heads_view_highlights_what_a_hovered_token_attends_to(server, page):
    """On the shipped induction model's `BOS r r` prompt, hovering a token of the repeat lights up, in the enlarged
    layer-1 head, the token after its first occurrence: the induction stripe, read off the token strip."""
    page.goto(f"{server}/attention")
    frame = page.frame_locator("iframe").first
    tokens = frame.locator(".wb-tok")
    tokens.first.wait_for(timeout=TIMEOUT)
    assert frame.locator(".wb-grid canvas").count() == 8  # 2 layers × 4 heads
    boundary = tokens.evaluate_all("spans => spans.findIndex(s => s.classList.contains('wb-boundary'))")
    assert boundary > 2
    segment, hovered = boundary - 1, boundary + 3
    assert tokens.nth(hovered).inner_text() == tokens.nth(hovered - segment).inner_text()
    assert tokens.evaluate_all("spans => spans.every(s => !s.style.background)")
    tokens.nth(hovered).hover()
    alphas = tokens.evaluate_all(  # an opaque colour (all attention on one token) reads rgb(…), not rgba(…)
        "spans => spans.map(s => { const m = s.style.background.match(/rgba\\([^)]*,\\s*([0-9.]+)\\)/);"
        " return m ? parseFloat(m[1]) : s.style.background.startsWith('rgb(') ? 1 : 0; })")
    assert max(range(len(alphas)), key=alphas.__getitem__) == hovered - segment + 1, alphas
    assert_clean(page)


SHOTS = {  # README screenshots: page, what to wait for
    "home": ("", "Catalog"),
    "experiment": ("experiment?experiment=ssmax", "Shipped result"),
    "dynamics": ("dynamics?step=260", "Dense snapshots"),
    "attention": ("attention", "All heads"),
    "inspector": ("inspector", "Next token"),
    "compare": ("compare?run=shipped%3A+ssmax+%2F+softmax&run=shipped%3A+ssmax+%2F+ssmax", "Criteria"),
}


@pytest.mark.parametrize("name", SHOTS)
def test_screenshots_of_the_main_pages_for_the_readme(name, server, page):
    path, text = SHOTS[name]
    page.goto(f"{server}/{path}")
    page.get_by_text(text).first.wait_for(timeout=TIMEOUT)
    if name != "home":  # every other page opens on figures: wait until they are drawn, not their spinner
        page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
    page.get_by_text("drawing figures").wait_for(state="hidden", timeout=TIMEOUT)
    wait_for_render(page)
    page.wait_for_timeout(2000)  # plotly's transitions and the iframes settle
    assert_clean(page)
    (REPO / "docs").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "docs" / f"{name}.png"))


def test_cancel_stops_a_run_from_the_experiment_page(server, runs_dir, page):
    before = sorted(p.name for p in runs_dir.iterdir())
    page.goto(f"{server}/experiment?experiment=induction")
    page.get_by_role("tab", name="Run it").click()
    page.get_by_role("button", name="Run").click()  # quick: minutes, unless cancelled
    page.get_by_text(re.compile(r"step \d+/2500")).wait_for(timeout=TIMEOUT)  # training, well before step 500
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Training was cancelled").wait_for(timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)
    # stopped before its first checkpoint (step 500): nothing to resume, so the stopped run removes its folder
    for _ in range(60):
        if sorted(p.name for p in runs_dir.iterdir()) == before:
            break
        page.wait_for_timeout(500)
    left = sorted(p.name for p in runs_dir.iterdir())
    assert left == before, [(n, sorted(q.name for q in (runs_dir / n).iterdir())) for n in left]


def test_inspector_hook_point_choice_changes_the_figure(server, page):
    page.goto(f"{server}/inspector")
    title = plot_title("blocks.")
    page.wait_for_function(f"() => ({title})().includes('hook_resid_post')", timeout=TIMEOUT)
    wait_for_render(page)
    choose(page, "hook point", "blocks.0.attn.hook_pattern")
    page.wait_for_function(f"() => ({title})().includes('blocks.0.attn.hook_pattern')", timeout=TIMEOUT)
    wait_for_render(page)
    assert_clean(page)


def test_an_exported_report_opens_offline_with_its_figures_drawn(browser, tmp_path):
    from workbench.report import write_report

    report = write_report(REPO / "data" / "induction", tmp_path / "induction.html")
    context = browser.new_context(offline=True)
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(report.as_uri())
    page.locator(".plotly-graph-div .main-svg").first.wait_for(timeout=TIMEOUT)  # plotly.js ran and drew
    assert page.locator(".plotly-graph-div").count() >= 4
    assert requests == []
    context.close()
