"""Circuits: pick a model and a metric; patch activations and see where the behaviour lives; discover its
circuit with EAP, EAP-IG or ACDC and read the graph, its faithfulness curve and MIB's CPR/CMD; attribute a
typed prompt's next-token logit to heads directly. Compiled models (the `rasp` experiment) show their true circuit
beside the one a method finds, with the program's source."""

import streamlit as st
import torch

from workbench import experiments
from workbench.compile.programs import program_source
from workbench.config import ConfigError
from workbench.dashboard.common import cached_load, column_chart, load_or_stop, snapshot_picker, typed_prompt
from workbench.experiments.runner import saved_models, snapshots
from workbench.hooks import over_training
from workbench.hooks.circuits import (
    METHODS,
    MIN_GAP_SHARE,
    PROMPT_METRICS,
    SWEEPS,
    CircuitRun,
    activation_patching,
    area_scores,
    direct_logit_attribution,
    discover_all,
    discovery_scores,
    formed_gap,
)
from workbench.hooks.circuits.grading import found_edges, grade
from workbench.viz.circuits import (
    circuit_comparison_figure,
    circuit_graph_figure,
    circuit_over_training_figure,
    faithfulness_figure,
    logit_attribution_bars,
    patching_heatmap,
)

st.title("Circuits")

SWEEP_LABELS = {"resid_pre": "residual stream (layer × position)", "attn_out": "attention output (layer × position)",
                "mlp_out": "MLP output (layer × position)", "attn_head_out": "each head's output (layer × head)",
                "attn_head_pattern": "each head's pattern (layer × head)"}


def prompts(path: str, variant: str | None, pairs: int):
    exp, cfg, _ = cached_load(path, variant)
    return exp.circuit_prompts(cfg, pairs)


@st.cache_data(show_spinner="patching…")
def cached_patching(path: str, variant: str | None, step: int | None, pairs: int, metric_name: str, what: str):
    _, _, model = cached_load(path, variant, step)
    clean, corrupted, positions = prompts(path, variant, pairs)
    metric = PROMPT_METRICS[metric_name](clean, positions)
    run = CircuitRun.prepare(model, clean, corrupted, metric)
    run.check_gap("patching")
    grid = activation_patching(model, clean, corrupted, metric, what)
    return (grid - run.corrupted_metric) / run.gap, clean[0].tolist()


@st.cache_data(show_spinner="discovering the circuit…")
def cached_discovery(path: str, variant: str | None, step: int | None, pairs: int, metric_name: str, method: str,
                     steps: int, threshold: float):
    _, _, model = cached_load(path, variant, step)
    clean, corrupted, positions = prompts(path, variant, pairs)
    metric = PROMPT_METRICS[metric_name](clean, positions)
    graphs, curves = discover_all(model, clean, corrupted, metric, (method,), steps, threshold)
    return graphs[method], curves[method]


@st.cache_data(show_spinner="discovering at every snapshot (a minute or two)…")
def cached_over_training(path: str, variant: str | None, pairs: int, metric_name: str, method: str, steps: int,
                         threshold: float):
    _, _, final = cached_load(path, variant)  # its gap sets the bar a snapshot's behaviour must reach
    clean, corrupted, positions = prompts(path, variant, pairs)
    metric = PROMPT_METRICS[metric_name](clean, positions)
    min_gap = formed_gap(final, clean, corrupted, metric)
    return over_training(path, lambda model: discovery_scores(model, clean, corrupted, metric, (method,), steps,
                                                              threshold, min_gap=min_gap), variant=variant)


def compiled_ground_truth() -> None:
    """A compiled program's true circuit beside the one a method finds, edges coloured by agreement."""
    models = saved_models(experiments=["rasp"])
    if not models:
        st.info("No compiled models: ship them with `workbench run rasp --quick --ship`.")
        return
    left, middle, right = st.columns(3)
    label = left.selectbox("compiled model", sorted(models))
    method = middle.radio("method", list(METHODS), horizontal=True, key="compiled_method")
    threshold = right.slider("threshold (share of the gap an edge must move)", 0.001, 0.2, 0.01, 0.001,
                             key="compiled_threshold")
    exp, cfg, model = load_or_stop(models[label])
    graph, true, found, grades = cached_grading(str(models[label].path), models[label].variant, method, threshold)
    a, b, c, d = st.columns(4)
    a.metric("edge precision", f"{grades['precision']:.2f}")
    b.metric("edge recall", f"{grades['recall']:.2f}")
    c.metric("ROC AUC", f"{grades['auc']:.2f}")
    d.metric("true (live) edges", grades["true"])
    left, right = st.columns(2)
    column_chart(left, circuit_comparison_figure(graph, true, true, title="the true circuit (live edges)"), 2,
                 key="true_circuit")
    column_chart(right, circuit_comparison_figure(graph, found, true), 2, key="found_circuit")
    what = "trained on its input/output pairs" if cfg.task.trained else "compiled"
    st.caption(f"Program `{cfg.task.program}`, {what}; the model is graded against the compiled program's circuit.")
    st.code(program_source(cfg.task.program), language="python")


@st.cache_data(show_spinner="discovering and grading…")
def cached_grading(path: str, variant: str | None, method: str, threshold: float):
    exp, cfg, model = cached_load(path, variant)
    cfg = cfg.model_copy(update={"task": cfg.task.model_copy(update={"threshold": threshold})})
    graphs, true, _ = exp.discovery(model, cfg)
    graph = graphs[method]
    return graph, true, found_edges(graph, threshold), grade(graph, true, threshold)


