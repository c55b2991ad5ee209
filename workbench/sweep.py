"""`workbench sweep`: one experiment over a grid of `--set` overrides, runs in parallel with Ray.

    workbench sweep induction --smoke --grid train.lr=1e-3,3e-3 --grid model.n_heads=2,4
    workbench sweep scaling --quick            # each of the experiment's variants on its own worker

Every combination is validated before anything runs. Locally Ray starts a loopback-only cluster with
one CPU per run; `--address host:port` joins an existing cluster, after a TCP check with a timeout so
an unreachable address fails fast with a message instead of Ray's long retry loop.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

import plotly.io as pio

from workbench.config import ConfigError, flatten
from workbench.experiments import get
from workbench.experiments.base import prefixed, verdict
from workbench.runs import atomic_write, runs_root, write_json

CONNECT_TIMEOUT_S = 5.0


def parse_grid(pairs: list[str]) -> dict[str, list[str]]:
    """`["train.lr=1e-3,3e-3"]` → `{"train.lr": ["1e-3", "3e-3"]}`."""
    grid = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not options:
            raise ConfigError(f"--grid {pair!r}: expected key=v1,v2,…, e.g. --grid train.lr=1e-3,3e-3")
        grid[key.strip()] = options
    if not grid:
        raise ConfigError("--grid: give at least one key=v1,v2,… to sweep over")
    return grid


def combinations(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected host:port of a Ray head node, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(
            f"--address {address}: no Ray cluster reachable ({reason}, waited up to {timeout:.0f} s); "
            "start one with `ray start --head` or leave out --address to run locally"
        ) from None


def _run_one(name: str, mode: str, overrides: dict, seed: int | None, out: str) -> dict:
    import torch

    from workbench.experiments.runner import run

    torch.set_num_threads(1)  # Ray gives each run one CPU; more threads would oversubscribe
    result = run(name, mode=mode, overrides=overrides, seed=seed, out=out, progress_bar=False,
                 command=f"workbench sweep {name} --{mode} ({overrides})")
    return {k: result[k] for k in ("run_dir", "passed", "metrics", "seconds", "config")}


def sweep_points(name: str, mode: str, grid: dict[str, list[str]], seed: int | None = None
                 ) -> list[tuple[str | None, dict]]:
    """(variant, overrides) per run, all validated before anything runs. The key `variant` (or no grid at all on
    an experiment with variants) makes each of the experiment's variants one point, trained alone; other keys
    multiply."""
    exp, grid = get(name), dict(grid)
    base = exp.config(mode, seed=seed)
    chosen = grid.pop("variant", None)
    if chosen is None and not grid:
        if not base.variants:
            raise ConfigError(f"{name} has no variants to sweep; give --grid key=v1,v2,…")
        chosen = list(base.variants)
    if chosen:
        unknown = [v for v in chosen if v not in base.variants]
        if unknown:
            raise ConfigError(f"--grid variant: {', '.join(unknown)} unknown; {name} --{mode} has: "
                              f"{', '.join(base.variants) or 'no variants'}")
        exp.config(mode, {"variants": {v: base.variants[v] for v in chosen}}, seed)  # the set must make sense
    points = [(v, {**(flatten(base.variants[v]) if v else {}), **c, "variants": {}}) for v in chosen or [None]
              for c in combinations(grid)]
    for _, overrides in points:
        exp.config(mode, overrides, seed)
    return points


def sweep(name: str, mode: str, grid: dict[str, list[str]] | None = None, out: str | Path | None = None,
          address: str | None = None, seed: int | None = None) -> dict:
    """Run every point of `grid` (see `sweep_points`); returns (and writes next to the runs) a summary. A sweep
    over the experiment's variants alone also reports the metrics computed across them and the criteria."""
    exp, out = get(name), Path(out or runs_root())
    points = sweep_points(name, mode, grid or {}, seed)
    if address:
        check_reachable(address)
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local cluster on 127.0.0.1 only
    try:
        import ray
    except ImportError:
        raise ConfigError("sweep needs Ray: pip install -e '.[sweep]'") from None
    start = time.perf_counter()
    ray.init(address=address, num_cpus=None if address else os.cpu_count(), include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
    try:
        task = ray.remote(num_cpus=1)(_run_one)
        runs = ray.get([task.remote(name, mode, overrides, seed, str(out)) for _, overrides in points])
    finally:
        ray.shutdown()
    runs = [{"variant": variant, **r} for (variant, _), r in zip(points, runs, strict=True)]
    stem = out / f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    combined = exp.combine_sweep(runs)
    figures = {key: f"{stem}.{key}.json" for key in combined}
    for key, fig in combined.items():
        atomic_write(figures[key], pio.to_json(fig))
    summary = {"experiment": name, "mode": mode, "grid": grid or {}, "address": address or "local",
               "seconds": round(time.perf_counter() - start, 2), "figures": figures,
               "runs": [{"overrides": {k: v for k, v in overrides.items() if k != "variants"}, **r}
                        for (_, overrides), r in zip(points, runs, strict=True)]}
    variants = [r["variant"] for r in runs]
    if all(variants) and len(set(variants)) == len(runs):  # one run per variant: the experiment, distributed
        metrics = prefixed({r["variant"]: r["metrics"] for r in runs})
        metrics |= exp.combine_metrics(metrics)
        summary |= {"metrics": metrics, "criteria": exp.check(metrics, mode)}
        summary["passed"] = verdict(summary["criteria"])
    write_json(f"{stem}.json", summary)
    return summary
