"""workbench dashboard: `make dashboard` or `workbench dashboard` (serves on 127.0.0.1:8501)."""

# Eager imports: on a cold server, plotly's lazy pandas import raced with Streamlit's script thread
# ("partially initialized module 'pandas'"); importing both here, first, avoids it.
import pandas  # noqa: F401
import plotly.express  # noqa: F401
import plotly.graph_objects  # noqa: F401
import streamlit as st

st.set_page_config(page_title="workbench", layout="wide")

# Pages live in views/, not pages/: Streamlit serves a pages/ folder as legacy pages too, and a deep link
# (/attention) then runs the page script alone, without this entry point.

pages = {
    "workbench": [
        st.Page("views/home.py", title="Home", default=True),
        st.Page("views/experiment.py", title="Experiments", url_path="experiment"),
        st.Page("views/compare.py", title="Compare runs", url_path="compare"),
        st.Page("views/dynamics.py", title="Training dynamics", url_path="dynamics"),
        st.Page("views/inspector.py", title="Model inspector", url_path="inspector"),
    ],
    "hook families": [
        st.Page("views/attention.py", title="Attention"),
        st.Page("views/icl.py", title="In-context learning"),
        st.Page("views/codebooks.py", title="Codebooks"),
        st.Page("views/circuits.py", title="Circuits"),
    ],
    "system": [
        st.Page("views/performance.py", title="Performance"),
    ],
}
st.navigation(pages).run()
