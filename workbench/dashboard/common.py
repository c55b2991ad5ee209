"""What several dashboard pages share: one cached model loader (a model opened on one page is warm on the
others) that turns a load failure into one readable error on the page, cached figures of a shipped run, and a typed
token-id prompt."""

import plotly.graph_objects as go
import streamlit as st
from torch import Tensor

from workbench.config import ConfigError
from workbench.experiments.runner import Loaded, ModelRef, figures, load
from workbench.tasks import parse_token_ids


@st.cache_resource(show_spinner="loading model…")
def cached_load(path: str, variant: str | None, step: int | None = None) -> Loaded:
    return load(path, variant=variant, step=step)


@st.cache_resource(show_spinner="drawing figures…")
def cached_figures(path: str) -> dict[str, go.Figure]:
    return figures(path)


def load_or_stop(ref: ModelRef, step: int | None = None) -> Loaded:
    """The model `ref` points at (its snapshot at `step`), or an error on the page and the page stopped."""
    try:
        return cached_load(str(ref.path), ref.variant, step)
    except ConfigError as e:
        st.error(f"Cannot load this model: {e}")
        st.stop()


def typed_prompt(label: str, default: str, model) -> Tensor:
    """Token ids typed into a text box → `[1 pos]` for `model`, or one readable error and the page stopped."""
    text = st.text_input(label, default)
    try:
        return parse_token_ids(text, model.cfg.d_vocab, model.cfg.n_ctx)
    except ValueError as e:
        st.error(str(e))
        st.stop()
