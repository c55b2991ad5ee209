"""The trainer: AdamW or SGD with momentum, warmup + cosine, clipping, tqdm, eval callbacks, checkpoints,
snapshots, phases, resume, NaN guard.

Determinism: the model init, the data generator and torch's RNG all derive from one seed; data is
sampled on the CPU (the same batches on every device) and tasks see the step (curricula). A checkpoint
stores the model, the optimizer state keyed by parameter *name* (so inserting modules in a later phase
cannot shift it) and every RNG state, so `resume` continues bit-identically.

Phases: training may run in phases (pretrain, then fine-tune with new modules inserted); each phase has
its own schedule and optimizer, a `setup(model)` run when it starts, optionally its own task, and may train
only some parameters (`TrainConfig.trainable`). A checkpoint in phase p is restored into a model that has had
the setups of phases 1..p applied.

Snapshots: model-only safetensors at roughly log-spaced steps (`snapshots/step-N.safetensors`), kept
apart from the pruned resume checkpoints, so figures can be replayed over training. Log-spaced steps are sparse
where a phase change happens (induction heads form within ~100 steps), so with `dense_windows` the trainer also
snapshots every evaluation and, inside the evaluation intervals whose metrics moved most, every eval_every/10
steps (`DenseWindows`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench.config import Config, ConfigError
from workbench.device import device_of
from workbench.models.io import load_state, load_weights, parameters_named, read_metadata, save_weights
from workbench.runs import Run, step_files
from workbench.tasks.base import Batch, LossName, Task, check_objective

CHECKPOINT_FORMAT = "workbench-checkpoint-2"  # 2: optimizer state keyed by parameter name


class TrainConfig(Config):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr · min_lr_ratio")
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw (betas); sgd with momentum, which keeps a gradient's scale: a weight whose "
        "gradient is small moves slowly, where Adam's per-weight normalisation moves it at full speed")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd's momentum (adamw uses betas)")
    grad_clip: float | None = Field(1.0, gt=0)
    trainable: tuple[str, ...] = Field((), description="parameter-name prefixes this phase trains (e.g. 'blocks.1.'); "
                                       "the others keep their values through it. Empty: every parameter")
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(0, ge=0, description="0: evaluate only at the end")
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    snapshots: int = Field(30, ge=0, description="model-only snapshots at log-spaced steps (0: none)")
    dense_windows: int = Field(0, ge=0, description="eval intervals whose metrics moved most that keep a snapshot "
                               "every eval_every/10 steps; every eval step is snapshotted too (0: none)")


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); earlier checkpoints are intact."""


@dataclass
class Progress:
    step: int
    steps: int
    loss: float
    lr: float
    metrics: dict = field(default_factory=dict)


@dataclass
class Phase:
    """A stretch of training with its own schedule; `setup(model)` runs once when the phase starts
    (e.g. inserting codebooks) and again, before loading, when a run resumes inside or after it. `task`, when
    given, is what the phase trains on instead of the trainer's task (a curriculum)."""

    name: str
    train: TrainConfig
    setup: Callable[[nn.Module], None] | None = None
    task: Task | None = None


def apply_phase_setups(model: nn.Module, phases: list[Phase], step: int | None = None) -> None:
    """Give `model` the architecture it has at `step` (None: the end): run the setups of the phases that
    started before it. A phase starting exactly at `step` has not run its setup yet."""
    start = 0
    for phase in phases:
        if phase.setup is not None and (step is None or start < step):
            phase.setup(model)
        start += phase.train.steps


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine to cfg.lr · min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def snapshot_steps(total: int, count: int, extra: tuple[int, ...] = ()) -> list[int]:
    """About `count` log-spaced steps in [0, total] (0 and total included), plus `extra` (phase starts)."""
    if count <= 0:
        return []
    ratio = total ** (1 / max(1, count - 2))
    steps = {0, total, *extra} | {min(total, round(ratio**i)) for i in range(count - 1)}
    return sorted(steps)


