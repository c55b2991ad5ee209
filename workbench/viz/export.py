"""Figures to files: standalone HTML (plotly.js inside, opens offline), and PNG / SVG / PDF through kaleido, which
drives a headless Chromium — here Debian's, the one the browser tests use, since nothing may be downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import plotly.graph_objects as go

from workbench.config import ConfigError

FORMATS = ("html", "png", "svg", "pdf")
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    """The browser kaleido should drive: $BROWSER_PATH if set, else the first Chromium on PATH."""
    found = os.environ.get("BROWSER_PATH") or next(filter(None, map(shutil.which, CHROMIUM)), None)
    if not found:
        raise ConfigError("PNG/SVG/PDF export drives a headless Chromium and none was found: install it "
                          "(`sudo apt-get install -y chromium`) or set BROWSER_PATH; HTML export needs nothing")
    return found


def save_figure(fig: go.Figure, path: str | Path, scale: float = 2.0) -> Path:
    """Write `fig` as the format its suffix names (.html, .png, .svg, .pdf); PNG at `scale`× its pixel size."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    if kind not in FORMATS:
        raise ConfigError(f"{path}: cannot export a figure as {kind!r}; formats: {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        return path
    os.environ.setdefault("BROWSER_PATH", chromium_path())  # choreographer (kaleido's browser driver) reads it
    fig.write_image(path, scale=scale if kind == "png" else 1)
    return path


def export_figures(figures: dict[str, go.Figure], out: str | Path, formats: Iterable[str] = ("html", "svg")
                   ) -> list[Path]:
    """Every figure in every format, as `out/<name>.<format>`; one kaleido session serves all the images."""
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ConfigError(f"unknown figure format(s) {', '.join(unknown)}; formats: {', '.join(FORMATS)}")
    images = [(Path(out) / f"{name}.{kind}", fig) for name, fig in figures.items() for kind in formats
              if kind != "html"]
    written = [save_figure(fig, Path(out) / f"{name}.html") for name, fig in figures.items() if "html" in formats]
    if images:
        import plotly.io as pio

        os.environ.setdefault("BROWSER_PATH", chromium_path())
        for path, _ in images:
            path.parent.mkdir(parents=True, exist_ok=True)
        pio.write_images([fig for _, fig in images], [path for path, _ in images],
                         scale=[2.0 if path.suffix == ".png" else 1.0 for path, _ in images])
        written += [path for path, _ in images]
    return written


def zip_figures(figures: dict[str, go.Figure], formats: Iterable[str] = ("html", "svg", "png")) -> bytes:
    """Every figure in every format, as the bytes of one zip (a download)."""
    import io
    import tempfile
    import zipfile

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in export_figures(figures, folder, formats):
            archive.write(path, path.name)
    return buffer.getvalue()
