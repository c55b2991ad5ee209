"""Figures to files: standalone HTML that opens offline, and PNG/SVG through kaleido with the system's Chromium."""

import plotly.graph_objects as go
import pytest

from workbench.config import ConfigError
from workbench.viz.export import export_figures, save_figure


def figure():
    return go.Figure(go.Bar(x=["a", "b"], y=[1, 3]), layout={"title": "bars"})


def test_html_export_carries_plotly_and_fetches_nothing(tmp_path):
    page = save_figure(figure(), tmp_path / "bars.html").read_text()
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inside
    assert 'src="http' not in page


def test_png_and_svg_export_through_the_system_chromium(tmp_path):
    written = export_figures({"bars": figure(), "line": go.Figure(go.Scatter(y=[1, 2]))}, tmp_path,
                             ["svg", "png", "html"])
    assert sorted(p.name for p in written) == ["bars.html", "bars.png", "bars.svg", "line.html", "line.png",
                                               "line.svg"]
    assert (tmp_path / "bars.svg").read_text().lstrip().startswith("<svg")
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_names_an_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="as 'jpeg'; formats: html, png, svg, pdf"):
        save_figure(figure(), tmp_path / "bars.jpeg")
    with pytest.raises(ConfigError, match="unknown figure format"):
        export_figures({"bars": figure()}, tmp_path, ["gif"])
