"""The trainer: AdamW, warmup + cosine, clipping, tqdm, eval callbacks, checkpoints, resume, NaN guard.

Determinism: the model init, the data generator and torch's RNG all derive from one seed, and
a checkpoint stores the optimizer state and both RNG states, so `resume` continues bit-identically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench.config import Config
from workbench.models.io import load_state, load_weights, save_weights
from workbench.runs import Run, checkpoint_step
from workbench.tasks.base import Batch, Task

CHECKPOINT_FORMAT = "workbench-checkpoint-1"


class TrainConfig(Config):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr · min_lr_ratio")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(0, ge=0, description="0: evaluate only at the end")
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)


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


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine to cfg.lr · min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def token_losses(model: nn.Module, batch: Batch) -> Float[Tensor, "batch pos"]:
    """Cross-entropy at every position (masked positions included; mask them yourself)."""
    logits = model(batch.tokens)
    return F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")


def lm_loss(model: nn.Module, batch: Batch) -> Float[Tensor, ""]:
    losses = token_losses(model, batch)
    return (losses * batch.loss_mask).sum() / batch.loss_mask.sum().clamp(min=1)


def model_part(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's state dict inside a trainer checkpoint (which also holds optimizer and RNG state)."""
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def checkpoint_model_state(path: str | Path) -> dict[str, Tensor]:
    return model_part(load_weights(path))


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        task: Task,
        cfg: TrainConfig,
        seed: int,
        run: Run | None = None,
        loss_fn: Callable[[nn.Module, Batch], Tensor] = lm_loss,
        evaluate: Callable[[nn.Module], dict] | None = None,
        callback: Callable[[Progress], None] | None = None,
        progress_bar: bool = True,
    ):
        self.model, self.task, self.cfg, self.run = model, task, cfg, run
        self.loss_fn, self.evaluate, self.callback, self.progress_bar = loss_fn, evaluate, callback, progress_bar
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.step = 0

    def fit(self) -> nn.Module:
        cfg, model = self.cfg, self.model
        model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=not self.progress_bar, leave=False)
        try:
            self._loop(bar)
        finally:
            bar.close()  # also on errors, so the error message gets a clean line
        model.eval()
        return model

    def _loop(self, bar: tqdm) -> None:
        cfg, model = self.cfg, self.model
        while self.step < cfg.steps:
            lr = lr_at(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = self.loss_fn(model, self.task.sample(cfg.batch_size, self.generator))
            if not torch.isfinite(loss):
                raise TrainingDiverged(self._divergence_message(loss.item()))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            self._after_step(loss.item(), lr, bar)

    def _after_step(self, loss: float, lr: float, bar: tqdm) -> None:
        cfg, step = self.cfg, self.step
        metrics = {}
        if self.evaluate and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluate(self.model)
            self.model.train()
        logging = step % cfg.log_every == 0 or metrics or step == cfg.steps
        if logging and self.run:
            self.run.log({"step": step, "loss": loss, "lr": lr, **metrics})
        if self.run and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            self.save_checkpoint()
        bar.update(1)
        if logging:
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.callback:  # last: a callback may stop training (the dashboard, tests)
                self.callback(Progress(step, cfg.steps, loss, lr, metrics))

    def _divergence_message(self, value: float) -> str:
        saved = self.run.checkpoints() if self.run else []
        kept = f"last good checkpoint kept: {saved[-1]}" if saved else "no checkpoint was written yet"
        return (f"loss became {value} at step {self.step + 1}; training stopped, {kept}. "
                f"Try a lower train.lr (now {self.cfg.lr}) or train.grad_clip")

    # --- checkpoints: model + optimizer + RNG in one safetensors file, metadata as JSON ---
    def save_checkpoint(self) -> Path:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            for key, value in self.optimizer.state.get(p, {}).items():
                tensors[f"optim.{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.generator.get_state()
        meta = {"format": CHECKPOINT_FORMAT, "step": str(self.step)}
        path = self.run.path / "checkpoints" / f"step-{self.step}.safetensors"
        try:
            save_weights(tensors, path, metadata={"workbench": json.dumps(meta)})
        except OSError as e:
            last = self.run.checkpoints()
            kept = f"last good checkpoint kept: {last[-1]}" if last else "no earlier checkpoint"
            raise CheckpointError(f"{path}: checkpoint write failed ({e.strerror or e}); {kept}") from None
        for old in self.run.checkpoints()[: -self.cfg.keep_checkpoints]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def restore(self, path: str | Path) -> None:
        tensors = load_weights(path)
        load_state(self.model, model_part(tensors), path)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
            if state:
                self.optimizer.state[p] = state
        torch.set_rng_state(tensors["rng.torch"])
        self.generator.set_state(tensors["rng.data"])
        self.step = checkpoint_step(Path(path))
