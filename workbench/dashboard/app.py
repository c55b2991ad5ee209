"""workbench dashboard: `make dashboard` or `workbench dashboard` (serves on 127.0.0.1:8501)."""

# Eager imports: on a cold server, plotly's lazy pandas import raced with Streamlit's script thread
# ("partially initialized module 'pandas'"); importing both here, first, avoids it.
import pandas  # noqa: F401
import plotly.express  # noqa: F401
import plotly.graph_objects  # noqa: F401
import streamlit as st

st.set_page_config(page_title="workbench", layout="wide")

pages = {
    "workbench": [
        st.Page("pages/home.py", title="Home", default=True),
        st.Page("pages/attention.py", title="Attention"),
        st.Page("pages/icl.py", title="In-context learning"),
        st.Page("pages/train.py", title="Train"),
        st.Page("pages/performance.py", title="Performance"),
    ]
}
st.navigation(pages).run()
