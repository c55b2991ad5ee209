"""Home: the experiment catalog with shipped verdicts, and the runs list."""

from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from workbench.dashboard.common import cached_figures, column_chart, plain_table
from workbench.experiments.runner import catalog, run_label
from workbench.runs import data_root, list_runs, runs_root

st.title("workbench")
st.caption("Train small transformers on a laptop CPU and look inside them.")

st.header("Catalog")
for row in catalog():
    with st.container(border=True):
        badge = {"pass": ":green-badge[shipped: pass]", "FAIL": ":red-badge[shipped: FAIL]"}
        st.markdown(f"### {row['title']} · `{row['experiment']}` {badge.get(row['shipped'], '')}")
        st.page_link("views/experiment.py", label="open its page: figures, variants, config, re-run",
                     query_params={"experiment": row["experiment"]})
        st.caption(row["paper"])
        st.write(row["claim"])
        plain_table(pd.DataFrame(row["criteria"]).set_index("criterion"))
        # Drawn from the shipped models on request (seconds): comparisons across variants, then each variant's.
        if row["shipped"] in ("pass", "FAIL") and st.toggle("figures", key=f"figures-{row['experiment']}"):
            shown = list(cached_figures(str(data_root() / row["experiment"])).items())
            for start in range(0, len(shown), 2):
                for column, (name, fig) in zip(st.columns(2), shown[start:start + 2], strict=False):
                    column_chart(column, fig, 2, key=f"{row['experiment']}-{name}")

st.header("Runs")
root = runs_root()
runs = list_runs(root)
if not runs:
    st.info(f"No runs under `{root}` yet: start one on the Experiments page or with `workbench run`.")
else:
    def compare_link(r) -> str:
        labels = [run_label(r) + (f" / {v}" if v else "") for v in r.variants or [None]]
        return "compare?" + urlencode({"run": labels}, doseq=True)

    st.dataframe(pd.DataFrame([
        {"run": r.path.name, "experiment": r.experiment, "mode": r.mode, "status": r.status,
         "passed": r.passed, "variants": ", ".join(r.variants or []), "open": compare_link(r)} for r in runs
    ]).set_index("run"), column_config={"open": st.column_config.LinkColumn("open", display_text="curves & criteria")})
    for r in runs:
        if r.status == "corrupt":
            st.warning(f"{r.path.name}: cannot be read — {r.error}")
