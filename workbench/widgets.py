"""ipywidgets controls around `workbench.viz` figures, for notebooks.

Controls update a plotly `FigureWidget` in place instead of re-rendering through an Output widget
(`@interact`): headless execution (papermill/nbclient) can hang on Output-widget capture
(jupyter/nbclient#312, nteract/papermill#723), and in-place updates are smoother in JupyterLab too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    layer_box = widgets.Dropdown(options=range(model.cfg.n_layers), value=layer, description="layer")
    head_box = widgets.Dropdown(options=range(model.cfg.n_heads), value=head, description="head")
    prompt_box = widgets.IntSlider(value=0, min=0, max=len(prompts) - 1, description="prompt")

    def figure() -> go.Figure:
        tokens = prompts[prompt_box.value : prompt_box.value + 1]
        pattern = attention_patterns(model, tokens, [layer_box.value])[layer_box.value][0, head_box.value]
        return attention_heatmap(pattern, tokens[0].tolist(), f"layer {layer_box.value} head {head_box.value}")

    shown = go.FigureWidget(figure())

    def update(_change) -> None:
        new = figure()
        with shown.batch_update():
            shown.data[0].update(new.data[0])
            shown.layout.title = new.layout.title

    for box in (layer_box, head_box, prompt_box):
        box.observe(update, names="value")
    return FigureControl([widgets.HBox([layer_box, head_box, prompt_box]), shown])


def figure_control(make: Callable[..., go.Figure], **choices: Sequence) -> FigureControl:
    """A figure redrawn by `make(**values)` whenever a control changes: one dropdown per keyword, over the
    values given (numbers get a selection slider), e.g. `figure_control(max_weight_figure, s=[0.2, 0.43, 1.0])`."""
    controls = {name: (widgets.SelectionSlider if all(isinstance(v, int | float) for v in values)
                       else widgets.Dropdown)(options=list(values), value=list(values)[0], description=name)
                for name, values in choices.items()}
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

