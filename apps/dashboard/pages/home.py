"""Home: the experiment catalog with shipped verdicts, and the runs list."""

import pandas as pd
import streamlit as st

from workbench.experiments.runner import catalog
from workbench.runs import DEFAULT_ROOT, list_runs

st.title("workbench")
st.caption("Train small transformers on a laptop CPU and look inside them.")

st.header("Catalog")
for row in catalog():
    with st.container(border=True):
        badge = {"pass": ":green-badge[shipped: pass]", "FAIL": ":red-badge[shipped: FAIL]"}
        st.markdown(f"### {row['title']} · `{row['experiment']}` {badge.get(row['shipped'], '')}")
        st.caption(row["paper"])
        st.write(row["claim"])
        st.table(pd.DataFrame(row["criteria"]).set_index("criterion"))

st.header("Runs")
runs = list_runs(DEFAULT_ROOT)
if not runs:
    st.info(f"No runs under `{DEFAULT_ROOT}` yet: start one on the Train page or with `workbench run`.")
else:
    st.table(pd.DataFrame([
        {"run": r.path.name, "experiment": r.experiment, "mode": r.mode, "status": r.status,
         "passed": r.passed} for r in runs
    ]).set_index("run"))
    for r in runs:
        if r.status == "corrupt":
            st.warning(f"{r.path.name}: cannot be read — {r.error}")