if st.radio("models", ["trained, with clean/corrupted prompts", "compiled (ground truth)"], horizontal=True,
            key="circuit_models") == "compiled (ground truth)":
    compiled_ground_truth()
    st.stop()

candidates = [n for n in experiments.names()  # experiments that define clean/corrupted prompts
              if type(experiments.get(n)).circuit_prompts is not experiments.Experiment.circuit_prompts]
models = saved_models(experiments=candidates)
if not models:
    st.info("No saved model with circuit prompts: ship one with `workbench run induction --quick --ship`.")
    st.stop()
labels = sorted(models, key=lambda name: (not name.startswith("shipped: induction"), name))
left, middle, right = st.columns(3)
label = left.selectbox("model", labels)
metric_name = middle.selectbox("metric", list(PROMPT_METRICS))
pairs = right.slider("clean/corrupted pairs", 2, 32, 16, 2)
ref = models[label]
step = snapshot_picker(ref)  # a circuit as it formed: discovery on the model at any kept step
exp, cfg, model = load_or_stop(ref, step)
key = (str(ref.path), ref.variant, step, pairs, metric_name)
clean, corrupted, positions = prompts(str(ref.path), ref.variant, pairs)
st.caption(f"{exp.title}: {pairs} of its clean prompts against corrupted ones ({type(exp).__name__}."
           f"circuit_prompts), the metric over {len(positions)} positions. Shares of the gap: 0 is the corrupted "
           "run's metric, 1 the clean run's.")

st.header("Activation patching")
sweeps = [w for w in SWEEP_LABELS if w != "mlp_out" or not model.cfg.attn_only]
what = st.selectbox("patch", sweeps, format_func=SWEEP_LABELS.get)
if st.button("Run patching"):
    st.session_state["patching"] = (*key, what)
if st.session_state.get("patching") == (*key, what):
    try:
        grid, tokens = cached_patching(*key, what)
    except ConfigError as e:
        st.error(str(e))
    else:
        by_pos = SWEEPS[what][1][1] == "pos"
        names = model.names() if hasattr(model, "names") else None
        st.plotly_chart(patching_heatmap(
            grid, ("layer", "position" if by_pos else "head"), f"patching: {SWEEP_LABELS[what]}",
            columns=[names[t] if names else t for t in tokens] if by_pos else None, metric="share of the gap"),
            key="patching_heatmap")

st.header("Circuit discovery")
c1, c2, c3 = st.columns(3)
method = c1.radio("method", ["EAP-IG", "EAP", "ACDC"], horizontal=True, key="method")
steps = c2.number_input("EAP-IG steps", 1, 100, 10, disabled=method != "EAP-IG")
threshold = c3.slider("ACDC threshold (share of the gap an edge may cost)", 0.0, 0.2, 0.01, 0.005,
                      disabled=method != "ACDC")
try:
    graph, curve = cached_discovery(*key, method, int(steps), float(threshold))
except ConfigError as e:
    st.error(str(e))
    st.stop()
scores = area_scores(curve)
a, b, c = st.columns(3)
a.metric("edges in the graph", graph.n_edges)
b.metric("CPR (area under faithfulness, ↑)", f"{scores['cpr']:.3f}")
c.metric("CMD (area between curve and 1, ↓)", f"{scores['cmd']:.3f}")
if method == "ACDC":
    shown = [(w, r) for w, r, k in graph.edges()[["writer", "reader", "kept"]].values if k]
    st.caption(f"ACDC kept {len(shown)} edges at threshold {threshold}.")
else:
    fraction = st.slider("edges shown (top fraction by |score|)", 0.01, 1.0, 0.1, 0.01)
    top = graph.edges().head(max(1, int(fraction * graph.n_edges)))
    shown = list(zip(top.writer, top.reader, strict=True))
left, right = st.columns(2)
column_chart(left, circuit_graph_figure(graph, shown), 2, key="circuit_graph")
column_chart(right, faithfulness_figure({method: curve}, {method: scores}, 0.1), 2, key="faithfulness")
with st.expander("edge scores"):
    st.dataframe(graph.edges(), hide_index=True)
if snapshots(ref.path, ref.variant):
    st.subheader("Over training")
    asked = (*key[:2], pairs, metric_name, method, int(steps), float(threshold))
    if st.button(f"Run {method} at every snapshot"):
        st.session_state["over_training"] = asked
    if st.session_state.get("over_training") == asked:
        table = cached_over_training(*asked)
        if "faithfulness_at_max_fraction" not in table:
            st.info(f"No snapshot's gap reaches {MIN_GAP_SHARE:.0%} of the final model's: nothing to discover yet.")
        else:
            st.plotly_chart(circuit_over_training_figure(table, 0.1), key="over_training")
            st.caption(f"Snapshots whose clean − corrupted gap is under {MIN_GAP_SHARE:.0%} of the final model's "
                       "are skipped: the behaviour has not formed there.")

st.header("Direct logit attribution")
example = " ".join(map(str, clean[0, : int(positions[-1]) + 1].tolist()))  # ends where the metric reads
tokens = typed_prompt("prompt (token ids)", example, model)
with torch.no_grad():
    predicted = int(model(tokens)[0, -1].argmax())
target = st.number_input("target token (default: the model's prediction)", 0, model.cfg.d_vocab - 1, predicted)
st.plotly_chart(logit_attribution_bars(direct_logit_attribution(model, tokens, int(target)),
                                       f"what each component writes into logit({target}) at the last position"),
                key="dla")
