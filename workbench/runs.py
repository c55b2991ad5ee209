"""Run registry: one directory per run, written atomically, guarded by a lock.

    runs/<experiment>-<YYYYmmdd-HHMMSS>-<hash>/
        config.json      {"schema_version", "experiment", "mode", "command", "created", "config"}
        metrics.jsonl    one JSON object per logged step
        checkpoints/     step-N.safetensors (model + optimizer + RNG; metadata JSON), pruned
        snapshots/       step-N.safetensors (model only, log-spaced steps), kept
        model.safetensors  the trained model, written when training ends
        variants/<name>/ for experiments that train several models: the four entries above, per variant
        result.json      written last: its presence means the run finished
        figures/         plotly figures as JSON
        run.lock         held (flock) by the process writing the run

Where runs and shipped data live is explicit, never derived from where the package is installed:
`$WORKBENCH_HOME` (the CLI's `--root` sets it), else the current project — the nearest ancestor of the
working directory holding `pyproject.toml` or `.git` — else the working directory. `$WORKBENCH_RUNS` and
`$WORKBENCH_DATA` override the two folders one by one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import SCHEMA_VERSION, ConfigError, check_schema_version, read_json

STEP_FILE = re.compile(r"step-(\d+)\.safetensors")


def home() -> Path:
    """The workbench home: $WORKBENCH_HOME, else the current project, else the working directory."""
    if os.environ.get("WORKBENCH_HOME"):
        return Path(os.environ["WORKBENCH_HOME"]).resolve()
    cwd = Path.cwd().resolve()
    return next((d for d in (cwd, *cwd.parents) if (d / "pyproject.toml").is_file() or (d / ".git").exists()), cwd)


def runs_root() -> Path:
    return Path(os.environ.get("WORKBENCH_RUNS") or home() / "runs")


def data_root() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA") or home() / "data")


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux `renameat2(RENAME_EXCHANGE)`, through libc: the standard library
    has no directory exchange); False where the OS or the file system offers none."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:  # not Linux, or glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put directory `new` at `target`, replacing any tree there, so a reader of `target` finds the old tree or the
    new one and never none: an atomic exchange where the OS has one, else two renames."""
    if target.exists() and exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # it now holds the old tree
        return
    old = target.with_name(f".old-{target.name}-{new.name}")
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def step_files(folder: Path) -> dict[int, Path]:
    """`step-N.safetensors` files in `folder` by step, sorted; other names (`step-x…`) are ignored."""
    found = {int(m.group(1)): p for p in folder.glob("step-*.safetensors") if (m := STEP_FILE.fullmatch(p.name))}
    return dict(sorted(found.items()))


class Run:
    """A run directory. Create with `Run.create`, reopen with `Run(path)`; `run.variant(name)` is the
    sub-run of one variant (its own metrics, checkpoints, snapshots and model; header and lock shared)."""

    def __init__(self, path: str | Path, parent: Run | None = None):
        self.path = Path(path)
        self.parent = parent
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, root: str | Path, experiment: str, config: dict, mode: str, command: str) -> Run:
        """Make the directory under a temp name and rename it: a run appears whole or not at all."""
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.mkdtemp(dir=root, prefix=".new-")
        except OSError as e:
            raise ConfigError(f"{root}: cannot create a run here ({e.strerror})") from None
        digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode() + secrets.token_bytes(8))
        name = f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{digest.hexdigest()[:6]}"
        tmp = Path(probe)
        (tmp / "checkpoints").mkdir()
        (tmp / "figures").mkdir()
        header = {"schema_version": SCHEMA_VERSION, "experiment": experiment, "mode": mode, "command": command,
                  "created": time.time()}
        write_json(tmp / "config.json", {**header, "config": config})
        final = root / name
        os.rename(tmp, final)
        run = cls(final)
        run.lock()
        return run

    # --- locking: a held lock means a live process is writing this run ---
    def lock(self) -> None:
        fd = os.open(self.path / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{self.path}: another process is writing this run") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_locked(self) -> bool:
        lock = self.path / "run.lock"
        if self._lock_fd is not None:
            return True
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # --- contents ---
    def variant(self, name: str) -> Run:
        return Run(self.path / "variants" / name, parent=self)

    def variants(self) -> list[str]:
        """Names of the variants this run holds (from its config), in training order; [] for a single model."""
        return list(self.header.get("config", {}).get("variants", {}) or {})

    @property
    def header(self) -> dict:
        if self.parent is not None:
            return self.parent.header
        data = read_json(self.path / "config.json", "run config")
        check_schema_version(data, self.path / "config.json")
        return data

    def log(self, row: dict) -> None:
        """Append one row with a single O_APPEND write: a kill lands before or after it, never inside."""
        self.path.mkdir(parents=True, exist_ok=True)  # a variant's folder appears with its first row
        fd = os.open(self.path / "metrics.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)

    def metrics(self) -> list[dict]:
        return read_metrics(self.path / "metrics.jsonl")

    def remove_stale_temp_files(self) -> None:
        """Temp files of writes that a kill interrupted (the renamed targets are intact)."""
        for tmp in self.path.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def truncate_metrics(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint we continue from."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= step]
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def checkpoints(self) -> list[Path]:
        return list(step_files(self.path / "checkpoints").values())

    def snapshots(self) -> dict[int, Path]:
        """Model-only snapshots by training step."""
        return step_files(self.path / "snapshots")

    def result(self) -> dict | None:
        path = self.path / "result.json"
        return read_json(path, "result") if path.exists() else None

    def status(self) -> str:
        if self.is_locked():
            return "running"
        if (self.path / "result.json").exists():
            return "done"
        return "interrupted" if self.resumable() else "failed"

    def resumable(self) -> bool:
        """Has it a checkpoint (its own or a variant's) to continue from?"""
        return bool(self.checkpoints()) or any(self.variant(v).checkpoints() for v in self.variants())


@dataclass
class RunInfo:
    path: Path
    experiment: str
    mode: str
    status: str
    passed: bool | None
    error: str | None = None
    variants: list[str] | None = None


def created(path: Path) -> float:
    """When a run was created: its header's time, else its config.json's (or folder's) modification time."""
    try:
        return float(json.loads((path / "config.json").read_text())["created"])
    except (OSError, ValueError, KeyError, TypeError):
        target = path / "config.json"
        return (target if target.exists() else path).stat().st_mtime


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Every run under `root` (default: runs_root()), newest first; a corrupt run is listed with its error."""
    root = Path(root or runs_root())
    if not root.is_dir():
        return []
    infos = []
    for path in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=created,
                       reverse=True):
        run = Run(path)
        try:
            header = run.header
            status = run.status()
            result = run.result() if status == "done" else None
            passed = result.get("passed") if result else None
            infos.append(RunInfo(path, header["experiment"], header.get("mode", "?"), status, passed,
                                 variants=run.variants()))
        except (ConfigError, KeyError, OSError, AttributeError, TypeError) as e:
            infos.append(RunInfo(path, "?", "?", "corrupt", None, str(e)))
    return infos
