"""Checking a compiled (or trained) model against its program, and grading circuit discovery on it: every input
enumerated for exactness; EAP, EAP-IG and ACDC run on clean/corrupted pairs and scored against the program's live
true edges (`compiler.live_edges`)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import nn

from workbench.compile.compiler import Compiled, live_edges, output_metric
from workbench.compile.rasp import evaluate
from workbench.device import device_of
from workbench.hooks.circuits import METHODS, CircuitGraph, area_scores, discover, faithfulness_curve
from workbench.hooks.circuits.grading import edge_mask, grade
from workbench.hooks.circuits.graph import CircuitRun


def all_inputs(compiled: Compiled, unique: bool = False) -> Iterator[list[list]]:
    """Every input up to the compiled length, one batch per length (`unique`: no repeated token)."""
    for n in range(1, compiled.max_len + 1):
        combos = itertools.permutations(compiled.vocab, n) if unique else itertools.product(compiled.vocab, repeat=n)
        batch = [list(x) for x in combos]
        if batch:
            yield batch


def same(a, b) -> bool:
    return abs(a - b) < 1e-4 if isinstance(a, float) or isinstance(b, float) else a == b


@torch.no_grad()
def exactness(compiled: Compiled, model: nn.Module | None = None, unique: bool = False) -> dict[str, float]:
    """Over every input: the fraction `model` (default: the compiled one) gets entirely right, and per token. A
    model other than the compiled one is decoded by argmax."""
    runner = compiled if model is None else replace(compiled, model=model)
    exact = right_tokens = total = total_tokens = 0
    for batch in all_inputs(compiled, unique):
        for got, x in zip(runner.run(batch, 0.5 if model is None else None), batch, strict=True):
            right = [same(a, b) for a, b in zip(got, evaluate(compiled.program, x), strict=True)]
            exact, right_tokens = exact + all(right), right_tokens + sum(right)
            total, total_tokens = total + 1, total_tokens + len(right)
    return {"exact": exact / total, "token_accuracy": right_tokens / total_tokens}


def random_pairs(compiled: Compiled, n: int, seed: int = 0, unique: bool = False) -> tuple[list[list], list[list]]:
    """`n` clean and `n` corrupted inputs of the longest length."""
    rng = random.Random(seed)
    return ([draw_input(compiled, rng, compiled.max_len, unique) for _ in range(n)],
            [draw_input(compiled, rng, compiled.max_len, unique) for _ in range(n)])


def draw_input(compiled: Compiled, rng: random.Random, length: int, unique: bool = False) -> list:
    return rng.sample(compiled.vocab, length) if unique else [rng.choice(compiled.vocab) for _ in range(length)]


def grade_discovery(compiled: Compiled, clean: list[list], corrupted: list[list], model: nn.Module | None = None,
                    threshold: float = 0.01, ig_steps: int = 10, methods: tuple[str, ...] = METHODS
                    ) -> tuple[dict[str, CircuitGraph], torch.Tensor, dict[str, float]]:
    """Run each method on `model` (default: the compiled one) with the program's metric and grade it against the
    live true edges: per method precision, recall, ROC AUC, found/true counts, CPR and CMD; also the live-edge
    count and the true circuit's own faithfulness. Returns the graphs, the true edge mask and the metrics."""
    model = compiled.model if model is None else model
    live = live_edges(compiled, list(zip(clean, corrupted, strict=True)))
    metric = output_metric(compiled, clean, corrupted)
    device = device_of(model)
    clean_ids, corrupted_ids = compiled.encode(clean).to(device), compiled.encode(corrupted).to(device)
    graphs = {m: discover(model, clean_ids, corrupted_ids, metric, m, ig_steps=ig_steps, threshold=threshold)
              for m in methods}
    first = next(iter(graphs.values()))
    true = edge_mask(first, [(e["writer"], e["reader"]) for e, on in zip(compiled.true_edges, live, strict=True)
                             if on])
    run = CircuitRun.prepare(model, clean_ids, corrupted_ids, metric)
    metrics = {"true_edges": float(len(live)), "live_edges": float(sum(live)), "graph_edges": float(first.n_edges),
               "true_circuit_faithfulness": run.faithfulness(true)}
    for method, graph in graphs.items():
        curve = faithfulness_curve(model, clean_ids, corrupted_ids, metric, graph, run=run)
        metrics |= {f"{method}.{k}": float(v) for k, v in (grade(graph, true, threshold) | area_scores(curve)).items()}
    return graphs, true, metrics