class DenseWindows:
    """Snapshots dense where training moves fast. Between two evaluations the trainer writes a snapshot every
    `every` steps into snapshots/pending/. At each evaluation the interval just ended is scored by how far its
    metrics moved: the largest |Δ| over the numeric metrics, each divided by that metric's range over the
    evaluations so far. The `keep` best-scoring intervals keep their snapshots (moved into snapshots/); the
    others are deleted. The evaluations and kept intervals live in snapshots/dense.json, so a resumed run
    decides as an uninterrupted one would."""

    def __init__(self, folder: Path, keep: int, every: int):
        self.folder, self.keep, self.every = folder, keep, every
        self.pending, self.state_file = folder / "pending", folder / "dense.json"
        saved = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.evals: dict[int, dict[str, float]] = {int(k): v for k, v in saved.get("evals", {}).items()}
        self.windows: list[dict] = saved.get("windows", [])

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    def score(self, window: dict) -> float:
        before, after = self.evals[window["start"]], self.evals[window["end"]]
        moved = 0.0
        for key in before.keys() & after.keys():
            seen = [e[key] for e in self.evals.values() if key in e]
            spread = max(seen) - min(seen)
            if spread > 0:
                moved = max(moved, abs(after[key] - before[key]) / spread)
        return moved

    def after_eval(self, step: int, metrics: dict) -> None:
        """Score the interval ending at `step`; keep it or drop its pending snapshots."""
        self.evals[step] = {k: float(v) for k, v in metrics.items()
                            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        earlier = [s for s in self.evals if s < step]
        pending = step_files(self.pending)
        if earlier:
            window = {"start": max(earlier), "end": step, "steps": [s for s in pending if max(earlier) < s < step]}
            self.windows.append(window)
            for s in window["steps"]:
                pending[s].replace(self.folder / pending[s].name)
            self.windows.sort(key=self.score, reverse=True)
            for dropped in self.windows[self.keep:]:
                self._delete(dropped["steps"])
            self.windows = sorted(self.windows[: self.keep], key=lambda w: w["start"])
        for path in step_files(self.pending).values():
            path.unlink()
        self._save()

    def rewind(self, step: int) -> None:
        """Forget what came after `step` (a resumed run redoes it)."""
        self.evals = {s: e for s, e in self.evals.items() if s <= step}
        self.pending.mkdir(parents=True, exist_ok=True)
        for window in [w for w in self.windows if w["end"] > step]:
            # its eval comes again; the snapshots up to `step` go back to pending, as the resumed run will not
            # write them again
            for s in window["steps"]:
                if s <= step:
                    (self.folder / f"step-{s}.safetensors").replace(self.pending / f"step-{s}.safetensors")
            self._delete([s for s in window["steps"] if s > step])
            self.windows.remove(window)
        for s, path in step_files(self.pending).items():
            if s > step:
                path.unlink()
        self._save()

    def _delete(self, steps: list[int]) -> None:
        for s in steps:
            (self.folder / f"step-{s}.safetensors").unlink(missing_ok=True)

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"every": self.every, "evals": self.evals, "windows": self.windows}
        self.state_file.write_text(json.dumps(state, indent=1))


