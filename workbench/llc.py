"""The local learning coefficient (LLC; Lau et al. 2023) of a model, and over a run's snapshots: developmental
interpretability (Hoogland et al. 2024) reads its changes as the stages of training, the induction head's
formation among them. Sampling is devinterp's SGLD; this module adapts a workbench task to its data interface.

devinterp takes a dataset of `input_ids` and a per-token loss of `(model, input_ids)`. Our tasks score only some
positions (the induction task: the two copies, not the filler after them), so the loss looks each sequence's
loss mask up by its tokens and returns the masked per-token loss rescaled so that a row's mean is its masked mean
(the training objective).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench.config import ConfigError
from workbench.tasks.base import Task

RESULT_FILE = "llc.json"


@dataclass(frozen=True)
class LLCConfig:
    """SGLD settings (devinterp's names): step size `lr`, inverse temperature `nbeta`, pull to the model's weights
    `localization`; `chains` × `draws` steps of `batch_size` sequences from `sequences` drawn from the task.
    `nbeta` is a fixed setting, not n / log n of the batch (devinterp's default, 9.2 at 32 sequences): estimates
    compare across a run's snapshots at one setting, not with LLCs measured at another nβ."""

    lr: float = 3e-4
    nbeta: float = 30.0
    localization: float = 100.0
    chains: int = 2
    draws: int = 100
    batch_size: int = 32
    sequences: int = 1024
    seed: int = 0


class _Logits(nn.Module):
    """Our model as devinterp's plain-module path sees it: devinterp treats any module with `cfg.n_heads` as a
    TransformerLens HookedTransformer and calls `.to(device, print_details=False)`, which ours does not take."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids)


def task_data(task: Task, cfg: LLCConfig):
    """`sequences` of the task as a devinterp dataset, and the per-token loss that scores only the positions the
    task trains on."""
    from datasets import Dataset

    if getattr(task, "loss", None) != "cross_entropy" or not getattr(task, "causal", False):
        raise ConfigError(f"llc: {type(task).__name__} is not a next-token task; the LLC here samples next-token "
                          "losses (devinterp's interface)")
    batch = task.sample(cfg.sequences, torch.Generator().manual_seed(cfg.seed))
    tokens, scored = batch.tokens, batch.loss_mask[:, :-1]  # position i predicts token i + 1
    masks = {row.numpy().tobytes(): mask for row, mask in zip(tokens, scored, strict=True)}

    def loss_fn(model: nn.Module, input_ids: Tensor) -> Tensor:
        logits = model(input_ids)[:, :-1]
        losses = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
        mask = torch.stack([masks[row.cpu().numpy().tobytes()] for row in input_ids]).to(losses.device)
        weight = mask.float() * mask.shape[1] / mask.sum(1, keepdim=True).clamp(min=1)
        return losses * weight

    return Dataset.from_dict({"input_ids": tokens.tolist()}).with_format("torch"), loss_fn


def estimate_llc(model: nn.Module, task: Task, cfg: LLCConfig = LLCConfig()) -> dict[str, float]:
    """The LLC of `model` at its weights on `task`: mean and standard deviation over chains, and the loss the
    chains start from."""
    from devinterp.slt.llc import llc

    dataset, loss_fn = task_data(task, cfg)
    result = llc(_Logits(model), dataset, {}, lr=cfg.lr, n_beta=cfg.nbeta, localization=cfg.localization,
                 num_chains=cfg.chains, num_draws=cfg.draws, batch_size=cfg.batch_size, init_seed=cfg.seed,
                 loss_fn=loss_fn, device=str(next(model.parameters()).device))
    return {"llc": float(result["llc_mean"]), "llc_std": float(result["llc_std"]),
            "init_loss": float(result["init_loss"])}


def llc_over_training(path: str | Path, variant: str | None = None, cfg: LLCConfig = LLCConfig(),
                      progress: bool = True) -> pd.DataFrame:
    """The LLC at every snapshot of a saved run, saved as `llc.json` in the run (the variant's folder) and
    returned as a table by step."""
    from workbench.experiments.runner import load, snapshot_models, snapshots
    from workbench.runs import Run

    exp, run_cfg, _ = load(path, variant=variant)
    task = exp.task(run_cfg)
    task_data(task, LLCConfig(sequences=1))  # refuse an unsupported task before any sampling
    steps = snapshots(path, variant)
    if not steps:
        raise ConfigError(f"{path}: no snapshots to estimate the LLC over")
    rows, start = [], time.perf_counter()
    for step, model in tqdm(snapshot_models(path, variant, steps), total=len(steps), desc="llc over snapshots",
                            disable=not progress):
        rows.append({"step": step, **estimate_llc(model, task, cfg)})
    folder = (Run(path).variant(variant) if variant else Run(path)).path
    record = {"config": asdict(cfg), "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    (folder / RESULT_FILE).write_text(json.dumps(record, indent=1, allow_nan=True))
    return pd.DataFrame(rows)


def saved_llc(path: str | Path, variant: str | None = None) -> list[dict]:
    """The LLC rows a run saved (`workbench llc`), by step; empty if it has none or the file is unreadable."""
    from workbench.runs import Run

    try:
        folder = (Run(path).variant(variant) if variant else Run(path)).path
        rows = json.loads((folder / RESULT_FILE).read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return []
    return [r for r in rows if isinstance(r, dict) and math.isfinite(r.get("llc", math.nan))]
