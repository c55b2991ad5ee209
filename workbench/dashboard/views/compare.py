"""Compare runs: several runs' training curves overlaid (a sweep's runs, two seeds, two variants), with a table of
their criteria. Open it with runs chosen: /compare?run=LABEL&run=LABEL."""

import pandas as pd
import streamlit as st

from workbench import experiments
from workbench.experiments.runner import criteria_rows, saved_models
from workbench.runs import Run
from workbench.viz import compare_curves

st.title("Compare runs")
refs = saved_models()
if not refs:
    st.warning("Nothing to compare yet: run an experiment on the Experiments page or with `workbench run`.")
    st.stop()
asked = [label for label in st.query_params.get_all("run") if label in refs]
default = asked or [label for label in refs if label.startswith("run: ")][:2] or list(refs)[:1]
chosen = st.multiselect("runs (a variant counts as a run)", list(refs), default=default)
if not chosen:
    st.info("Pick runs to compare.")
    st.stop()
st.query_params["run"] = chosen


def log_of(label: str) -> list[dict]:
    ref = refs[label]
    return (Run(ref.path).variant(ref.variant) if ref.variant else Run(ref.path)).metrics()


series = {label: log_of(label) for label in chosen}
numeric = dict.fromkeys(k for rows in series.values() for r in rows for k, v in r.items()
                        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool))
default_keys = ["loss"] + [k for k in numeric if k not in ("loss", "lr")][:2]
keys = st.multiselect("metrics", list(numeric), default=[k for k in default_keys if k in numeric])
st.plotly_chart(compare_curves(series, keys, log_x=st.toggle("log step axis")), key="compare")

st.subheader("Criteria")
table = {}
for label in chosen:
    result = Run(refs[label].path).result()
    if result is None:
        continue
    for c in criteria_rows(experiments.get(result["experiment"]), result, refs[label].variant):
        measured = "—" if c["measured"] is None else f"{c['measured']:.4g} {'✓' if c['passed'] else '✗'}"
        if not c["judged"]:
            measured += " (not judged in this preset)"
        table.setdefault(f"{c['criterion']} ({c['needs']})", {})[label] = measured
if table:
    st.dataframe(pd.DataFrame(table).T.fillna(""), width="stretch")  # blank: the criterion is not that run's
else:
    st.info("None of these runs has finished (no result.json), so there are no criteria to compare.")
