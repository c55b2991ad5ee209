"""What several dashboard pages share: a model picker, a snapshot picker, one cached model loader (a model opened
on one page is warm on the others) that turns a load failure into one readable error on the page, cached figures
of a saved run (also at a snapshot), and a typed token-id prompt."""

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from torch import Tensor

from workbench import experiments
from workbench.config import ConfigError
from workbench.experiments.runner import Loaded, ModelRef, figures, load, saved_models, snapshots
from workbench.hooks import over_training
from workbench.hooks.attention import head_scores
from workbench.runs import Run
from workbench.tasks import parse_token_ids
from workbench.viz import fit_to_width

_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def plain_table(frame: pd.DataFrame) -> None:
    """`st.table` with its text shown as written: it reads every cell as Markdown, so a criterion's "> 0.2"
    would become a quote and a metric's underscores could turn into emphasis."""
    def escape(value):
        return _MARKDOWN.sub(r"\\\1", value) if isinstance(value, str) else value
    frame = frame.map(escape)
    frame.index, frame.columns = frame.index.map(escape), frame.columns.map(escape)
    st.table(frame)


MAIN_PX = 940  # the main area beside the sidebar in a 1400-pixel-wide window, the width figures are fitted to


def column_chart(column, fig: go.Figure, columns: int, key: str) -> None:
    """`fig` in one of `columns` side-by-side columns, its title wrapped and a wide legend moved below to fit."""
    column.plotly_chart(fit_to_width(fig, MAIN_PX // columns), key=key)


def criteria_table(rows: list[dict]) -> None:
    """`runner.criteria_rows` as a table, measured values to four significant digits (6e-16, not 0.0000000000000006)."""
    st.dataframe(rows, hide_index=True, column_config={"measured": st.column_config.NumberColumn(format="%.4g")})


def family(experiment: str | None) -> str:
    try:
        return experiments.get(experiment or "?").family
    except ConfigError:
        return "?"


def hooked(experiment: str | None) -> bool:
    """Whether the experiment's models are hooked Transformers (the SVM experiment's is W alone)."""
    try:
        return experiments.get(experiment or "?").hooked
    except ConfigError:
        return False


def model_picker(keep: Callable[[ModelRef], bool] = lambda ref: True,
                 none_message: str = "No saved models: ship one with `workbench run induction --quick --ship` or "
                                     "run it on the Experiments page.") -> ModelRef:
    """A select box over the saved models that `keep` accepts, attention-family ones first and the shipped induction
    model first of all (the views' default is the model whose phenomenon is an attention pattern, the one their
    examples are written for); the page stops with `none_message` if there are none."""
    models = {label: ref for label, ref in saved_models().items() if hooked(ref.experiment) and keep(ref)}
    if not models:
        st.warning(none_message)
        st.stop()
    def order(label: str) -> tuple[bool, bool]:
        return family(models[label].experiment) != "attention", not label.startswith("shipped: induction")
    return models[st.selectbox("model", sorted(models, key=order))]


def snapshot_picker(ref: ModelRef, label: str = "snapshot (training step)") -> int | None:
    """A slider over the snapshots `ref`'s run kept, ending at the final model (None, the default); nothing is
    drawn for a model without snapshots."""
    steps = snapshots(ref.path, ref.variant)
    if not steps:
        return None
    step = st.select_slider(label, options=[*steps, "final"], value="final")
    return None if step == "final" else int(step)


_SEEN: dict[str, tuple[int, ...]] = {}  # each run's version when this server last read it


def run_version(path: str | Path) -> tuple[int, ...]:
    """When a run last changed: the modification times of its folder and of the folders its writes land in.
    Every write is a rename (atomic writes, checkpoints, `ship` replacing data/EXP whole), so each shows here."""
    root = Path(path)
    variants = sorted((root / "variants").glob("*"))
    folders = [root, root / "checkpoints", root / "snapshots",
               *variants, *(v / "checkpoints" for v in variants), *(v / "snapshots" for v in variants)]
    return tuple(f.stat().st_mtime_ns for f in folders if f.is_dir())


def forget_if_changed(path: str | Path) -> None:
    """Clear the caches (keyed by path) when the run at `path` was retrained, resumed or reshipped since this
    server last read it, so no page shows the old model or its figures."""
    version, key = run_version(path), str(path)
    if _SEEN.setdefault(key, version) != version:
        st.cache_resource.clear()
        st.cache_data.clear()
        _SEEN[key] = version


@st.cache_resource(show_spinner="loading model…")
def cached_load(path: str, variant: str | None, step: int | None = None) -> Loaded:
    return load(path, variant=variant, step=step)


def cached_figures(path: str) -> dict[str, go.Figure]:
    forget_if_changed(path)
    return _figures(path)


@st.cache_resource(show_spinner="drawing figures…")
def _figures(path: str) -> dict[str, go.Figure]:
    return figures(path)


@st.cache_resource(show_spinner="drawing figures at this snapshot…", max_entries=32)
def cached_figures_at(path: str, variant: str | None, step: int) -> dict[str, go.Figure]:
    """The experiment's figures drawn from one model's snapshot (a variant's own figures, for a variant)."""
    exp, cfg, model = cached_load(path, variant, step)
    return exp.figures(model, cfg, Run(path).variant(variant) if variant else Run(path))


@st.cache_data(show_spinner="scoring heads at every snapshot…")
def cached_scores_over_training(path: str, variant: str | None) -> pd.DataFrame:
    """Head scores on the experiment's sample prompt at every snapshot."""
    exp, cfg, _ = cached_load(path, variant)
    tokens = exp.sample_prompt(cfg, 0)
    return over_training(path, lambda model: head_scores(model, tokens.to(model.device)), variant)


def load_or_stop(ref: ModelRef, step: int | None = None) -> Loaded:
    """The model `ref` points at (its snapshot at `step`), or an error on the page and the page stopped."""
    forget_if_changed(ref.path)
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
