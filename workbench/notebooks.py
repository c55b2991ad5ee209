"""Execute the teaching notebooks with papermill (parameters injected), optionally export HTML."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"  # nbconvert templates: "offline" loads nothing from CDNs


def execute(notebook: str | Path, out_dir: str | Path, mode: str = "smoke", export: str | None = None,
            timeout: int = 600) -> Path:
    """Run `notebook` with `mode` injected into its `parameters` cell; returns the executed copy."""
    import papermill

    notebook, out_dir = Path(notebook), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    papermill.execute_notebook(str(notebook), str(executed), parameters={"mode": mode},
                               cwd=str(notebook.parent), kernel_name="python3", progress_bar=False,
                               execution_timeout=timeout,
                               # the kernel's start-up warnings (TCP without encryption on a local kernel) are
                               # not the user's business; errors still show
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])
    drop_widget_state(executed)
    if export == "html":
        from nbconvert import HTMLExporter
        from traitlets.config import Config

        # HTML before widget views: the page has no kernel, so a widget shows its static HTML form if it has one.
        priority = ["text/html", *[t for t in HTMLExporter().default_config.NbConvertBase.display_data_priority
                                   if t != "text/html"]]
        exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="offline",
                                config=Config({"NbConvertBase": {"display_data_priority": priority}}))
        body, _ = exporter.from_filename(str(executed))
        executed.with_suffix(".html").write_text(body, encoding="utf-8")
    return executed


def drop_widget_state(path: Path) -> None:
    """Remove the widget state nbclient saves (megabytes of FigureWidget data that a page without a kernel cannot
    use): each control already carries its figure as static HTML."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if nb.metadata.pop("widgets", None) is not None:
        nbformat.write(nb, path)


def execute_all(folder: str | Path, out_dir: str | Path, mode: str = "smoke", export: str | None = None) -> list[Path]:
    """Execute every notebook in `folder`; with HTML export, also write `index.html` linking the pages."""
    executed = [execute(nb, out_dir, mode, export) for nb in sorted(Path(folder).glob("*.ipynb"))]
    if export == "html":
        write_index(executed, Path(out_dir) / "index.html")
    return executed


def write_index(notebooks: list[Path], path: Path) -> Path:
    """A page linking each exported notebook (`name.html` beside `name.ipynb`) under its first heading."""
    import html

    import nbformat

    rows = []
    for notebook in notebooks:
        cells = nbformat.read(notebook, as_version=4).cells
        heading = next((line.lstrip("# ").strip() for cell in cells if cell.cell_type == "markdown"
                        for line in cell.source.splitlines() if line.startswith("# ")), notebook.stem)
        rows.append(f'<li><a href="{html.escape(notebook.with_suffix(".html").name)}">{html.escape(heading)}</a>'
                    f" <small>({html.escape(notebook.name)})</small></li>")
    path.write_text("<!doctype html><meta charset='utf-8'><title>workbench notebooks</title>"
                    "<h1>workbench notebooks</h1><p>Executed notebooks; each page opens offline.</p>"
                    f"<ul>{''.join(rows)}</ul>\n", encoding="utf-8")
    return path
