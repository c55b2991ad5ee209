"""Every notebook executes top to bottom in smoke mode (trains the smoke preset itself)."""

import json
import re

import pytest

from tests.conftest import REPO
from workbench.notebooks import execute

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(notebook, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    executed = execute(notebook, tmp_path, mode="smoke", export="html")
    assert "IPKernelApp] WARNING" not in capfd.readouterr().err  # the kernel's start-up noise stays quiet
    html = executed.with_suffix(".html").read_text()
    assert executed.exists() and "Plotly.newPlot" in html
    assert not re.findall(r"""<script[^>]+src=["']?https?://""", html)  # shared exports open offline
    assert "VBox(children" not in html  # a figure control exports as its figure, not its widget repr
    assert html.count("* plotly.js v") == 1  # plotly.js embedded once, however many figures and controls
    assert "widgets" not in json.loads(executed.read_text())["metadata"]  # no megabytes of widget state


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(notebook):
    """Outputs belong to executed copies (`workbench notebooks --execute`), not to the repository."""
    cells = json.loads(notebook.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert any("parameters" in c.get("metadata", {}).get("tags", []) and 'mode = "shipped"' in "".join(c["source"])
               for c in code)  # papermill injects mode = "smoke" | "quick" after this cell


def test_the_index_links_every_exported_notebook_under_its_title(tmp_path):
    from workbench.notebooks import write_index

    copies = [tmp_path / notebook.name for notebook in NOTEBOOKS]
    for notebook, copy in zip(NOTEBOOKS, copies, strict=True):
        copy.write_text(notebook.read_text())
    page = write_index(copies, tmp_path / "index.html").read_text()
    assert page.count("<li>") == len(NOTEBOOKS)
    assert '<a href="05_grokking.html">Grokking modular addition</a>' in page
