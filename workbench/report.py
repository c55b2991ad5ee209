"""`workbench report RUN_DIR|data/EXP`: one self-contained HTML page about a finished run — claim, criteria with
the measured values, every figure, the config and the command that reproduces it. plotly.js is embedded once
and nothing is fetched, so the file can be mailed or zipped and opened offline."""

from __future__ import annotations

import html
import json
from pathlib import Path

from plotly.offline import get_plotlyjs

from workbench.config import ConfigError
from workbench.experiments.runner import criteria_rows, draw_figures, load_models
from workbench.runs import Run, home
from workbench.viz import figure_html

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}pre{background:#f6f8fa;padding:1em;
overflow-x:auto}code{background:#f6f8fa;padding:0 3px}"""


def default_out(path: str | Path) -> Path:
    """out/reports/<run or experiment>.html in the workbench home: a report never writes into the run or data/."""
    return home() / "out" / "reports" / f"{Path(path).resolve().name}.html"


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the finished run (or shipped experiment) at `path`; returns the file written."""
    result = Run(path).result()
    if result is None:
        raise ConfigError(f"{path}: no result.json; a report needs a finished run (`workbench resume {path}`)")
    exp, cfg, models = load_models(path)
    figures = draw_figures(exp, cfg, models, Run(path))
    rows = "".join(
        f"<tr><td>{html.escape(c['criterion'])}</td><td><code>{html.escape(c['metric'])}</code></td>"
        f"<td>{html.escape(c['needs'])}</td><td>{_number(c['measured'])}</td>"
        f"<td class={'pass' if c['passed'] else 'fail'}>{'pass' if c['passed'] else 'FAIL'}</td></tr>"
        for c in criteria_rows(exp, result))
    verdict = ("passes every criterion judged in its preset" if result["passed"]
               else "does not pass every criterion yet")
    body = [
        f"<h1>{html.escape(exp.title)}</h1>",
        f"<p><i>{html.escape(exp.paper)}</i></p><p>{html.escape(exp.claim)}</p>",
        f"<p><code>{html.escape(exp.name)}</code> ({html.escape(result['mode'])} preset) {verdict}; "
        f"{result['seconds']:.0f} s, workbench {html.escape(str(result.get('version')))}, commit "
        f"<code>{html.escape(str(result.get('git_sha') or 'unknown'))[:12]}</code>.</p>",
        "<h2>Criteria</h2><table><tr><th>criterion</th><th>metric</th><th>needs</th><th>measured</th><th></th></tr>"
        f"{rows}</table>",
        "<h2>Figures</h2>", *(figure_html(fig) for fig in figures.values()),
        "<h2>Reproduce</h2>", f"<pre>{html.escape(result.get('command') or f'workbench run {exp.name}')}</pre>",
        "<h2>Config</h2>", f"<pre>{html.escape(json.dumps(result['config'], indent=2))}</pre>",
    ]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(exp.name)} — workbench report"
            f"</title><style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>{''.join(body)}"
            "</body></html>\n")
    out = Path(out) if out is not None else default_out(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _number(value) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, int | float) else html.escape(str(value))
