"""Run, resume and re-evaluate experiments. `run` reads as its own summary:
validate → create run → train → evaluate → check criteria → save → figures."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from torch import nn

import workbench
from workbench.config import ConfigError, read_json
from workbench.experiments import get, names
from workbench.experiments.base import Experiment, ExperimentConfig, Mode
from workbench.models import build_model
from workbench.models.io import load_state, load_weights, save_weights
from workbench.runs import DATA_ROOT, DEFAULT_ROOT, Run, checkpoint_step, list_runs, write_json
from workbench.train import Progress, checkpoint_model_state

SHIPPED_FILES = ("model.safetensors", "config.json", "result.json")


def run(
    name: str,
    mode: Mode = "quick",
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    out: str | Path = DEFAULT_ROOT,
    callback: Callable[[Progress], None] | None = None,
    progress_bar: bool = True,
    command: str | None = None,
) -> dict:
    """Train experiment `name` in `mode` and return its result (also written to the run dir)."""
    exp = get(name)
    cfg = exp.config(mode, overrides, seed)
    command = command or f"workbench.run({name!r}, mode={mode!r}, overrides={overrides!r}, seed={seed!r})"
    run_ = Run.create(out, name, cfg.model_dump(mode="json"), mode, command)
    start = time.perf_counter()
    try:
        model = exp.train(cfg, run_, callback=callback, progress_bar=progress_bar)
        return finish(exp, cfg, model, run_, mode, time.perf_counter() - start, command)
    except BaseException:
        if not run_.checkpoints():  # nothing to resume from: leave no half-written run behind
            shutil.rmtree(run_.path, ignore_errors=True)
        raise
    finally:
        run_.unlock()


def resume(run_dir: str | Path, callback: Callable[[Progress], None] | None = None,
           progress_bar: bool = True) -> dict:
    """Continue an interrupted run from its latest checkpoint; the final weights match an unbroken run."""
    run_ = Run(run_dir)
    header = run_.header
    exp = get(header["experiment"])
    cfg = exp.Config.parse(header["config"], where="config")
    checkpoints = run_.checkpoints()
    if (run_.path / "result.json").exists():
        raise ConfigError(f"{run_.path}: run already finished (result.json exists); nothing to resume")
    run_.lock()
    try:
        run_.remove_stale_temp_files()
        latest = str(checkpoints[-1]) if checkpoints else None
        run_.truncate_metrics(checkpoint_step(checkpoints[-1]) if checkpoints else 0)
        start = time.perf_counter()
        model = exp.train(cfg, run_, callback=callback, resume_from=latest, progress_bar=progress_bar)
        return finish(exp, cfg, model, run_, header.get("mode", "?"), time.perf_counter() - start,
                      header.get("command", ""))
    finally:
        run_.unlock()


def finish(exp: Experiment, cfg: ExperimentConfig, model: nn.Module, run_: Run, mode: str, seconds: float,
           command: str) -> dict:
    save_weights(model.state_dict(), run_.path / "model.safetensors")
    result = make_result(exp, cfg, exp.evaluate(model, cfg), mode, seconds, command)
    for key, fig in exp.figures(model, cfg, run_).items():
        (run_.path / "figures" / f"{key}.json").write_text(pio.to_json(fig))
    write_json(run_.path / "result.json", result)  # last: its presence marks the run done
    return {**result, "run_dir": str(run_.path)}


def saved_figures(run_dir: str | Path) -> dict[str, go.Figure]:
    """The figures a finished run wrote to its figures/ folder."""
    return {p.stem: pio.from_json(p.read_text()) for p in sorted(Path(run_dir).glob("figures/*.json"))}


def make_result(exp: Experiment, cfg: ExperimentConfig, metrics: dict, mode: str, seconds: float,
                command: str) -> dict:
    criteria = exp.check(metrics)
    return {
        "experiment": exp.name, "mode": mode, "config": cfg.model_dump(mode="json"), "metrics": metrics,
        "criteria": criteria, "passed": all(c["passed"] for c in criteria), "seconds": round(seconds, 2),
        "version": workbench.__version__, "git_sha": git_sha(), "command": command,
    }


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load(path: str | Path) -> tuple[Experiment, ExperimentConfig, nn.Module]:
    """Load a run directory or `data/<experiment>`: its experiment, config and ready model (eval mode)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a run directory or data/<experiment> folder")
    saved = Run(path)
    header = saved.header
    exp = get(header.get("experiment", "?"))
    cfg = exp.Config.parse(header.get("config", {}), where=f"{path / 'config.json'}: config")
    model = build_model(cfg.model)
    weights, checkpoints = path / "model.safetensors", saved.checkpoints()
    if weights.exists() or not checkpoints:
        load_state(model, load_weights(weights), weights)
    else:  # unfinished run: the model part of its latest checkpoint
        load_state(model, checkpoint_model_state(checkpoints[-1]), checkpoints[-1])
    return exp, cfg, model.eval()


