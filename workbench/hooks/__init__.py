"""The four hook families workbench is about: attention maps, codebook features, circuits and
in-context-learning probes. Each function takes a model; `over_training` runs any of them on every snapshot a
run kept, so a snapshot is as easy to look into as a finished model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from workbench.hooks import attention


def over_training(path: str | Path, measure: Callable[[nn.Module], pd.DataFrame | dict],
                  variant: str | None = None, steps: list[int] | None = None, progress: bool = False
                  ) -> pd.DataFrame:
    """`measure(model)` at each snapshot of a saved run (or `data/<experiment>`), as one table with a `step`
    column, e.g. `over_training("data/induction", lambda m: head_scores(m, tokens))`; `measure` returns a table
    or a dict of numbers."""
    from workbench.experiments.runner import snapshot_models, snapshots

    chosen = steps if steps is not None else snapshots(path, variant)
    tables = []
    for step, model in tqdm(snapshot_models(path, variant, chosen), total=len(chosen), desc="snapshots",
                            disable=not progress, leave=False):
        value = measure(model)
        table = value.copy() if isinstance(value, pd.DataFrame) else pd.DataFrame([value])
        table.insert(0, "step", step)
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"step": []})


__all__ = ["attention", "over_training"]
