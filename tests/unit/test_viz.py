"""Figure helpers that are pure transforms of a plotly figure."""

import plotly.graph_objects as go

from workbench.viz import LAYOUT, fit_to_width

LONG = "long-gap copy (gap 230, windows of 32): accuracy and attention cost"
SUB = "<sup>dotted: chance, what a model that guesses uniformly among the sixteen symbols scores</sup>"


def figure(title: str, names: tuple[str, ...] = ("trained model", "random-init control")) -> go.Figure:
    fig = go.Figure([go.Scatter(y=[1, 2], name=n) for n in names])
    fig.update_layout(title=title, **LAYOUT)
    return fig


def visible_lines(title: str) -> list[str]:
    return [line.removeprefix("<sup>").removesuffix("</sup>") for line in title.split("<br>")]


def test_a_long_title_is_broken_into_lines_that_fit_and_keep_every_word():
    fig = figure(f"{LONG}<br>{SUB}")
    fitted = fit_to_width(fig, 300)
    lines = visible_lines(fitted.layout.title.text)
    assert len(lines) > 2
    assert " ".join(lines).split() == " ".join(visible_lines(fig.layout.title.text)).split()
    title_lines = [line for line in fitted.layout.title.text.split("<br>") if not line.startswith("<sup>")]
    assert all(len(line) <= 300 / 8 for line in title_lines)
    assert fitted.layout.margin.t > LAYOUT["margin"]["t"]  # room above the plot for the extra lines
    assert fig.layout.title.text == f"{LONG}<br>{SUB}"  # the original figure is left as it was


def test_a_title_that_fits_and_a_short_legend_are_left_alone():
    fig = figure("loss", names=("ic", "iw"))
    fitted = fit_to_width(fig, 460)
    assert fitted.layout.title.text == "loss" and fitted.layout.margin.t == LAYOUT["margin"]["t"]
    assert fitted.layout.legend.orientation is None


def test_a_wide_side_legend_moves_below_a_narrow_plot_but_not_a_wide_one():
    fig = figure("accuracy", names=("IC2: trained classes, swapped labels", "IW: query class absent"))
    assert fit_to_width(fig, 300).layout.legend.orientation == "h"
    assert fit_to_width(fig, 1400).layout.legend.orientation is None
