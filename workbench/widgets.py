"""ipywidgets controls around `workbench.viz` figures, for notebooks.

Controls update a plotly `FigureWidget` in place instead of re-rendering through an Output widget
(`@interact`): headless execution (papermill/nbclient) can hang on Output-widget capture
(jupyter/nbclient#312, nteract/papermill#723), and in-place updates are smoother in JupyterLab too.
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
from jaxtyping import Int
from torch import Tensor

from workbench.hooks.attention import attention_patterns
from workbench.viz import attention_heatmap


def attention_explorer(model, prompts: Int[Tensor, "prompt pos"], layer: int = 0, head: int = 0) -> widgets.VBox:
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
    return widgets.VBox([widgets.HBox([layer_box, head_box, prompt_box]), shown])
