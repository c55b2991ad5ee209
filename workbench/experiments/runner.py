"""Run, resume and re-evaluate experiments. `run` reads as its own summary:
validate → create run → train → evaluate → check criteria → save → figures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
import plotly.io as pio
from torch import nn

import workbench
from workbench.config import ConfigError, apply_overrides, read_json
from workbench.experiments import get, names
from workbench.experiments.base import Experiment, ExperimentConfig, Mode, verdict
from workbench.models.io import load_state, load_weights, read_metadata, save_weights
from workbench.runs import Run, RunInfo, atomic_write, data_root, list_runs, replace_dir, runs_root, write_json
from workbench.train import Progress, checkpoint_info, checkpoint_model_state

# What `ship` copies into data/<experiment>/ (top level and per variant): no resume checkpoints.
SHIPPED = ("config.json", "result.json", "metrics.jsonl", "model.safetensors", "snapshots", "llc.json")
SHIPPED_PER_VARIANT = ("metrics.jsonl", "model.safetensors", "snapshots", "llc.json")

Models = nn.Module | dict[str, nn.Module]  # one model, or one per variant


class Loaded(NamedTuple):
    """A saved model with its experiment and config (the variant's config when a variant was picked)."""

    experiment: Experiment
    config: ExperimentConfig
    model: nn.Module


class ModelRef(NamedTuple):
    """Where a loadable model lives: a run or data/ folder, the variant inside it (None: the only model), and
    the experiment that made it."""

    path: Path
    variant: str | None = None
    experiment: str | None = None


def run(
    name: str,
    mode: Mode = "quick",
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    callback: Callable[[Progress], None] | None = None,
    progress_bar: bool = True,
    command: str | None = None,
) -> dict:
    """Train experiment `name` in `mode` and return its result (also written to the run dir)."""
    exp = get(name)
    cfg = exp.config(mode, overrides, seed)
    command = command or f"workbench.run({name!r}, mode={mode!r}, overrides={overrides!r}, seed={seed!r})"
    run_ = Run.create(out or runs_root(), name, cfg.model_dump(mode="json"), mode, command)
    start = time.perf_counter()
    try:
        models = train_all(exp, cfg, run_, callback, progress_bar)
        return finish(exp, cfg, models, run_, mode, time.perf_counter() - start, command)
    except BaseException:
        if not run_.resumable():  # nothing to resume from: leave no half-written run behind
            shutil.rmtree(run_.path, ignore_errors=True)
        raise
    finally:
        run_.unlock()


def resume(run_dir: str | Path, callback: Callable[[Progress], None] | None = None,
           progress_bar: bool = True, device: str | None = None) -> dict:
    """Continue an interrupted run: finished variants are kept, the others continue from their latest
    checkpoint, and the final weights match an unbroken run. `device` moves it (cpu, cuda, mps, auto)."""
    run_ = Run(run_dir)
    header = run_.header
    exp = get(header["experiment"])
    cfg = with_device(exp.Config.parse(header["config"], where="config"), device)
    if (run_.path / "result.json").exists():
        raise ConfigError(f"{run_.path}: run already finished (result.json exists); nothing to resume")
    run_.lock()
    try:
        run_.remove_stale_temp_files()
        start = time.perf_counter()
        models = train_all(exp, cfg, run_, callback, progress_bar)
        return finish(exp, cfg, models, run_, header.get("mode", "?"), time.perf_counter() - start,
                      header.get("command", ""))
    finally:
        run_.unlock()


def train_all(exp: Experiment, cfg: ExperimentConfig, run_: Run, callback, progress_bar: bool) -> Models:
    """Train the run's model, or each variant in turn; a variant already trained is loaded, not retrained."""
    if not cfg.variants:
        return train_one(exp, cfg, run_, callback, progress_bar)
    return {name: train_one(exp, cfg.variant(name), run_.variant(name), callback, progress_bar)
            for name in cfg.variants}


def train_one(exp: Experiment, cfg: ExperimentConfig, run_: Run, callback, progress_bar: bool) -> nn.Module:
    weights = run_.path / "model.safetensors"
    if weights.exists():
        return model_from(exp, cfg, load_weights(weights), weights)
    model = exp.train(cfg, run_, callback=callback, progress_bar=progress_bar)
    save_weights(model.state_dict(), weights)  # marks this model (variant) done
    return model


def finish(exp: Experiment, cfg: ExperimentConfig, models: Models, run_: Run, mode: str, seconds: float,
           command: str) -> dict:
    result = make_result(exp, cfg, evaluate(exp, cfg, models, run_), mode, seconds, command)
    for key, fig in draw_figures(exp, cfg, models, run_).items():
        atomic_write(run_.path / "figures" / f"{key}.json", pio.to_json(fig))
    write_json(run_.path / "result.json", result)  # last: its presence marks the run done
    return {**result, "run_dir": str(run_.path)}


def evaluate(exp: Experiment, cfg: ExperimentConfig, models: Models, run_: Run | None = None) -> dict:
    """The models' metrics, plus those the experiment reads from the run's files (log, artifacts) if there is a run."""
    metrics = exp.evaluate_variants(models, cfg) if isinstance(models, dict) else exp.evaluate(models, cfg)
    return metrics | (exp.run_metrics(cfg, run_, models) if run_ is not None else {})


def draw_figures(exp: Experiment, cfg: ExperimentConfig, models: Models, run_: Run | None = None
                 ) -> dict[str, go.Figure]:
    """A run's figures; with variants, those comparing them first, then each variant's own (`name.figure`)."""
    if not isinstance(models, dict):
        return exp.figures(models, cfg, run_)
    figures = exp.figures_variants(models, cfg, run_)
    return dict(sorted(figures.items(), key=lambda item: "." in item[0]))


def figures(path: str | Path, device: str | None = None, step: int | None = None) -> dict[str, go.Figure]:
    """Every figure of a saved run or `data/<experiment>` (a variant's prefixed `name.`), drawn now from its
    models (their snapshots at training `step` if given) and training log."""
    exp, cfg, models = load_models(path, device, step)
    return draw_figures(exp, cfg, models, Run(path))


def saved_figures(run_dir: str | Path) -> dict[str, go.Figure]:
    """The figures a finished run wrote to its figures/ folder."""
    return {p.stem: pio.from_json(p.read_text()) for p in sorted(Path(run_dir).glob("figures/*.json"))}


def make_result(exp: Experiment, cfg: ExperimentConfig, metrics: dict, mode: str, seconds: float,
                command: str) -> dict:
    criteria = exp.check(metrics, mode)
    return {
        "experiment": exp.name, "mode": mode, "config": cfg.model_dump(mode="json"), "metrics": metrics,
        "criteria": criteria, "passed": verdict(criteria), "seconds": round(seconds, 2),
        "version": workbench.__version__, "git_sha": git_sha(), "command": command,
    }


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def with_device(cfg: ExperimentConfig, device: str | None) -> ExperimentConfig:
    return cfg if device is None else apply_overrides(cfg, {"model.device": device}, label="device:")


def open_saved(path: str | Path, device: str | None = None) -> tuple[Run, Experiment, ExperimentConfig]:
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a run directory or data/<experiment> folder")
    saved = Run(path)
    header = saved.header
    exp = get(header.get("experiment", "?"))
    cfg = exp.Config.parse(header.get("config", {}), where=f"{path / 'config.json'}: config")
    return saved, exp, with_device(cfg, device)


def load(path: str | Path, variant: str | None = None, step: int | None = None,
         device: str | None = None) -> Loaded:
    """Load a run directory or `data/<experiment>` into a ready model (eval mode), built by its experiment:
    one `variant` of a multi-model run, and the snapshot at training `step` if given (see `snapshots`)."""
    return load_opened(*open_saved(path, device), variant=variant, step=step)


def load_opened(saved: Run, exp: Experiment, cfg: ExperimentConfig, variant: str | None = None,
                step: int | None = None) -> Loaded:
    if cfg.variants and variant is None:
        raise ConfigError(f"{saved.path}: this run trains variants {', '.join(cfg.variants)}; pick one with "
                          "variant=NAME")
    if variant is not None:
        cfg, saved = cfg.variant(variant), saved.variant(variant)
    if step is not None:
        snaps = saved.snapshots()
        if step not in snaps:
            raise ConfigError(f"{saved.path}: no snapshot at step {step}; snapshots: {list(snaps) or 'none'}")
        weights, state = snaps[step], load_weights(snaps[step])
    elif (saved.path / "model.safetensors").exists() or not saved.checkpoints():
        weights = saved.path / "model.safetensors"
        state = load_weights(weights)
    else:  # unfinished run: the model part of its latest checkpoint
        weights = saved.checkpoints()[-1]
        step, state = int(checkpoint_info(weights)["step"]), checkpoint_model_state(weights)
    return Loaded(exp, cfg, model_from(exp, cfg, state, weights, step))


def model_from(exp: Experiment, cfg: ExperimentConfig, state: dict, weights: Path, step: int | None = None
               ) -> nn.Module:
    """The experiment's architecture at `step` with `state` (read from `weights`) loaded, in eval mode."""
    model = exp.build_trained(cfg, step)
    load_state(model, state, weights)
    return model.eval()


def snapshots(path: str | Path, variant: str | None = None) -> list[int]:
    """The training steps at which a run (or one of its variants) kept a model snapshot."""
    saved = Run(path)
    return list((saved.variant(variant) if variant else saved).snapshots())


def dense_windows(path: str | Path, variant: str | None = None) -> list[tuple[int, int]]:
    """The (start, end) steps of the intervals where a run kept dense snapshots (its metrics moved most)."""
    saved = Run(path)
    return [(w["start"], w["end"]) for w in saved_windows((saved.variant(variant) if variant else saved).path
                                                          / "snapshots")]


def saved_windows(folder: Path) -> list[dict]:
    """The dense windows a snapshots folder recorded (`train.DenseWindows`: start, end, steps); none if none."""
    state = folder / "dense.json"
    return json.loads(state.read_text())["windows"] if state.exists() else []


def snapshot_models(path: str | Path, variant: str | None = None, steps: list[int] | None = None,
                    device: str | None = None) -> Iterator[tuple[int, nn.Module]]:
    """(step, model) for each snapshot of a run (or of `steps`), loaded one at a time, oldest first."""
    saved, exp, cfg = open_saved(path, device)
    for step in steps if steps is not None else snapshots(path, variant):
        yield step, load_opened(saved, exp, cfg, variant=variant, step=step).model


def load_models(path: str | Path, device: str | None = None, step: int | None = None
                ) -> tuple[Experiment, ExperimentConfig, Models]:
    """Every model of a saved run (their snapshots at `step` if given): one, or a dict by variant (what
    `evaluate` needs)."""
    saved, exp, cfg = open_saved(path, device)
    if not cfg.variants:
        return exp, cfg, load_opened(saved, exp, cfg, step=step).model
    return exp, cfg, {v: load_opened(saved, exp, cfg, variant=v, step=step).model for v in cfg.variants}


def experiment_path(name: str, mode: str = "shipped", **run_kwargs) -> Path:
    """`mode="shipped"`: data/<name>; "smoke"/"quick"/"full": train that preset now and return its run."""
    if mode == "shipped":
        shipped = data_root() / name
        if not (shipped / "config.json").exists():
            raise ConfigError(f"{shipped}: no shipped model; run `workbench run {name} --quick --ship`")
        return shipped
    return Path(run(name, mode=mode, **run_kwargs)["run_dir"])


def load_experiment(name: str, mode: str = "shipped", variant: str | None = None, **run_kwargs) -> Loaded:
    """The shipped model of experiment `name` (or one trained now in `mode`), one variant of it if it has variants."""
    return load(experiment_path(name, mode, **run_kwargs), variant=variant)


def evaluate_saved(path: str | Path, device: str | None = None) -> dict:
    """Re-evaluate a saved model (every variant) against its criteria. Reads only; writes nothing."""
    start = time.perf_counter()
    exp, cfg, models = load_models(path, device)
    mode = Run(path).header.get("mode", "?")
    return make_result(exp, cfg, evaluate(exp, cfg, models, Run(path)), mode, time.perf_counter() - start,
                       f"workbench eval {path}")


def ship(run_dir: str | Path, data_root_: str | Path | None = None, allow_failed: bool = False) -> Path:
    """Copy a finished run's models, snapshots, metrics, config and result into data/<experiment>/,
    replacing what was there in one step (`replace_dir`). Refuses unfinished runs, and failed ones unless
    `allow_failed`."""
    run_ = Run(run_dir)
    result = run_.result()
    if result is None:
        raise ConfigError(f"{run_.path}: run has not finished (no result.json); finish it with "
                          f"`workbench resume {run_.path}` before shipping")
    if not result.get("passed") and not allow_failed:
        failed = ", ".join(c["name"] for c in result.get("criteria", []) if not c.get("passed"))
        raise ConfigError(f"{run_.path}: run did not pass ({failed}); ship it anyway with --allow-failed")
    root = Path(data_root_ or data_root())
    root.mkdir(parents=True, exist_ok=True)
    target = root / run_.header["experiment"]
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".ship-{target.name}-"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; shipped data is for everyone
        variants = run_.variants()
        exp = get(run_.header["experiment"])
        keep = exp.shipped_snapshots and max(4, exp.shipped_snapshots // max(1, len(variants)))
        copy_entries(run_.path, staging, SHIPPED + exp.artifacts, keep)
        for name in variants:
            copy_entries(run_.variant(name).path, staging / "variants" / name, SHIPPED_PER_VARIANT + exp.artifacts,
                         keep)
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def copy_entries(source: Path, dest: Path, entries: tuple[str, ...], snapshots: int) -> None:
    """Copy a run's entries; snapshots are thinned to `snapshots` (0: none) and stored in float16 (the final model
    stays float32, so re-evaluating shipped data reproduces the result exactly; a replayed snapshot differs by fp16
    rounding)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        if entry == "snapshots" and not snapshots:
            continue
        if entry == "snapshots":
            snaps = Run(source).snapshots()
            (dest / entry).mkdir()
            if (source / entry / "dense.json").exists():
                shutil.copyfile(source / entry / "dense.json", dest / entry / "dense.json")
            for step in kept_snapshots(source, snapshots):
                state = {k: v.half() if v.is_floating_point() else v for k, v in load_weights(snaps[step]).items()}
                save_weights(state, dest / entry / snaps[step].name, read_metadata(snaps[step]))
        elif (source / entry).exists():
            shutil.copyfile(source / entry, dest / entry)


def kept_snapshots(run_path: str | Path, keep: int) -> list[int]:
    """The snapshot steps a run keeps when shipped: its dense windows whole (with their ends), the rest thinned to
    `keep`."""
    snaps = list(Run(run_path).snapshots())
    dense = dense_steps(Path(run_path) / "snapshots")
    return sorted(set(thin([s for s in snaps if s not in dense], keep)) | (dense & set(snaps)))


def dense_steps(folder: Path) -> set[int]:
    """The steps of a run's dense snapshot windows (see `train.DenseWindows`), ends included."""
    return {s for w in saved_windows(folder) for s in (w["start"], *w["steps"], w["end"])}


def thin(steps: list[int], keep: int) -> list[int]:
    """`keep` of the sorted `steps`: the first and the last, and between them the steps nearest to a geometric
    series from last/30 up: the last one and a half decades of log time, where phenomena show."""
    if len(steps) <= keep:
        return steps
    first, last = steps[0], steps[-1]
    low = max(1.0, last / 30)
    kept = {first, last}
    for i in range(keep - 2):  # the interior: one step nearest each target low · (last/low)^(i/(keep−2))
        target = low * (last / low) ** (i / (keep - 2))
        kept.add(min((s for s in steps if s not in kept), key=lambda s: abs(math.log(max(s, 1) / target))))
    return sorted(kept)


def criteria_rows(exp: Experiment, result: dict, variant: str | None = None) -> list[dict]:
    """A result's criteria as rows to show: the criterion, its metric, what it needs in the experiment's words
    (with the bound it came to when it compares two metrics), the measured value and the verdict. With `variant`,
    only the criteria that read that variant's metrics or no variant's."""
    needs = {c.name: c.needs for c in exp.criteria}
    variants = set(result.get("config", {}).get("variants", {}))
    rows = []
    for c in result["criteria"]:
        reads = {m.split(".", 1)[0] for m in (c["metric"], c.get("versus")) if m and "." in m} & variants
        if variant is not None and reads and variant not in reads:
            continue
        need = needs.get(c["name"], f"{c['op']} {c['threshold']}")
        if c.get("versus") and c.get("bound") is not None:
            need += f" = {c['bound']:.4g}"
        rows.append({"criterion": c["name"], "metric": c["metric"], "needs": need, "measured": c["value"],
                     "passed": c["passed"], "judged": c.get("counts", True)})
    return rows


def catalog(data_root_: str | Path | None = None) -> list[dict]:
    """One row per registered experiment: its criteria, with the shipped result's values and verdict."""
    rows = []
    for name in names():
        exp, shipped = get(name), Path(data_root_ or data_root()) / name / "result.json"
        status, measured = "not shipped", {}
        if shipped.exists():
            try:
                result = read_json(shipped, "result")
                status = "pass" if result["passed"] else "FAIL"
                measured = {c["name"]: c for c in result["criteria"]}
            except (ConfigError, KeyError, TypeError) as e:
                status = f"unreadable: {e}"
        criteria = [{"criterion": c.name, "metric": c.metric, "needs": c.needs,
                     "shipped value": measured.get(c.name, {}).get("value"),
                     "passed": measured.get(c.name, {}).get("passed")} for c in exp.criteria]
        rows.append({"experiment": name, "title": exp.title, "paper": exp.paper, "claim": exp.claim,
                     "shipped": status, "criteria": criteria})
    return rows


def saved_models(data_root_: str | Path | None = None, runs_root_: str | Path | None = None,
                 experiments: list[str] | None = None) -> dict[str, ModelRef]:
    """Loadable models by label — shipped `data/<exp>` first, then runs with weights — one per variant;
    only those of `experiments` if given."""
    found = {}
    for config in sorted(Path(data_root_ or data_root()).glob("*/config.json")):
        found.update(model_refs(config.parent, f"shipped: {config.parent.name}"))
    for info in list_runs(runs_root_ or runs_root()):
        if info.status != "corrupt":
            found.update(model_refs(info.path, run_label(info)))
    return {k: ref for k, ref in found.items() if experiments is None or ref.experiment in experiments}


def run_label(info: RunInfo) -> str:
    """How pages name a run (its variants add ` / NAME`)."""
    return f"run: {info.path.name} ({info.status})"


def model_refs(path: Path, label: str) -> dict[str, ModelRef]:
    """The loadable models in one run or data/ folder: the model, or each variant that has weights."""
    def loadable(p: Path) -> bool:
        return (p / "model.safetensors").exists() or bool(Run(p).checkpoints())
    try:
        saved = Run(path)
        variants, experiment = saved.variants(), saved.header.get("experiment")
    except ConfigError:
        return {}
    if not variants:
        return {label: ModelRef(path, None, experiment)} if loadable(path) else {}
    return {f"{label} / {v}": ModelRef(path, v, experiment) for v in variants if loadable(path / "variants" / v)}
