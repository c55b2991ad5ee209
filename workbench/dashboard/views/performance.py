"""Performance: the latest `workbench bench` result (data/bench.json) and, if kept, its history (data/bench-*.json)."""

import pandas as pd
import streamlit as st

from workbench.bench import load_history
from workbench.dashboard.common import plain_table
from workbench.runs import data_root
from workbench.viz import bench as figures

st.title("Performance")
st.caption("Our hooked model against a plain-PyTorch GPT and TransformerLens's TransformerBridge, measured "
           "side by side in one `workbench bench` run.")

results, errors = load_history(data_root())
for error in errors:
    st.warning(f"Skipped a bench file: {error}")
if not results:
    st.info(f"No benchmark under `{data_root()}` yet: run `workbench bench` (or `workbench bench --quick`, seconds) "
            "to write `data/bench.json`.")
    st.stop()

latest = next((r for r in reversed(results) if r["file"] == "bench.json"), results[-1])
m = latest["machine"]
st.markdown(f"**{latest['file']}** · {latest['timestamp']}{' · quick' if latest['quick'] else ''} · torch "
            f"{m['torch_version']} · {m['threads']} threads on {m['cpu_count']} CPUs · {m['platform']}")

st.header("Targets")
plain_table(pd.DataFrame(latest["targets"])[["name", "value", "op", "threshold", "passed"]].set_index("name"))

st.header("Training step")
st.plotly_chart(figures.train_ratios(latest), key="ratios")
st.header("run_with_cache")
st.plotly_chart(figures.cache_costs(latest), key="cache")
st.header("MFU")
st.plotly_chart(figures.mfu(latest), key="mfu")

if "seconds" in latest.get("eap_acdc", {}):
    e = latest["eap_acdc"]
    st.header("Circuit discovery")
    st.caption(f"{e['config']}, {e['batch']} clean/corrupted pairs × {e['seq']} tokens, {e['edges']} edges; "
               f"ACDC kept {e['acdc_edges_kept']} at threshold {e['acdc_threshold']}")
    plain_table(pd.DataFrame({name: {"median s": s["median"], "min s": s["min"], "max s": s["max"]}
                           for name, s in e["seconds"].items()}).T)

if "rows" in latest.get("mamba_scan", {}):
    st.header("Mamba scan")
    st.plotly_chart(figures.mamba_scan(latest), key="mamba")

if len(results) > 1:
    st.header("History")
    st.plotly_chart(figures.ratio_history(results), key="history")
