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


def test_attention_explorer_redraws_the_chosen_head():
    import torch

    from workbench.hooks.attention import attention_patterns
    from workbench.models import ModelConfig, build_model
    from workbench.widgets import attention_explorer

    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, n_ctx=8, d_vocab=10), seed=0).eval()
    prompts = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(0))
    box = attention_explorer(model, prompts, layer=1, head=0)
    layer, head, prompt = box.children[0].children
    assert box.children[1].layout.title.text == "layer 1 head 0"
    head.value, prompt.value = 1, 2
    expected = attention_patterns(model, prompts[2:3], [1])[1][0, 1]
    assert box.children[1].layout.title.text == "layer 1 head 1"
    assert torch.allclose(torch.tensor(box.children[1].data[0].z, dtype=torch.float), expected, atol=1e-6)


def test_snapshot_slider_redraws_from_the_chosen_snapshot():
    import workbench
    from workbench.runs import data_root
    from workbench.widgets import snapshot_slider

    path = data_root() / "induction"
    steps = workbench.snapshots(path)
    box = snapshot_slider(path, lambda model, step: line(float(model.W_E.sum().detach()), f"step {step}"))
    slider = box.children[0].children[0]
    assert box.children[1].layout.title.text.startswith(f"step {steps[-1]}:")
    slider.value = steps[3]
    assert box.children[1].layout.title.text.startswith(f"step {steps[3]}:")
    assert box.children[1].data[0].y[1] == float(workbench.load_model(path, step=steps[3]).W_E.sum().detach())
