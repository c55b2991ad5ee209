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
    return [execute(nb, out_dir, mode, export) for nb in sorted(Path(folder).glob("*.ipynb"))]
