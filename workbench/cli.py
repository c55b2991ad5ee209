"""The `workbench` command. Errors are one clear line on stderr and a non-zero exit.

    workbench [--root DIR] COMMAND …     (--root: where runs/ and data/ live; default: the current project)
    workbench list
    workbench run EXP [--smoke|--quick|--full] [--set key=value …] [--seed N] [--out DIR] [--json]
                      [--ship [--allow-failed]]
    workbench resume RUN_DIR [--json] [--device cpu|cuda|mps|auto]
    workbench runs [--out DIR]
    workbench eval RUN_DIR|data/EXP [--json] [--device …]
    workbench report RUN_DIR|data/EXP [--out FILE]
    workbench figures RUN_DIR|data/EXP [--format html,svg,png,pdf] [--out DIR] [--step N]
    workbench llc RUN_DIR|data/EXP [--variant NAME] [--lr LR] [--nbeta B] [--localization G] [--chains N]
                  [--draws N] [--json]
    workbench circuit RUN_DIR|data/EXP [--method eap|eap-ig|acdc] [--steps N] [--threshold T] [--pairs N]
                      [--metric margin|loss] [--path SENDER:RECEIVER …] [--json]
    workbench sweep EXP [--smoke|--quick|--full] --grid key=v1,v2 … [--out DIR] [--address ADDR] [--json]
    workbench bench [--quick] [--json] [--catalog] [--out PATH]
    workbench notebooks [--execute] [--export html] [--quick]
    workbench dashboard [--host 127.0.0.1] [--port 8501]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from workbench.config import ConfigError, parse_overrides
from workbench.experiments.base import MODES
from workbench.llc import LLCConfig
from workbench.runs import home, runs_root
from workbench.train import CheckpointError, TrainingDiverged

CIRCUIT_METRICS = {"margin": "next-token margin", "loss": "next-token loss"}  # `workbench circuit --metric`

# Dashboard server settings, passed as flags so an installed wheel serves the same way as a checkout.
STREAMLIT_SETTINGS = {"server.headless": "true", "server.enableXsrfProtection": "true",
                      "server.runOnSave": "false", "browser.gatherUsageStats": "false",
                      "client.toolbarMode": "minimal"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.command_line = "workbench " + shlex.join(argv)
    if args.root:  # one switch for every location below: runs, data, notebooks
        os.environ["WORKBENCH_HOME"] = str(Path(args.root).resolve())
    try:
        return args.func(args) or 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with `workbench resume RUN_DIR`", file=sys.stderr)
        return 130
    except (TrainingDiverged, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description="Look inside small transformers.")
    p.add_argument("--root", help="workbench home holding runs/ and data/ (default: $WORKBENCH_HOME, else the "
                                  "current project: the nearest folder up with pyproject.toml or .git)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the experiment catalog").set_defaults(func=cmd_list)

    r = sub.add_parser("run", help="train an experiment and check its criteria")
    r.add_argument("experiment")
    add_mode_flags(r)
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. --set model.n_layers=4 (repeatable)")
    r.add_argument("--seed", type=int)
    r.add_argument("--out", help="run registry root (default: runs/ in the workbench home)")
    r.add_argument("--json", action="store_true", help="print the result JSON as the last line")
    r.add_argument("--ship", action="store_true", help="copy models, snapshots and result into data/EXP/")
    r.add_argument("--allow-failed", action="store_true", help="with --ship: ship even if a criterion failed")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("resume", help="continue an interrupted run")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true")
    s.add_argument("--device", choices=["cpu", "cuda", "mps", "auto"], help="continue on another device")
    s.set_defaults(func=cmd_resume)

    ls = sub.add_parser("runs", help="list runs, newest first")
    ls.add_argument("--out", help="run registry root (default: runs/ in the workbench home)")
    ls.set_defaults(func=cmd_runs)

    e = sub.add_parser("eval", help="re-evaluate a saved model (every variant) against its criteria (writes nothing)")
    e.add_argument("path")
    e.add_argument("--json", action="store_true")
    e.add_argument("--device", choices=["cpu", "cuda", "mps", "auto"])
    e.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="one self-contained HTML page (claim, criteria, figures, config, command) "
                        "for a finished run or data/EXP; opens offline")
    rp.add_argument("path")
    rp.add_argument("--out", help="HTML file to write (default: out/reports/<run>.html)")
    rp.set_defaults(func=cmd_report)

    fg = sub.add_parser("figures", help="write every figure of a run or data/EXP to files: standalone HTML "
                        "(offline), PNG/SVG/PDF (kaleido with the system's Chromium)")
    fg.add_argument("path")
    fg.add_argument("--format", default="html,svg", help="comma-separated: html, svg, png, pdf (default html,svg)")
    fg.add_argument("--out", help="folder (default: out/figures/<run>[-step-N]/)")
    fg.add_argument("--step", type=int, help="draw them from the snapshot at this training step")
    fg.set_defaults(func=cmd_figures)

    lc = sub.add_parser("llc", help="the local learning coefficient at every snapshot of a run (devinterp's SGLD), "
                        "saved as llc.json in the run and drawn on the Training dynamics page")
    lc.add_argument("path")
    lc.add_argument("--variant", help="one variant of a run with variants")
    defaults = LLCConfig()
    for name, kind in (("lr", float), ("nbeta", float), ("localization", float), ("chains", int), ("draws", int),
                       ("batch_size", int), ("sequences", int), ("seed", int)):
        lc.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                        help=f"default {getattr(defaults, name)}")
    lc.add_argument("--json", action="store_true")
    lc.set_defaults(func=cmd_llc)

    c = sub.add_parser("circuit", help="discover a saved model's circuit on its experiment's clean/corrupted "
                                       "prompts: top edges, faithfulness curve, CPR/CMD, path patching")
    c.add_argument("path")
    c.add_argument("--method", choices=["eap", "eap-ig", "acdc"], default="eap-ig")
    c.add_argument("--steps", type=int, default=10, help="EAP-IG's integration steps")
    c.add_argument("--threshold", type=float, default=0.01, help="ACDC: share of the gap an edge may cost, [0, 1]")
    c.add_argument("--pairs", type=int, default=16, help="clean/corrupted prompt pairs")
    c.add_argument("--metric", choices=list(CIRCUIT_METRICS), default="margin")
    c.add_argument("--path", dest="paths", action="append", default=[], metavar="SENDER:RECEIVER",
                   help="path-patch one direct path, e.g. L0H2:L1H0.k (repeatable)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_circuit)

    n = sub.add_parser("notebooks", help="execute the notebooks (and export them)")
    n.add_argument("--execute", action="store_true",
                   help="run every notebook top to bottom (papermill), on the shipped models unless --quick; "
                   "without it, list the notebooks")
    n.add_argument("--export", choices=["html"], help="also write each executed notebook as self-contained HTML "
                   "that opens offline")
    n.add_argument("--quick", action="store_true", help="train the quick preset instead of using the shipped model")
    n.add_argument("--out", default="out/notebooks", help="where executed notebooks and exports go "
                   "(default: out/notebooks)")
    n.set_defaults(func=cmd_notebooks)

    w = sub.add_parser("sweep", help="run an experiment over a grid of overrides in parallel (Ray)")
    w.add_argument("experiment")
    add_mode_flags(w)
    w.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values to sweep, e.g. --grid train.lr=1e-3,3e-3 (repeatable: the product is run); "
                   "--grid variant=a,b trains those of the experiment's variants, one a worker; no --grid: all of them")
    w.add_argument("--seed", type=int)
    w.add_argument("--out", help="run registry root (default: runs/ in the workbench home)")
    w.add_argument("--address", help="host:port of a running Ray cluster (default: a local one)")
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_sweep)

    b = sub.add_parser("bench", help="benchmark: our model vs plain PyTorch and TransformerBridge, cache costs, MFU")
    b.add_argument("--quick", action="store_true", help="smallest config, few reps: seconds (what CI runs)")
    b.add_argument("--json", action="store_true", help="print the result JSON as the last line")
    b.add_argument("--catalog", action="store_true", help="also time every experiment's quick run (long)")
    b.add_argument("--out", default=None, help="result JSON path (default: data/bench.json; with --quick: "
                   "out/bench-quick.json, so a quick run never replaces the shipped full one)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("dashboard", help="serve the Streamlit dashboard")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8501)
    d.set_defaults(func=cmd_dashboard)
    return p


def add_mode_flags(p: argparse.ArgumentParser) -> None:
    """--smoke | --quick (default) | --full."""
    modes = p.add_mutually_exclusive_group()
    for mode in MODES:
        modes.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    p.set_defaults(mode="quick")


def cmd_list(args) -> None:
    from workbench.experiments.runner import catalog

    for row in catalog():
        print(f"{row['experiment']:<14} {row['title']} — {row['paper']}  [shipped: {row['shipped']}]")
        for c in row["criteria"]:
            value = "" if c["shipped value"] is None else f"  (shipped: {c['shipped value']:.4g})"
            print(f"{'':<16}{c['criterion']}: {c['metric']} {c['needs']}{value}")


def print_criteria(criteria: list[dict]) -> None:
    for c in criteria:
        value = "missing" if c["value"] is None else f"{c['value']:.4g}"
        versus = f" × {c['versus']} = {c['bound']:.4g}" if c.get("versus") and c.get("bound") is not None else ""
        tag = ("pass" if c["passed"] else "FAIL") + ("" if c.get("counts", True) else ", not judged in this preset")
        print(f"  [{tag}] {c['name']}: {c['metric']} = {value} (needs {c['op']} {c['threshold']}{versus})")


def print_result(result: dict, as_json: bool) -> None:
    print_criteria(result["criteria"])
    print(f"{result['experiment']} ({result['mode']}): {'PASSED' if result['passed'] else 'FAILED'} "
          f"in {result['seconds']:.1f} s" + (f" → {result['run_dir']}" if "run_dir" in result else ""))
    if as_json:
        print(json.dumps(result, default=str))


def cmd_run(args) -> int:
    from workbench.experiments.runner import run, ship

    result = run(args.experiment, mode=args.mode, overrides=parse_overrides(args.overrides), seed=args.seed,
                 out=args.out, command=args.command_line)
    print_result(result, args.json)
    if args.ship:
        print(f"shipped to {ship(result['run_dir'], allow_failed=args.allow_failed)}")
    return 0 if result["passed"] else 1


def cmd_resume(args) -> int:
    from workbench.experiments.runner import resume

    result = resume(args.run_dir, device=args.device)
    print_result(result, args.json)
    return 0 if result["passed"] else 1


def cmd_runs(args) -> int:
    """List every run; unreadable ones are reported on stderr and make the exit code 1."""
    from workbench.runs import list_runs

    root = args.out or runs_root()
    infos = list_runs(root)
    if not infos:
        print(f"no runs under {root}/")
    for info in infos:
        verdict = {True: "pass", False: "FAIL", None: ""}[info.passed]
        variants = f"  variants: {', '.join(info.variants)}" if info.variants else ""
        print(f"{info.path.name:<44} {info.experiment:<12} {info.mode:<6} {info.status:<11} {verdict:<4}{variants}")
    corrupt = [info for info in infos if info.error]
    for info in corrupt:
        print(f"error: {info.error}", file=sys.stderr)
    return 1 if corrupt else 0


def cmd_eval(args) -> int:
    from workbench.experiments.runner import evaluate_saved

    result = evaluate_saved(args.path, device=args.device)
    print_result(result, args.json)
    return 0 if result["passed"] else 1


def cmd_report(args) -> int:
    from workbench.report import write_report

    print(f"report → {write_report(args.path, args.out)}")
    return 0


def cmd_figures(args) -> int:
    from workbench.experiments.runner import figures
    from workbench.viz.export import export_figures

    name = Path(args.path).resolve().name + (f"-step-{args.step}" if args.step is not None else "")
    out = Path(args.out) if args.out else home() / "out" / "figures" / name
    written = export_figures(figures(args.path, step=args.step), out, [f.strip() for f in args.format.split(",")])
    print(f"{len(written)} files → {out}")
    return 0


def cmd_llc(args) -> int:
    from workbench.llc import llc_over_training

    cfg = LLCConfig(**{f: getattr(args, f) for f in LLCConfig.__dataclass_fields__})
    table = llc_over_training(args.path, args.variant, cfg)
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(table.round(3).to_string(index=False))
    return 0


def cmd_circuit(args) -> int:
    from workbench.experiments.runner import load
    from workbench.hooks.circuits import (
        PROMPT_METRICS,
        CircuitRun,
        area_scores,
        discover,
        faithfulness_curve,
        path_patching,
    )

    if args.pairs < 1:
        raise ConfigError(f"--pairs={args.pairs}: needs at least one clean/corrupted pair")
    exp, cfg, model = load(args.path)
    prompts = exp.circuit_prompts(cfg, args.pairs)
    if prompts is None:
        raise ConfigError(f"{args.path}: experiment {exp.name!r} defines no clean/corrupted prompts "
                          "(Experiment.circuit_prompts)")
    senders_receivers = [spec.split(":") for spec in args.paths]
    if any(len(pair) != 2 for pair in senders_receivers):
        raise ConfigError(f"--path {args.paths}: write each as SENDER:RECEIVER, e.g. L0H2:L1H0.k")
    clean, corrupted, positions = prompts
    metric = PROMPT_METRICS[CIRCUIT_METRICS[args.metric]](clean, positions)
    method = {"eap": "EAP", "eap-ig": "EAP-IG", "acdc": "ACDC"}[args.method]
    paths = {f"{s}:{r}": float(path_patching(model, clean, corrupted, metric, [s], [r]).iloc[0, 0])
             for s, r in senders_receivers}  # first: a misspelt node fails before the long part
    graph = discover(model, clean, corrupted, metric, method, args.steps, args.threshold, progress=True)
    run = CircuitRun.prepare(model, clean, corrupted, metric)
    curve = faithfulness_curve(model, clean, corrupted, metric, graph, run=run)
    edges = graph.edges()
    result = {"path": args.path, "experiment": exp.name, "method": method, "metric": CIRCUIT_METRICS[args.metric],
              "pairs": args.pairs, "clean_metric": run.clean_metric, "corrupted_metric": run.corrupted_metric,
              "edges": graph.n_edges, "kept": None if graph.kept is None else int(graph.kept.sum()),
              **area_scores(curve), "curve": curve.to_dict("records"), "top_edges": edges.head(20).to_dict("records"),
              "path_patching": paths}
    print(f"{exp.name}: {method} on {args.pairs} pairs, {result['metric']} clean {run.clean_metric:.4g}, "
          f"corrupted {run.corrupted_metric:.4g}; {graph.n_edges} edges"
          + (f", ACDC kept {result['kept']}" if graph.kept is not None else ""))
    print(edges.head(10).round(4).to_string(index=False))
    shown = curve.assign(fraction=curve.fraction.round(4), faithfulness=curve.faithfulness.round(3) + 0.0)
    print(shown.to_string(index=False))  # + 0.0 turns a rounded -1e-9 into 0.0, not "-0.0"
    print(f"CPR {result['cpr']:.3f}  CMD {result['cmd']:.3f}")
    for spec, lost in paths.items():
        print(f"path patching {spec}: loses {lost:.3f} of the gap")
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def cmd_notebooks(args) -> int:
    from workbench.notebooks import execute_all

    mode = "quick" if args.quick else "shipped"
    folder = home() / "notebooks"
    if not args.execute:
        for path in sorted(folder.glob("*.ipynb")):
            print(path.relative_to(home()))
        return 0
    for path in execute_all(folder, Path(args.out), mode=mode, export=args.export):
        print(f"executed → {path}")
    return 0


def cmd_sweep(args) -> int:
    from workbench.sweep import parse_grid, sweep

    grid = parse_grid(args.grid) if args.grid else None
    summary = sweep(args.experiment, args.mode, grid, out=args.out, address=args.address, seed=args.seed)
    for r in summary["runs"]:
        # A variant alone has no verdict when the criteria span variants (a fit across sizes): the summary has it.
        verdict = "done" if "criteria" in summary else "pass" if r["passed"] else "FAIL"
        print(f"  [{verdict}] {r['variant'] or r['overrides']} → {r['run_dir']} ({r['seconds']:.1f} s)")
    print(f"{len(summary['runs'])} runs in {summary['seconds']:.1f} s")
    print_criteria(summary.get("criteria", []))
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


def cmd_bench(args) -> int:
    from workbench.bench import main as bench_main

    return bench_main(args)


def cmd_dashboard(args) -> int:
    """Replace this process with the Streamlit server (exec), so signals reach the server itself.
    The app ships inside the package; the workbench home travels in $WORKBENCH_HOME."""
    os.execv(sys.executable, dashboard_command(args.host, args.port))


def dashboard_command(host: str, port: int) -> list[str]:
    app = Path(__file__).parent / "dashboard" / "app.py"
    settings = {"server.address": host, "server.port": str(port), **STREAMLIT_SETTINGS}
    os.environ.setdefault("WORKBENCH_HOME", str(home()))  # pages see the same runs/ and data/ as this command
    return [sys.executable, "-m", "streamlit", "run", str(app),
            *[arg for key, value in settings.items() for arg in (f"--{key}", value)]]


if __name__ == "__main__":
    sys.exit(main())