# --- losses: per position, masked by the caller; a task names which one it trains with ---
def _cross_entropy(output: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(output.transpose(1, 2), targets, reduction="none")


def _mse(output: Tensor, targets: Tensor) -> Tensor:
    output = output.squeeze(-1) if targets.dim() == 2 else output
    squared = (output - targets) ** 2
    return squared if squared.dim() == 2 else squared.mean(-1)


def _binary(output: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(output.squeeze(-1), targets.float(), reduction="none")


LOSSES: dict[str, Callable[[Tensor, Tensor], Float[Tensor, "batch pos"]]] = {
    "cross_entropy": _cross_entropy, "mse": _mse, "binary": _binary,
}


def position_losses(model: nn.Module, batch: Batch, loss: LossName = "cross_entropy") -> Float[Tensor, "batch pos"]:
    """The task's loss at every position (masked positions included; mask them yourself)."""
    output = model(batch.inputs, attention_mask=batch.attention_mask, positions=batch.positions)
    return LOSSES[loss](output, batch.targets)


def masked_mean(values: Float[Tensor, "batch pos"], mask: Tensor) -> Float[Tensor, ""]:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def task_loss(model: nn.Module, batch: Batch, loss: LossName = "cross_entropy") -> Float[Tensor, ""]:
    return masked_mean(position_losses(model, batch, loss), batch.loss_mask)


# A loss function returns the scalar to minimise, or named components with the total under "loss"
# (e.g. {"loss": ce + λ·mse, "ce": ce, "mse": mse}); every component is logged.
LossFn = Callable[[nn.Module, Batch], Tensor | dict[str, Tensor]]


def model_part(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's state dict inside a trainer checkpoint (which also holds optimizer and RNG state)."""
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def checkpoint_model_state(path: str | Path) -> dict[str, Tensor]:
    return model_part(load_weights(path))


def checkpoint_info(path: str | Path) -> dict:
    """A checkpoint's metadata ({"format", "step", "phase"}), refusing other formats with a clear error."""
    raw = read_metadata(path).get("workbench")
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: checkpoint format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}; "
                          "this workbench cannot resume from it (re-run the experiment)")
    return meta


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        task: Task,
        cfg: TrainConfig | list[Phase],
        seed: int,
        run: Run | None = None,
        loss_fn: LossFn | None = None,
        evaluate: Callable[[nn.Module], dict] | None = None,
        callback: Callable[[Progress], None] | None = None,
        progress_bar: bool = True,
    ):
        self.model, self.task, self.run = model, task, run
        self.phases = [Phase("train", cfg)] if isinstance(cfg, TrainConfig) else list(cfg)
        if hasattr(model, "cfg"):
            for each in [task, *(p.task for p in self.phases if p.task is not None)]:
                check_objective(each, model.cfg)
        self.starts = [sum(p.train.steps for p in self.phases[:i]) for i in range(len(self.phases))]
        self.total = sum(p.train.steps for p in self.phases)
        self.loss_fn = loss_fn or (lambda m, b: task_loss(m, b, task.loss))
        self.evaluate, self.callback, self.progress_bar = evaluate, callback, progress_bar
        first = self.phases[0].train
        self.snapshot_at = set(snapshot_steps(self.total, first.snapshots, tuple(self.starts)))
        self.dense = None
        if first.dense_windows and first.eval_every and evaluate is not None and run is not None:
            self.snapshot_at |= set(range(0, self.total, first.eval_every)) | {self.total}
            self.dense = DenseWindows(run.path / "snapshots", first.dense_windows, max(1, first.eval_every // 10))
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.step, self.phase = 0, -1  # no phase entered yet
        self.optimizer: torch.optim.Optimizer | None = None
        self._frozen: list[nn.Parameter] = []  # frozen by the current phase's `trainable`

    @property
    def cfg(self) -> TrainConfig:
        return self.phases[max(self.phase, 0)].train

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        if self.cfg.optimizer == "sgd":  # weight decay coupled (L2), as torch's SGD does
            return torch.optim.SGD(groups, lr=self.cfg.lr, momentum=self.cfg.momentum)
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas)

    def enter_phase(self, index: int, setup: bool = True) -> None:
        """Start phase `index`: its setup (unless restoring), then a fresh optimizer for its parameters."""
        self.phase = index
        hook = self.phases[index].setup
        if setup and hook is not None:
            hook(self.model)
        self.train_only(self.phases[index].train.trainable, where=f"phase {self.phases[index].name!r}")
        # a weight this phase freezes keeps its last gradient otherwise, and clipping would count it
        self.model.zero_grad(set_to_none=True)
        self.optimizer = self.make_optimizer()

    def train_only(self, prefixes: tuple[str, ...], where: str = "train") -> None:
        """Freeze every parameter outside `prefixes` (empty: none) for the phase; those an earlier phase froze
        this way learn again. A setup's own freezing (`requires_grad_`) is left alone."""
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        if not prefixes:
            return
        trained = parameters_named(self.model, prefixes, f"{where}: trainable")
        self._frozen = [p for name, p in self.model.named_parameters() if p.requires_grad and name not in trained]
        for p in self._frozen:
            p.requires_grad_(False)

    def fit(self, resume: bool = True) -> nn.Module:
        """Train to the end; with `resume`, continue from the run's latest checkpoint if it has one."""
        if resume and self.run is not None and self.run.checkpoints() and self.step == 0:
            self.restore(self.run.checkpoints()[-1])
        elif self.step == 0 and self.run is not None:  # killed before its first checkpoint: start the log over
            self.run.truncate_metrics(0)
            if self.dense is not None:
                self.dense.rewind(0)
        model = self.model
        model.train()
        bar = tqdm(total=self.total, initial=self.step, desc="train", disable=not self.progress_bar, leave=False)
        try:
            self._loop(bar)
        finally:
            bar.close()  # also on errors, so the error message gets a clean line
            self.train_only(())  # the trained model's gradients flow as a loaded one's do (LLC, attribution)
        model.eval()
        return model

    def _loop(self, bar: tqdm) -> None:
        model = self.model
        device = device_of(model)
        while self.step < self.total:
            for index, start in enumerate(self.starts):
                if self.step == start and self.phase < index:
                    self.enter_phase(index)
            if self.step == 0:
                self.save_snapshot()
            cfg = self.cfg
            lr = lr_at(self.step - self.starts[self.phase], cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            task = self.phases[self.phase].task or self.task
            batch = task.sample(cfg.batch_size, self.generator, step=self.step).to(device)
            losses = self.loss_fn(model, batch)
            losses = losses if isinstance(losses, dict) else {"loss": losses}
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(self._divergence_message(loss.item()))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # frozen weights hold no gradient
            self.optimizer.step()
            self.step += 1
            self._after_step({k: v.item() for k, v in losses.items()}, lr, bar)

    def _after_step(self, losses: dict[str, float], lr: float, bar: tqdm) -> None:
        cfg, step = self.cfg, self.step
        metrics = {}
        if self.evaluate and cfg.eval_every and (step % cfg.eval_every == 0 or step == self.total):
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluate(self.model)
            self.model.train()
        logging = step % cfg.log_every == 0 or metrics or step == self.total
        if logging and self.run:
            phase = {"phase": self.phases[self.phase].name} if len(self.phases) > 1 else {}
            self.run.log({"step": step, **losses, "lr": lr, **phase, **metrics})
        if self.run and step in self.snapshot_at:
            self.save_snapshot()
        elif self.dense and self.dense.wants(step):
            self._write(self.model.state_dict(), self.dense.pending / f"step-{step}.safetensors", self._snapshot_meta())
        if self.dense and metrics:
            self.dense.after_eval(step, metrics)
        if self.run and (step % cfg.checkpoint_every == 0 or step == self.total):
            self.save_checkpoint()
        bar.update(1)
        if logging:
            bar.set_postfix(loss=f"{losses['loss']:.3f}")
            if self.callback:  # last: a callback may stop training (the dashboard, tests)
                self.callback(Progress(step, self.total, losses["loss"], lr, metrics))

    def _divergence_message(self, value: float) -> str:
        saved = self.run.checkpoints() if self.run else []
        kept = f"last good checkpoint kept: {saved[-1]}" if saved else "no checkpoint was written yet"
        return (f"loss became {value} at step {self.step + 1}; training stopped, {kept}. "
                f"Try a lower train.lr (now {self.cfg.lr}) or train.grad_clip")

    # --- snapshots: model only, log-spaced (and dense windows), never pruned ---
    def save_snapshot(self) -> None:
        if self.run is None or self.step not in self.snapshot_at:
            return
        path = self.run.path / "snapshots" / f"step-{self.step}.safetensors"
        self._write(self.model.state_dict(), path, self._snapshot_meta())

    def _snapshot_meta(self) -> dict[str, str]:
        return {"step": str(self.step), "phase": self.phases[max(self.phase, 0)].name}

    # --- checkpoints: model + optimizer (by parameter name) + RNG in one safetensors file ---
    def save_checkpoint(self) -> Path:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for name, p in self.model.named_parameters():
            for key, value in self.optimizer.state.get(p, {}).items():
                tensors[f"optim.{name}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.generator.get_state()
        if device_of(self.model).type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device_of(self.model))
        meta = {"format": CHECKPOINT_FORMAT, "step": self.step, "phase": self.phases[self.phase].name}
        path = self.run.path / "checkpoints" / f"step-{self.step}.safetensors"
        self._write(tensors, path, {"workbench": json.dumps(meta)})
        for old in self.run.checkpoints()[: -self.cfg.keep_checkpoints]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def _write(self, tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
        try:
            save_weights(tensors, path, metadata=metadata)
        except OSError as e:
            last = self.run.checkpoints()
            kept = f"last good checkpoint kept: {last[-1]}" if last else "no earlier checkpoint"
            raise CheckpointError(f"{path}: checkpoint write failed ({e.strerror or e}); {kept}") from None

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint: re-apply the setups of the phases it is past, then load model,
        optimizer (by name, onto the model's device) and RNG states; metrics logged after it are dropped."""
        step = int(checkpoint_info(path)["step"])
        tensors = load_weights(path)
        index = max(i for i, start in enumerate(self.starts) if start <= step)
        if step == self.starts[index] and index > 0:
            index -= 1  # the next phase starts in the loop, with its setup run from the restored RNG state
        apply_phase_setups(self.model, self.phases, step)
        load_state(self.model, model_part(tensors), path)
        self.enter_phase(index, setup=False)
        params = dict(self.model.named_parameters())
        for key, value in tensors.items():
            if key.startswith("optim."):
                name, state_key = key.removeprefix("optim.").rsplit(".", 1)
                if name not in params:
                    raise ConfigError(f"{path}: optimizer state for unknown parameter {name!r}")
                target = value if state_key == "step" else value.to(params[name].device)
                self.optimizer.state[params[name]][state_key] = target
        torch.set_rng_state(tensors["rng.torch"])
        self.generator.set_state(tensors["rng.data"])
        if "rng.cuda" in tensors and device_of(self.model).type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device_of(self.model))
        self.step = step
        if self.run is not None:
            self.run.truncate_metrics(step)
        if self.dense is not None:
            self.dense.rewind(step)
