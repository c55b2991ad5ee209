"""In-context learning: pick an ICL experiment and a model (or variant); error curves against chosen
baselines, a fresh regression task point by point, probe R² by layer beside the random-init control."""

import streamlit as st

from workbench import experiments
from workbench.dashboard.common import cached_load, load_or_stop, snapshot_picker
from workbench.experiments.runner import saved_models
from workbench.hooks.icl import (
    REGRESSION_BASELINES,
    fresh_prompt_predictions,
    regression_error_curves,
    regression_probes,
)
from workbench.runs import Run
from workbench.tasks.regression import LinearRegression
from workbench.viz.icl import error_curves, prediction_comparison, probe_r2

st.title("In-context learning")


@st.cache_data(show_spinner="fitting probes on held-out prompts…")
def cached_probes(path: str, variant: str | None, step: int | None = None):
    exp, cfg, model = cached_load(path, variant, step)
    return regression_probes(model, exp.eval_batch(cfg), control=exp.control(cfg))


name = st.selectbox("experiment", experiments.names("icl"))
st.caption(f"{experiments.get(name).claim} — {experiments.get(name).paper}")
models = saved_models(experiments=[name])
if not models:
    st.info(f"No saved {name} model: ship one with `workbench run {name} --quick --ship` or run it on the "
            "Experiments page.")
    st.stop()
label = st.selectbox("model", list(models))
ref = models[label]
# Replay training: every view below is drawn for the snapshot picked here.
step = snapshot_picker(ref, "training step (snapshots)")
exp, cfg, model = load_or_stop(ref, step)
task = exp.task(cfg)

if isinstance(task, LinearRegression):
    st.header("Error against the number of in-context examples")
    offered = [b for b in REGRESSION_BASELINES if b != "dmmse" or task.pool is not None]
    chosen = st.multiselect("baselines", offered, default=[b for b in ("ols", "knn", "averaging") if b in offered])
    table = regression_error_curves(model, exp.eval_batch(cfg, 512), chosen, cfg.task.noise, task.pool,
                                    sparsity=max(cfg.task.sparsity, 1))
    st.plotly_chart(error_curves(table), key="errors")

    st.header("One fresh task, point by point")
    st.session_state.setdefault("task_seed", 0)
    if st.button("Draw a fresh task"):
        st.session_state.task_seed += 1
    predictions = fresh_prompt_predictions(model, task, 10_000 + st.session_state.task_seed, ["ols", "ridge"],
                                           cfg.task.noise, task.pool)
    st.plotly_chart(prediction_comparison(predictions, f"task #{st.session_state.task_seed}: predictions at each k"),
                    key="fresh")

    st.header("Probes: what the residual stream holds at the query")
    for target, probes in cached_probes(str(ref.path), ref.variant, step).items():
        title = f"probe R² for {target} (trained vs random-init control)"
        st.plotly_chart(probe_r2(probes, title), key=f"probe-{target}")

# The experiment's own figures (the bursty IC jump from its training log, a looped model's error by iteration,
# Markov KL and attention, boolean accuracy curves); optional where the regression views above cover most.
run = Run(ref.path).variant(ref.variant) if ref.variant else Run(ref.path)
if not isinstance(task, LinearRegression) or st.checkbox("show the experiment's own figures"):
    st.header("Figures")
    for key, fig in exp.figures(model, cfg, run).items():
        st.plotly_chart(fig, key=key)
