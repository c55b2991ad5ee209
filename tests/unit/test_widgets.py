"""Notebook controls: a control's change redraws its figure in place."""

import plotly.graph_objects as go

from workbench.widgets import figure_control


def line(slope: float, name: str = "a") -> go.Figure:
    return go.Figure([go.Scatter(x=[0, 1], y=[0, slope], name=name)], layout={"title": f"{name}: slope {slope}"})


def test_figure_control_redraws_on_every_control():
    box = figure_control(line, slope=[1.0, 2.0, 3.0], name=["a", "b"])
    slider, dropdown = box.children[0].children
    shown = box.children[1]
    assert list(shown.data[0].y) == [0, 1.0] and shown.layout.title.text == "a: slope 1.0"
    slider.value = 3.0
    dropdown.value = "b"
    assert len(shown.data) == 1 and list(shown.data[0].y) == [0, 3.0] and shown.data[0].name == "b"
    assert shown.layout.title.text == "b: slope 3.0"
