"""Grokking modular addition (Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability"; Power et al. 2022).

Claim: a 1-layer transformer trained full batch with strong weight decay on 40% of the pairs of
`a + b mod 97` first memorises them (train accuracy 1, test near chance), then, hundreds of epochs later,
generalises abruptly. What it generalises with is a Fourier algorithm: the embedding is sparse in the Fourier
basis of Z_p (a few key frequencies carry most of its norm), the MLP neurons cluster by key frequency, and
the logits are sums of cos(w(a + b − c)). Nanda's progress measures track it: the restricted loss (key
frequencies alone) falls before the test loss does, the excluded loss (them removed) rises.

Measured on the shipped quick run, late in training: at epoch ~1340, with the train loss down to 3e-7, the loss jumps
(train 2.4e-2 at 1350) and accuracy dips for a moment (test 0.983) before both recover; the loss stays near 1e-2
to the end. A spike at a tiny loss under Adam, like the "slingshot" of Thilak et al. 2022. The final losses (and
the restricted and excluded losses of the last snapshot) are measured after it.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from pydantic import model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, ExperimentConfig
from workbench.hooks.fourier import (
    basis_labels,
    basis_norms,
    key_frequencies,
    neuron_frequency_fractions,
    pair_grid,
    restricted_and_excluded_loss,
    top_frequencies,
)
from workbench.models import ModelConfig
from workbench.models.io import load_state, load_weights
from workbench.runs import Run
from workbench.tasks.modular import ModularAddition, ModularConfig
from workbench.train import TrainConfig
from workbench.viz.grokking import fourier_spectrum, grokking_curves, neuron_clusters, progress_measures

PAPER = "Nanda et al. 2023, Progress measures for grokking via mechanistic interpretability"
TOP = 5  # the embedding's top frequencies the criterion counts (metric names carry it)
SOLVED = 0.99  # accuracy that counts as "reached"


class GrokkingConfig(ExperimentConfig):
    # No LayerNorm, ReLU, Nanda's init std 1/sqrt(d_model): at the default 0.02, weight decay 1.0 keeps the model
    # too small to fit even the training set in 1500 epochs (train accuracy ~0.5).
    model: ModelConfig = ModelConfig(n_layers=1, d_model=64, n_heads=4, d_mlp=256, act="relu", norm="none", n_ctx=3,
                                     d_vocab=98, init_std=0.125)
    task: ModularConfig = ModularConfig()
    # batch_size ≥ the training set: full batch, one step = one epoch; AdamW as Nanda (betas 0.9, 0.98).
    train: TrainConfig = TrainConfig(steps=1500, batch_size=100_000, lr=3e-3, warmup_steps=10, min_lr_ratio=1.0,
                                     weight_decay=1.0, betas=(0.9, 0.98), grad_clip=None, log_every=10,
                                     eval_every=10)

    @model_validator(mode="after")
    def _fits_model(self) -> GrokkingConfig:
        if self.model.d_vocab != self.task.p + 1:
            raise ValueError(f"model.d_vocab={self.model.d_vocab} must be task.p + 1 = {self.task.p + 1} "
                             "(the numbers and '='); set both, e.g. "
                             f"--set task.p={self.task.p} model.d_vocab={self.task.p + 1}")
        return self

    @property
    def epochs_per_step(self) -> float:
        """Full batch: 1; a minibatch of B < N training pairs: B / N."""
        return min(self.train.batch_size, self.task.train_size) / self.task.train_size


class Grokking(Experiment):
    name = "grokking"
    title = "Grokking modular addition"
    paper = PAPER
    family = "circuits"
    claim = "Test accuracy jumps hundreds of epochs after train accuracy, via a sparse Fourier algorithm."
    Config = GrokkingConfig
    shipped_snapshots = 16  # the progress measures replay over them
    presets = {
        "smoke": {"train.steps": 30, "task.p": 23, "model.d_vocab": 24, "model.d_mlp": 64},
        "quick": {},
        # Nanda's model size and modulus on this recipe (not calibrated here)
        "full": {"task.p": 113, "model.d_vocab": 114, "model.d_model": 128, "model.d_mlp": 512,
                 "model.init_std": 0.088, "train.steps": 3000},
    }
    criteria = [
        Criterion(f"test accuracy reaches {SOLVED} within 1500 epochs", "test_solved_epoch", "<=", 1500, PAPER),
        Criterion("train accuracy gets there ≥ 300 epochs earlier", "grokking_delay_epochs", ">=", 300, PAPER),
        Criterion(f"top {TOP} frequencies carry ≥ 60% of ‖W_E‖²", f"embed_top{TOP}_fourier_fraction", ">=", 0.6,
                  PAPER),
        Criterion("still generalises at the end", "test_accuracy", ">=", SOLVED, PAPER),
    ]

    def task(self, cfg: GrokkingConfig) -> ModularAddition:
        return ModularAddition(cfg.task)

    @torch.no_grad()
    def accuracies(self, model, cfg: GrokkingConfig) -> dict[str, float]:
        """Accuracy and loss on the training pairs and on every held-out pair (one forward each)."""
        task, metrics = self.task(cfg), {}
        for split, batch in (("train", task.train_set()), ("test", task.test_set())):
            batch = batch.to(device_of(model))
            logits, answers = model(batch.tokens)[:, -1], batch.targets[:, -1]
            metrics[f"{split}_accuracy"] = float((logits.argmax(-1) == answers).float().mean())
            metrics[f"{split}_loss"] = float(F.cross_entropy(logits, answers))
        return metrics

    def evaluate_during_training(self, model, cfg: GrokkingConfig) -> dict[str, float]:
        return self.accuracies(model, cfg)

    @torch.no_grad()
    def evaluate(self, model, cfg: GrokkingConfig) -> dict[str, float]:
        p = cfg.task.p
        freqs, fraction = top_frequencies(model.W_E[:p].detach().float().cpu(), TOP)
        logits, acts = pair_grid(model, p)
        clusters = neuron_frequency_fractions(acts.float().cpu())
        keys = key_frequencies(clusters)
        restricted, excluded = restricted_and_excluded_loss(logits.cpu(), keys, self.task(cfg).train_pairs)
        best = clusters.max(-1)
        return {
            **self.accuracies(model, cfg),
            f"embed_top{TOP}_fourier_fraction": fraction,
            **{f"embed_frequency_{i + 1}": float(k) for i, k in enumerate(freqs)},
            # how much of a live neuron's variance its one key frequency explains; the frequencies they cluster on
            "neuron_key_fraction_mean": float(best.values[acts.flatten(0, 1).std(0).cpu() > 0].mean()),
            "key_frequency_count": float(len(keys)),
            "key_frequencies_in_embed_top": float(len(set(keys) & set(freqs))),
            # Nanda's progress measures at the key frequencies: low restricted loss, excluded loss above log p
            "restricted_loss": restricted,
            "excluded_loss": excluded,
        }

    def run_metrics(self, cfg: GrokkingConfig, run: Run, models=None) -> dict[str, float]:
        """The epochs at which train and test accuracy first reach 0.99, from the training log."""
        rows = run.metrics()
        metrics = {}
        for split in ("train", "test"):
            step = next((r["step"] for r in rows if r.get(f"{split}_accuracy", 0) >= SOLVED), None)
            if step is not None:
                metrics[f"{split}_solved_epoch"] = step * cfg.epochs_per_step
        if len(metrics) == 2:
            metrics["grokking_delay_epochs"] = metrics["test_solved_epoch"] - metrics["train_solved_epoch"]
        return metrics

    @torch.no_grad()
    def figures(self, model, cfg: GrokkingConfig, run: Run | None = None) -> dict[str, go.Figure]:
        p = cfg.task.p
        W_E = model.W_E[:p].detach().float().cpu()
        _, acts = pair_grid(model, p)
        clusters = neuron_frequency_fractions(acts.float().cpu())
        figs = {"embedding_fourier": fourier_spectrum(basis_norms(W_E), basis_labels(p)),
                "neuron_clusters": neuron_clusters(clusters, 0.5)}
        if run is not None and run.metrics():
            solved = self.run_metrics(cfg, run)
            marks = {f"{split} {SOLVED}": solved[f"{split}_solved_epoch"] for split in ("train", "test")
                     if f"{split}_solved_epoch" in solved}
            figs["training"] = grokking_curves(run.metrics(), cfg.epochs_per_step, marks)
        if run is not None and run.snapshots():
            table = self.snapshot_losses(cfg, run, key_frequencies(clusters))
            figs["progress_measures"] = progress_measures(table, cfg.epochs_per_step)
        return figs

    def snapshot_losses(self, cfg: GrokkingConfig, run: Run, freqs: list[int]) -> pd.DataFrame:
        """Train, test, restricted and excluded loss at every snapshot, with the final model's key frequencies."""
        task, rows = self.task(cfg), []
        for step, path in run.snapshots().items():
            model = self.build(cfg)
            load_state(model, load_weights(path), path)
            logits, _ = pair_grid(model.eval(), cfg.task.p)
            restricted, excluded = restricted_and_excluded_loss(logits.cpu(), freqs, task.train_pairs)
            losses = self.accuracies(model, cfg)
            rows.append({"step": step, "train loss": losses["train_loss"], "test loss": losses["test_loss"],
                         "restricted loss": restricted, "excluded loss": excluded})
        return pd.DataFrame(rows)
