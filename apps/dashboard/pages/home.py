"""Home: the experiment catalog with shipped verdicts, and the runs list."""

import pandas as pd
import streamlit as st

from workbench.experiments.runner import catalog
from workbench.runs import DEFAULT_ROOT, list_runs

st.title("workbench")
st.caption("Train small transformers on a laptop CPU and look inside them.")

st.header("Catalog")
rows = catalog()
st.dataframe(
    pd.DataFrame([{k: r[k] for k in ("experiment", "title", "paper", "criteria", "shipped")} for r in rows]),
    hide_index=True, width="stretch",
)
for row in rows:
    if row["metrics"]:
        with st.expander(f"{row['experiment']}: shipped metrics ({row['shipped']})"):
            st.json(row["metrics"])

st.header("Runs")
runs = list_runs(DEFAULT_ROOT)
if not runs:
    st.info(f"No runs under `{DEFAULT_ROOT}/` yet: start one on the Train page or with `workbench run`.")
else:
    st.dataframe(pd.DataFrame([
        {"run": r.path.name, "experiment": r.experiment, "mode": r.mode, "status": r.status,
         "passed": r.passed, "problem": r.error or ""} for r in runs
    ]), hide_index=True, width="stretch")
    for r in runs:
        if r.status == "corrupt":
            st.warning(f"{r.path.name}: cannot be read — {r.error}")
