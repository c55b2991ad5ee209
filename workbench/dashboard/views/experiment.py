"""Experiments: one page for every experiment in the catalog, built from it (a new experiment appears without page
code). The shipped result: claim and paper, criteria with measured values, figures in the order the experiment
declares them (variants side by side), config. And a preset to re-run: progress bar, live loss curve, config
overrides, cancel."""

import time

import streamlit as st

from workbench import experiments
from workbench.config import ConfigError, parse_overrides, read_json
from workbench.dashboard.common import cached_figures, column_chart, criteria_table
from workbench.experiments.runner import catalog, criteria_rows, run, saved_figures
from workbench.runs import data_root
from workbench.viz import training_curves
from workbench.viz.export import zip_figures

rows = {row["experiment"]: row for row in catalog()}
names = list(rows)
asked = st.query_params.get("experiment")
name = st.selectbox("experiment", names, index=names.index(asked) if asked in names else 0,
                    format_func=lambda n: f"{rows[n]['title']} · {n}")
st.query_params["experiment"] = name  # a shareable link to this experiment's page
exp, row = experiments.get(name), rows[name]

st.title(row["title"])
st.caption(f"{exp.paper} · {exp.family} family")
st.write(row["claim"])
shipped_tab, run_tab = st.tabs(["Shipped result", "Run it"])

with shipped_tab:
    shipped = data_root() / name
    if row["shipped"] not in ("pass", "FAIL"):
        st.info(f"Not shipped yet ({row['shipped']}): train it in the *Run it* tab, or "
                f"`workbench run {name} --quick --ship`.")
    else:
        result = read_json(shipped / "result.json", "result")
        verdict = ":green-badge[pass]" if result["passed"] else ":red-badge[FAIL: a criterion is not met]"
        st.markdown(f"{verdict} · {result['mode']} preset · {result['seconds']:.0f} s on the machine that shipped it · "
                    f"`{result['command']}`")
        criteria_table(criteria_rows(exp, result))
        variants = list(result["config"].get("variants") or {})
        if variants:
            st.caption("Variants: " + ", ".join(f"`{v}`" for v in variants) + ". Figures comparing them come "
                       "first, then each figure of every variant side by side.")
        if st.toggle("figures (drawn from the shipped models)", value=True, key=f"figures-{name}"):
            try:
                drawn = cached_figures(str(shipped))
            except ConfigError as e:  # a missing or corrupt model file: say which, keep the page
                st.error(f"Cannot draw the shipped figures: {e}")
                drawn = {}
            shared = [(key, fig) for key, fig in drawn.items() if "." not in key]
            for start in range(0, len(shared), 2):
                for column, (key, fig) in zip(st.columns(2), shared[start:start + 2], strict=False):
                    column_chart(column, fig, 2, key=f"{name}-{key}")
            per_variant = list(dict.fromkeys(key.split(".", 1)[1] for key in drawn if "." in key))
            per_row = min(len(variants), 3)  # more variants than that wrap: six columns leave each figure a sliver
            for figure in per_variant:
                for start in range(0, len(variants), per_row):
                    for column, variant in zip(st.columns(per_row), variants[start:start + per_row], strict=False):
                        if f"{variant}.{figure}" in drawn:
                            column.caption(f"`{variant}`")
                            column_chart(column, drawn[f"{variant}.{figure}"], per_row,
                                         key=f"{name}-{variant}-{figure}")
            if st.button("export these figures (HTML, SVG, PNG)", key=f"export-{name}"):
                try:
                    with st.spinner("drawing the images in headless Chromium…"):
                        archive = zip_figures(drawn)
                except ConfigError as e:
                    st.error(str(e))
                else:
                    st.download_button(f"download {name}-figures.zip", archive, f"{name}-figures.zip",
                                       mime="application/zip", key=f"download-{name}")
        with st.expander("config"):
            st.json(result["config"], expanded=False)

with run_tab:
    labels = {"quick": "quick — the reproduction (minutes)",
              "smoke": "smoke — a plumbing check in seconds; too short to pass, not expected to",
              "full": "full — the paper-scale setting (long on a laptop)"}
    mode = st.radio("preset", list(labels), format_func=labels.get, key=f"mode-{name}")
    if exp.presets.get(mode):
        st.caption("This preset sets " + ", ".join(f"`{k}={v}`" for k, v in exp.presets[mode].items()))
    seed = st.number_input("seed", min_value=0, max_value=2**31 - 1, value=0, key=f"seed-{name}")
    text = st.text_area("config overrides, one KEY=VALUE per line (e.g. `train.steps=500`)", key=f"set-{name}")
    start_col, cancel_col = st.columns([1, 6])
    if start_col.button("Run", type="primary", key=f"run-{name}"):
        try:
            overrides = parse_overrides([line for line in text.splitlines() if line.strip()])
            cfg = exp.config(mode, overrides, int(seed))  # refuse bad overrides before a run directory exists
        except ConfigError as e:
            st.error(str(e))
            st.stop()
        # Any click reruns the page, which stops this script (and training) at its next update; the run keeps
        # its last checkpoint and `workbench resume` continues it.
        cancel_col.button("Cancel", key=f"cancel-{name}")
        st.session_state["running"] = name
        bar, chart = st.progress(0.0, text="starting…"), st.empty()
        variants = list(cfg.variants) or [None]
        points, state = [], {"variant": 0, "last": -1, "drawn": 0.0}

        def on_progress(p):
            if p.step < state["last"]:  # the next variant started
                state["variant"] += 1
            state["last"] = p.step
            variant = variants[min(state["variant"], len(variants) - 1)]
            label = "loss" if variant is None else f"loss · {variant}"
            points.append({"step": p.step, label: p.loss})
            prefix = "" if variant is None else f"{variant}: "
            bar.progress(p.step / p.steps, text=f"{prefix}step {p.step}/{p.steps} · loss {p.loss:.3f}")
            if time.monotonic() - state["drawn"] > 0.5 or p.step == p.steps:  # redraws at ~2 Hz keep it smooth
                state["drawn"] = time.monotonic()
                keys = list(dict.fromkeys(k for r in points for k in r if k != "step"))
                chart.plotly_chart(training_curves(points, keys), key=f"live-{len(points)}")

        try:
            result = run(name, mode=mode, overrides=overrides, seed=int(seed), callback=on_progress,
                         progress_bar=False, command=f"dashboard: workbench run {name} --{mode} --seed {seed}"
                         + "".join(f" --set {k}={v}" for k, v in overrides.items()))
        except ConfigError as e:
            st.session_state.pop("running", None)
            st.error(str(e))
            st.stop()
        st.session_state.pop("running", None)
        verdict = "passed" if result["passed"] else "did not pass"
        (st.success if result["passed"] else st.warning)(f"{name} ({mode}) {verdict} in {result['seconds']:.1f} s")
        criteria_table(criteria_rows(exp, result))
        st.caption(f"saved to `{result['run_dir']}`; compare it with others on the Compare page")
        for key, fig in saved_figures(result["run_dir"]).items():
            st.plotly_chart(fig, key=f"result-{key}")
    elif st.session_state.pop("running", None) == name:
        st.warning("Training was cancelled. A run that reached a checkpoint is kept (listed on Home as "
                   "interrupted) and continues with `workbench resume RUN_DIR`; one that had not is removed.")
