"""Attention: pick a model and a prompt; see every head at a glance, one head enlarged, and the head-score grid."""

import streamlit as st

from workbench.dashboard.common import load_or_stop, model_picker, typed_prompt
from workbench.hooks.attention import (
    attention_layers,
    attention_patterns,
    best_head,
    head_scores,
    repeat_start,
    stacked_patterns,
)
from workbench.viz import attention_heatmap, head_score_grid
from workbench.viz.heads import all_heads

st.title("Attention maps")

exp, cfg, model = load_or_stop(model_picker())

real_valued = bool(getattr(model.cfg, "d_input", 0))  # inputs are vectors: no typed ids, positions as labels
sources = ["sampled from the task"] if real_valued else ["sampled from the task", "typed token ids"]
source = st.radio("prompt", sources, horizontal=True)
if source == "typed token ids":
    default = " ".join(map(str, exp.sample_prompt(cfg, 0)[0, :24].tolist()))
    tokens = typed_prompt("token ids (space separated)", default, model)
else:
    seed = st.number_input("sample seed", min_value=0, max_value=10**6, value=0)
    tokens = exp.sample_prompt(cfg, int(seed)).to(model.device)
labels = None if real_valued else model.to_str_tokens(tokens[0])

layers = attention_layers(model)
if not layers:
    st.warning("This model has no attention layers.")
    st.stop()

st.subheader("All heads")
st.caption("Hover a token: the enlarged head colours what it attends to (blue) and underlines what attends to it "
           "(orange); every thumbnail marks its row. Click a thumbnail to enlarge that head. An orange line marks "
           "where the repeat starts.")
_, stacked = stacked_patterns(model, tokens)
table = head_scores(model, tokens)
# open on the last layer's most induction-like head (vector inputs repeat no tokens: its most previous-token one)
best = best_head(table, "previous_token" if real_valued else "generalised_induction", layers[-1])
view = all_heads(stacked, labels if labels is not None else list(map(str, range(tokens.shape[1]))), layers,
                 None if real_valued else repeat_start(tokens[0]), selected=(best.layer, best.head))
st.iframe(view.html, height=view.height)

st.subheader("One head")
left, right = st.columns(2)
layer = left.selectbox("layer", layers, index=layers.index(best.layer))
head = right.selectbox("head", range(model.cfg.n_heads), index=best.head)
pattern = attention_patterns(model, tokens, [layer])[layer][0, head]
st.plotly_chart(attention_heatmap(pattern, labels, f"layer {layer} head {head}"), key="pattern")

st.subheader("Head scores on this prompt")
st.caption("On a typed or sampled prompt the segment length is unknown, so the induction score here is the "
           "generalised one (mass on the token after *any* earlier occurrence); the experiment reports the "
           "standard stripe score on `BOS r r`.")
score = st.selectbox("score", [c for c in table.columns if c not in ("layer", "head")])
st.plotly_chart(head_score_grid(table, score), key="scores")