def load_experiment(name: str, mode: str = "shipped", **run_kwargs) -> tuple[Experiment, ExperimentConfig, nn.Module]:
    """`mode="shipped"`: the model in data/<name>; "smoke"/"quick"/"full": train that preset now."""
    if mode == "shipped":
        if not (DATA_ROOT / name / "config.json").exists():
            raise ConfigError(f"{DATA_ROOT / name}: no shipped model; run `workbench run {name} --quick --ship`")
        return load(DATA_ROOT / name)
    return load(run(name, mode=mode, **run_kwargs)["run_dir"])


def evaluate_saved(path: str | Path) -> dict:
    """Re-evaluate a saved model against its criteria. Reads only; writes nothing."""
    start = time.perf_counter()
    exp, cfg, model = load(path)
    mode = Run(path).header.get("mode", "?")
    return make_result(exp, cfg, exp.evaluate(model, cfg), mode, time.perf_counter() - start, f"workbench eval {path}")


def ship(run_dir: str | Path, data_root: str | Path = DATA_ROOT) -> Path:
    """Copy a finished run's model, config and result into data/<experiment>/."""
    run_ = Run(run_dir)
    target = Path(data_root) / run_.header["experiment"]
    target.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copyfile(run_.path / name, target / name)
    return target


def catalog(data_root: str | Path = DATA_ROOT) -> list[dict]:
    """One row per registered experiment: its criteria, with the shipped result's values and verdict."""
    rows = []
    for name in names():
        exp, shipped = get(name), Path(data_root) / name / "result.json"
        status, measured = "not shipped", {}
        if shipped.exists():
            try:
                result = read_json(shipped, "result")
                status = "pass" if result["passed"] else "FAIL"
                measured = {c["name"]: c for c in result["criteria"]}
            except (ConfigError, KeyError, TypeError) as e:
                status = f"unreadable: {e}"
        criteria = [{"criterion": c.name, "metric": c.metric, "needs": f"{c.symbol} {c.threshold}",
                     "shipped value": measured.get(c.name, {}).get("value"),
                     "passed": measured.get(c.name, {}).get("passed")} for c in exp.criteria]
        rows.append({"experiment": name, "title": exp.title, "paper": exp.paper, "claim": exp.claim,
                     "shipped": status, "criteria": criteria})
    return rows


def saved_models(data_root: str | Path = DATA_ROOT, runs_root: str | Path = DEFAULT_ROOT) -> dict[str, Path]:
    """Loadable models by label: shipped `data/<exp>` first, then runs that have weights."""
    found = {}
    for path in sorted(Path(data_root).glob("*/model.safetensors")):
        found[f"shipped: {path.parent.name}"] = path.parent
    for info in list_runs(runs_root):
        if info.status != "corrupt" and ((info.path / "model.safetensors").exists() or Run(info.path).checkpoints()):
            found[f"run: {info.path.name} ({info.status})"] = info.path
    return found
