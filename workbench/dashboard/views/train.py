"""Train: launch an experiment's smoke or quick preset with a progress bar and a live loss curve."""

import streamlit as st

from workbench import experiments
from workbench.config import ConfigError
from workbench.experiments.runner import run, saved_figures
from workbench.viz import training_curves

st.title("Train")
name = st.selectbox("experiment", experiments.names())
exp = experiments.get(name)
st.caption(f"{exp.claim} — {exp.paper}")
mode = st.radio("preset", ["smoke", "quick"], horizontal=True)
seed = st.number_input("seed", min_value=0, max_value=2**31 - 1, value=0)

if st.button("Train", type="primary"):
    bar, chart = st.progress(0.0, text="starting…"), st.empty()
    rows = []

    def on_progress(p):
        rows.append({"step": p.step, "loss": p.loss, **p.metrics})
        bar.progress(p.step / p.steps, text=f"step {p.step}/{p.steps} · loss {p.loss:.3f}")
        chart.plotly_chart(training_curves(rows, ["loss"]), key=f"live-{p.step}")

    try:
        result = run(name, mode=mode, seed=int(seed), callback=on_progress, progress_bar=False,
                     command=f"dashboard: {name} --{mode} --seed {seed}")
    except ConfigError as e:
        st.error(str(e))
        st.stop()
    verdict = "passed" if result["passed"] else "did not pass"
    (st.success if result["passed"] else st.warning)(f"{name} ({mode}) {verdict} in {result['seconds']:.1f} s")
    st.dataframe([{k: c[k] for k in ("name", "metric", "op", "threshold", "value", "passed")}
                  for c in result["criteria"]], hide_index=True)
    st.caption(f"saved to `{result['run_dir']}`")
    for key, fig in saved_figures(result["run_dir"]).items():
        st.plotly_chart(fig, key=f"result-{key}")
