"""Model inspector: any model — shipped, a run, a variant, a snapshot, or a Hugging Face model directory on disk —
with a prompt in its own token names: next-token predictions, an activation browser over every hook point, all
attention heads, and the logit lens."""

import streamlit as st

from workbench.config import ConfigError
from workbench.dashboard.common import load_or_stop, model_picker, snapshot_picker
from workbench.hooks.attention import attention_layers, repeat_start, stacked_patterns
from workbench.inspector import activation, hook_names, is_bridge, next_token_table, open_hf, prompt_tokens, str_tokens
from workbench.viz import activation_figure
from workbench.viz.heads import all_heads

st.title("Model inspector")


@st.cache_resource(show_spinner="opening the model directory through TransformerBridge…")
def cached_hf(path: str):
    return open_hf(path)


source = st.radio("model", ["a saved model", "a Hugging Face model directory"], horizontal=True,
                  label_visibility="collapsed")
exp = cfg = None
if source == "a saved model":
    ref = model_picker()
    exp, cfg, model = load_or_stop(ref, snapshot_picker(ref))
    sample = st.number_input("sample a prompt from the task (seed)", min_value=0, max_value=10**6, value=0)
    default = " ".join(str_tokens(model, exp.sample_prompt(cfg, int(sample))[:, :24])) \
        if not getattr(model.cfg, "d_input", 0) else ""
else:
    path = st.text_input("model directory (config.json, weights and tokenizer; nothing is downloaded)",
                         placeholder="~/models/gpt2")
    if not path:
        st.info("Point at a model saved with `save_pretrained` (e.g. a GPT-2 you already have).")
        st.stop()
    try:
        model = cached_hf(path)
    except ConfigError as e:
        st.error(str(e))
        st.stop()
    default = "The quick brown fox jumps over the lazy"

if getattr(model.cfg, "d_input", 0):
    st.info("This model reads vectors, not tokens: inspect it on the Attention and In-context learning pages.")
    st.stop()
text = st.text_input("prompt" + ("" if is_bridge(model) else " (token names, space separated)"), default,
                     key=f"prompt-{default}")
try:
    tokens = prompt_tokens(model, text)
except ConfigError as e:
    st.error(str(e))
    st.stop()
names = str_tokens(model, tokens)

left, right = st.columns([1, 2])
with left:
    st.subheader("Next token")
    pos = st.select_slider("after position", options=list(range(len(names))), value=len(names) - 1,
                           format_func=lambda i: f"{i}: {names[i]}")
    table = next_token_table(model, tokens, pos)
    st.dataframe(table.style.format({"probability": "{:.3f}", "logit": "{:.2f}"}), hide_index=True)
with right:
    st.subheader("Activations")
    points = hook_names(model)
    default_point = next((n for n in points if n.endswith("hook_resid_post")), points[0])
    point = st.selectbox("hook point", points, index=points.index(default_point))
    histogram = st.toggle("histogram")
    st.plotly_chart(activation_figure(activation(model, tokens, point), point, names, histogram), key="activation")

if attention_layers(model):
    st.subheader("Attention")
    layers, stacked = stacked_patterns(model, tokens)
    view = all_heads(stacked, names, layers, repeat_start(tokens[0]))
    st.iframe(view.html, height=view.height)

if not is_bridge(model):
    from workbench.hooks.circuits import logit_lens
    from workbench.viz.circuits import logit_lens_figure

    st.subheader("Logit lens")
    target = table["token"][0]
    st.caption(f"The logit of the top prediction after position {pos} ({target}), read from the residual stream "
               "after each layer through the final norm and unembedding.")
    lens = logit_lens(model, tokens, model.to_single_token(target), pos=pos)
    st.plotly_chart(logit_lens_figure(lens, f"logit lens: {target} after position {pos}"), key="lens")
