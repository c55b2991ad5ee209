"""Codebooks: pick a codebook model and one of its codebooks; find codes by state or by a regex over the
contexts where they fire; read a code's precision, recall and top contexts; force a code on a typed prompt
and watch the next-token distribution move; codes beside SAE latents and recall-matched neurons."""

from pathlib import Path

import streamlit as st

from workbench import experiments
from workbench.config import ConfigError
from workbench.dashboard.common import cached_load, load_or_stop
from workbench.experiments.runner import saved_models
from workbench.hooks.codebook import attached, intervene, top_contexts
from workbench.hooks.features import search_codes
from workbench.tasks.base import token_names
from workbench.viz.codebook import code_precision_scatter, next_token_shift

st.title("Codebooks")


@st.cache_data(show_spinner="reading codes on held-out sequences…")
def cached_report(path: str, variant: str | None, site: str, group: int):
    exp, cfg, model = cached_load(path, variant)
    return exp.code_report(model, cfg, site, group)


models = saved_models(experiments=experiments.names("codebook"))
if not models:
    st.info("No saved codebook model: ship one with `workbench run codebook --quick --ship` or run it on the "
            "Experiments page.")
    st.stop()
label = st.selectbox("model", sorted(models, key=lambda name: "base" in name))
ref = models[label]
exp, cfg, model = load_or_stop(ref)
books = attached(model)
if not books:
    st.info("This model has no codebooks (the base variant, before fine-tuning with them). Pick the codebook variant.")
    st.stop()
task = exp.task(cfg)
names = token_names(task, model.cfg.d_vocab)

left, right = st.columns(2)
site = left.selectbox("codebook", list(books), index=len(books) - 1)
groups = books[site].groups
group = right.selectbox("head", range(groups)) if groups > 1 else 0
table, ids, tokens = cached_report(str(ref.path), ref.variant, site, group)

st.header("Codes")
floor = st.slider("precision at least", 0.0, 1.0, 0.5, 0.05)
shown = table[table.precision >= floor]
st.caption(f"{len(table)} of {books[site].spec.codes} codes fire on {tokens.numel()} held-out tokens; "
           f"{len(shown)} have precision ≥ {floor:.2f} for one state (on the digit that completes it), covering "
           f"{shown.state.nunique()} of {cfg.task.states} states.")
if len(shown):
    st.plotly_chart(code_precision_scatter(shown, f"{site}: precision vs recall of each code"), key="scatter")

st.header("Search")
how = st.radio("find codes", ["by state", "by regex over contexts"], horizontal=True)
if how == "by state":
    state = st.number_input("state", min_value=0, max_value=cfg.task.states - 1, value=0)
    found = table[table.state == state].sort_values("precision", ascending=False)
else:
    pattern = st.text_input("regex over the tokens ending where a code fires (digits; BOS as 'BOS')", r"40$")
    text = [[names[t] for t in row] for row in tokens.tolist()]
    try:
        found = search_codes(ids[:, :, group], text, pattern)
    except ConfigError as e:
        st.error(str(e))
        st.stop()
found = found[found.precision >= floor] if "state" in found else found
st.dataframe(found.head(50), hide_index=True, key="found")
if found.empty:
    st.info("No code matches; lower the precision filter or change the search.")
    st.stop()

code = st.selectbox("code", found.code.head(50).tolist())
row = table.set_index("code").loc[code]
st.markdown(f"**code {code}** fires on {int(row.fires)} tokens ({row.frequency:.2%}); best state **{int(row.state)}**: "
            f"precision {row.precision:.2f}, recall {row.recall:.2f}")
contexts = top_contexts(ids, tokens, code, names, group)
st.markdown("\n".join(f"- `{before}` **`{token}`**" for before, token in contexts))

st.header("Intervene: force this code")
default = "".join(names[t] for t in exp.sample_prompt(cfg, 0)[0, 1:21].tolist())
prompt = st.text_input("prompt (digits; BOS is added)", default)
try:
    typed = task.parse(prompt)
except ValueError as e:
    st.error(str(e))
    st.stop()
position = st.slider("position (the token whose code is forced; the prediction after it is shown)", 1,
                     typed.shape[1] - 1, typed.shape[1] - 1)
before, after = intervene(model, typed, site, position, code)
target = exp.next_digit_law(task, int(row.state))
st.plotly_chart(next_token_shift(before, after, names, target, f"forcing code {code} (state {int(row.state)}) at "
                                 f"position {position}"), key="shift")

@st.cache_data(show_spinner="comparing codes, SAE latents and neurons…")
def cached_comparison(path: str, variant: str | None):
    exp, cfg, model = cached_load(path, variant)
    sae_file = (Path(path) / "variants" / variant if variant else Path(path)) / "sae.safetensors"
    if not sae_file.exists():
        return None, None
    sae, site = exp.load_sae(sae_file)
    return exp.comparison(model, cfg, sae, site), site


st.header("Codes vs SAE latents vs neurons")
versus, versus_site = cached_comparison(str(ref.path), ref.variant)
if versus is None:
    st.info("This run has no fitted SAE (runs from before the comparison existed); retrain to get one.")
else:
    st.caption(f"At {versus_site}, on held-out sequences: a unit counts for a state when ≥ half its firings are on "
               "that state's completing digit. Neurons are matched to each state code's recall, with their best "
               "threshold. Loss recovered: 0 = as bad as zeroing that MLP output, 1 = as good as the output itself.")
    st.dataframe(versus.round(3), hide_index=True, key="versus")
