"""ipywidgets controls around `workbench.viz` figures, for notebooks.

Controls update a plotly `FigureWidget` in place instead of re-rendering through an Output widget
(`@interact`): headless execution (papermill/nbclient) can hang on Output-widget capture
(jupyter/nbclient#312, nteract/papermill#723), and in-place updates are smoother in JupyterLab too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go
from jaxtyping import Int
from torch import Tensor

from workbench.hooks.attention import attention_patterns
from workbench.viz import attention_heatmap, figure_html


class FigureControl(widgets.VBox):
    """Controls above a figure. JupyterLab shows the live widget; an exported page, which has no kernel to
    redraw it, shows the figure as last drawn (the bundle carries it as HTML too)."""

    def _repr_mimebundle_(self, **kwargs):
        return {**(super()._repr_mimebundle_(**kwargs) or {}), "text/html": figure_html(go.Figure(self.children[1]))}


def attention_explorer(model, prompts: Int[Tensor, "prompt pos"], layer: int = 0, head: int = 0) -> FigureControl:
    """Layer, head and prompt selectors over an attention heatmap."""

    def figure(layer: int, head: int, prompt: int) -> go.Figure:
        return head_attention(model, prompts[prompt : prompt + 1], layer, head)

    return figure_control(
        figure,
        layer=widgets.Dropdown(options=range(model.cfg.n_layers), value=layer, description="layer"),
        head=widgets.Dropdown(options=range(model.cfg.n_heads), value=head, description="head"),
        prompt=widgets.IntSlider(value=0, min=0, max=len(prompts) - 1, description="prompt"))


def attention_over_training(path: str | Path, tokens: Int[Tensor, "1 pos"], layer: int, head: int,
                            variant: str | None = None) -> FigureControl:
    """A training-step slider over a run's snapshots redrawing one head's attention map on `tokens`: watch a
    head form."""
    return snapshot_slider(path, lambda model, step: head_attention(model, tokens, layer, head, f" at step {step}"),
                           variant)


def head_attention(model, tokens: Int[Tensor, "1 pos"], layer: int, head: int, note: str = "") -> go.Figure:
    pattern = attention_patterns(model, tokens, [layer])[layer][0, head]
    labels = model.to_str_tokens(tokens[0]) if hasattr(model, "to_str_tokens") else tokens[0].tolist()
    return attention_heatmap(pattern, labels, f"layer {layer} head {head}{note}")


def figure_control(make: Callable[..., go.Figure], **choices: Sequence | widgets.ValueWidget) -> FigureControl:
    """A figure redrawn by `make(**values)` whenever a control changes. Each keyword is a control of its own
    (any ipywidgets value widget) or the values to choose from: a selection slider for numbers, else a dropdown;
    e.g. `figure_control(max_weight_figure, s=[0.2, 0.43, 1.0])`."""
    controls = {name: choice if isinstance(choice, widgets.ValueWidget) else
                (widgets.SelectionSlider if all(isinstance(v, int | float) for v in choice) else widgets.Dropdown)(
                    options=list(choice), value=list(choice)[0], description=name)
                for name, choice in choices.items()}
    shown = go.FigureWidget(make(**{name: box.value for name, box in controls.items()}))

    def update(_change) -> None:
        new = make(**{name: box.value for name, box in controls.items()})
        with shown.batch_update():
            shown.data = []
            shown.add_traces(list(new.data))
            shown.layout = new.layout

    for box in controls.values():
        box.observe(update, names="value")
    return FigureControl([widgets.HBox(list(controls.values())), shown])


def snapshot_slider(path: str | Path, draw: Callable[[object, int], go.Figure], variant: str | None = None,
                    step: int | None = None) -> FigureControl:
    """A training-step slider over a saved run's snapshots, redrawing `draw(model, step)` with the snapshot's
    model, e.g. `snapshot_slider("data/induction", lambda m, s: attention_heatmap(...))`; starts at `step`
    (default: the last snapshot)."""
    from workbench.experiments.runner import load, snapshots

    steps = snapshots(path, variant)
    if not steps:
        raise ValueError(f"{path}: no snapshots to replay")
    slider = widgets.SelectionSlider(options=steps, value=step if step in steps else steps[-1],
                                     description="step", continuous_update=False,
                                     layout=widgets.Layout(width="640px"))
    return figure_control(lambda step: draw(load(path, variant=variant, step=step).model, step), step=slider)
