"""Training dynamics: a step slider replays a run's snapshots — attention map, head scores, the experiment's own
figures — beside its metric curves with the step marked."""

import streamlit as st

from workbench.config import ConfigError
from workbench.dashboard.common import (
    cached_figures_at,
    cached_scores_over_training,
    column_chart,
    load_or_stop,
    model_picker,
)
from workbench.experiments.runner import dense_windows, snapshots
from workbench.hooks.attention import attention_layers, attention_patterns, head_scores
from workbench.llc import saved_llc
from workbench.runs import Run
from workbench.viz import attention_heatmap, head_score_grid, score_over_training, training_curves

st.title("Training dynamics")
st.caption("Drag the step slider to replay training from the snapshots the run kept. Where the metrics moved "
           "most, runs with `train.dense_windows` kept a snapshot every eval_every/10 steps.")

ref = model_picker(lambda ref: len(snapshots(ref.path, ref.variant)) >= 2, "No saved model has snapshots yet: "
                   "ship one with `workbench run induction --quick --ship`.")
steps = snapshots(ref.path, ref.variant)
windows = dense_windows(ref.path, ref.variant)
if windows:
    st.caption("Dense snapshots over steps " + ", ".join(f"{a}–{b}" for a, b in windows) + ".")
asked = st.query_params.get("step")
step = st.select_slider("training step", options=steps,
                        value=int(asked) if asked and asked.isdigit() and int(asked) in steps else steps[-1])
st.query_params["step"] = str(step)  # a link to this page opens at this step
exp, cfg, model = load_or_stop(ref, step)
run = Run(ref.path).variant(ref.variant) if ref.variant else Run(ref.path)

metrics = run.metrics()
keys = ["loss", *dict.fromkeys(c.metric for c in exp.criteria if any(c.metric in r for r in metrics))][:4]
llc = saved_llc(ref.path, ref.variant)
if llc:  # on the same step axis as the training log
    metrics, keys = metrics + [{"step": r["step"], "LLC": r["llc"]} for r in llc], keys + ["LLC"]
else:
    st.caption(f"No local learning coefficient for this run yet: `workbench llc {ref.path}"
               + (f" --variant {ref.variant}" if ref.variant else "") + "` estimates it at every snapshot.")
log_x = st.toggle("log step axis", value=True)
st.plotly_chart(training_curves(metrics, keys, at_step=step, log_x=log_x), key="curves")

layers = attention_layers(model)
if not layers:
    st.info("This model has no attention layers; its experiment's figures are below.")
else:
    tokens = exp.sample_prompt(cfg, 0).to(model.device)
    scores = head_scores(model, tokens)
    names = [c for c in scores.columns if c not in ("layer", "head")]
    score = st.selectbox("head score", names, index=next((i for i, n in enumerate(names) if "induction" in n), 0))
    left, right = st.columns(2)
    try:
        history = cached_scores_over_training(str(ref.path), ref.variant)
    except ConfigError as e:  # a corrupt or foreign snapshot file: say which, keep the rest of the page
        left.error(f"Cannot score every snapshot: {e}")
    else:
        column_chart(left, score_over_training(history, score, at_step=step, log_x=log_x), 2,
                     key="score-over-training")
    column_chart(right, head_score_grid(scores, score), 2, key="score-grid")
    best = scores.loc[scores[score].idxmax()] if score != "entropy" else scores.iloc[-1]
    left, right = st.columns(2)
    # keyed: a head picked by hand stays picked as the slider moves (the default is the best head)
    layer = left.selectbox("layer", layers, index=layers.index(int(best["layer"])), key=f"layer-{ref.path}")
    head = right.selectbox("head", range(model.cfg.n_heads), index=int(best["head"]), key=f"head-{ref.path}")
    pattern = attention_patterns(model, tokens, [layer])[layer][0, head]
    labels = None if getattr(model.cfg, "d_input", 0) else model.to_str_tokens(tokens[0])
    st.plotly_chart(attention_heatmap(pattern, labels, f"layer {layer} head {head} at step {step}"), key="pattern")

if st.toggle("the experiment's figures at this step", key="figures-at-step"):
    try:
        shown = cached_figures_at(str(ref.path), ref.variant, step)
    except ConfigError as e:
        st.error(f"Cannot draw this run's figures at step {step}: {e}")
        st.stop()
    for name, fig in shown.items():
        st.plotly_chart(fig, key=f"at-step-{name}")
