"""The induction circuit (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"; Olsson et
al. 2022), found by discovery and scored like the Mechanistic Interpretability Benchmark (Mueller et al. 2025).

Claim: in a 2-layer attention-only model the induction mechanism is a previous-token head in layer 0 whose
output the induction head in layer 1 reads with its keys (K-composition). Circuit discovery (EAP, EAP-IG,
ACDC) on clean `BOS r r` prompts against corrupted ones (first half resampled, so nothing repeats) should find
that composition; a small circuit should recover the model's behaviour; path patching should confirm the pair.

By default the model is the shipped `induction` model (data/induction), loaded rather than retrained; the
smoke preset trains a tiny one so the pipeline runs in seconds.

Not yet, on the shipped model: the ≤10%-of-edges faithfulness criterion. Measured (32 pairs, next-token margin):
K-composition's top pair is L0H2 (previous-token score 0.93) → L1H0 (induction 0.97), ACDC keeps its key edge,
and path patching that edge alone loses 13% of the gap, more than any other sender's. But the model spreads
induction over two layer-0 heads feeding the keys of all four layer-1 heads, so the 8 edges of 10% of the
81-edge graph cannot carry it: hand-picked circuits of 4–7 edges (one or two heads at each end) recover
0.11–0.35, and at 8 edges discovery reaches 0.03 (EAP), 0.03 (EAP-IG) and 0.13 (ACDC).
Faithfulness 0.8 takes 19 edges with EAP-IG (23%), 21 with ACDC and 50 with EAP; ACDC's own circuit (24 edges)
has 0.98. All four layer-1 heads are induction heads (scores 0.96–0.98); patched alone into the corrupted
run, each restores 17–38% of the gap, and corrupting either L0H2 or L0H0 alone leaves 38%. A model with a sparser
mechanism would pass; this one is reported as it is. No 8-edge circuit we could find passes either: greedy edge
selection with one-edge swaps stalls at 0.13, and the best circuit built from whole head paths (every choice of
layer-1 heads and of zero to two key senders) is 0.36 at 8 edges (L1H2 reading L0H0 and L0H2), 0.64 at 12 (two
heads), 0.75 at 17 (three), 0.93 at 22 (all four, each reading both senders). Retraining here (`--set source=train`)
did not make a sparser model: with weight decay 0.1, ACDC's 8 edges reach 0.14; with 8 heads a layer (257 edges),
its 25 edges (10%) reach 0.57 and 0.8 takes 38 (15%); with d_model 128, 0.04 at 8 edges (and a weaker previous-token
head, 0.68); with 12 heads a layer (d_head 16, 529 edges), 0.27 at 52 edges (10%) and 0.8 takes 121; seeds 1 and 2
of the shipped recipe, 0.05; d_head 64 with four heads, 0.015.

The optimizer, more than the architecture, spreads the mechanism (`--set train.optimizer=sgd --set train.lr=0.3`,
momentum 0.9). Adam scales each weight's update to the learning rate whatever its gradient, so a head that lags at
the phase change still moves at full speed and every layer-1 head becomes an induction head; SGD moves it in
proportion to its gradient, so the head that leads keeps most of the job. With SGD one layer-1 head, L1H2, restores
0.73 of the gap alone (with Adam, four heads restore 0.17–0.38 each), and just after the phase change (steps
820–860) 8 edges reach 0.81–0.84 (the shipped recipe's best snapshot: 0.75). By step 3000 a second key sender (L0H2,
0.28 of the gap) and a value path through a self-attending layer-0 head (L0H1 → L1H2.v, 0.48) have joined and 8
edges reach 0.44; the previous-token score is 0.72 and K-composition's top pair is not the one the circuit uses.
Trained 6000 steps: previous-token 0.78, 8 edges 0.42. With `task.distinct` as well, one induction head restores
0.94 of the gap alone and four of the five criteria pass (the K-composition pair, ACDC keeping its edge, path
patching 0.29 and the top sender), 8 edges reach 0.78 and 10 reach 0.8, but the previous-token score is 0.48
(0.64 at the queries of the first copy, 0.32 after them; with SGD alone 0.75 and 0.70): SGD sharpens the
attention only as far as the loss asks, where Adam takes it to 0.93. Two phases (a throwaway change: SGD with
`task.distinct` for 3000 steps, then 1000 Adam steps at lr 3e-4): on the distinct task all five circuit criteria pass
(8 edges 0.88, 7 reach 0.8; path patching 0.38, the top sender), but the previous-token score stays 0.48, which
fails the induction experiment; with the Adam phase on the plain task instead, it rises only to 0.55 while the
circuit spreads again (8 edges 0.29, K-composition's top pair lost). Adding
`task.periodic` (keys at every position), SGD found no induction mechanism in 3000 steps (induction score 0.002);
with the segment at a random start (a throwaway change), no induction head formed in 6000 steps (induction score
0.05 with fresh tokens around the segment; in an otherwise all-distinct sequence the loss was still log 63 at step
2400); at lr 1.0 the loss had not moved by step 1560. Adam with ε 1e-4 (a throwaway change) gave 0.03 at 8 edges.

Over training (`circuit_over_training`, saved with the run): the circuit is sparsest just after the phase change.
At steps 290–330 one layer-0 head, L0H2, feeds the keys (its key paths carry ~0.53 of the gap, every other head's
≤ 0.02) and the top 8 edges reach 0.71–0.75 (EAP-IG and ACDC; 10–11 edges reach 0.8). From step ~340 L0H0 feeds the
keys too (0.12 of the gap at step 400, 0.46 at 3000, as much as L0H2) and the 8-edge circuit falls to 0.03–0.13. L0H0
is a two-back head (`offset_profile`: 0.19 of its attention two tokens back at step 320, 0.62 at the end), so the
keys come to match a two-token prefix: a second, partly redundant key signal. Even at its sparsest the circuit
stays under 0.8. A larger vocabulary (fewer repeated tokens for a two-token prefix to tell apart) did not settle
it: with d_vocab 512 (`--set task.d_vocab=512 --set model.d_vocab=512`) ACDC's 8 edges reach 0.73 and 10 reach
0.8, but in 3000 steps the previous-token head reaches only 0.58 (the induction experiment asks 0.8) and
K-composition's top pair is not that head's; with d_vocab 256, 0.25 at 8 edges (previous-token head 0.64).

Accidental repeats inside the segment are what make the two-back head worth having, and also what keep the
previous-token head sharp; the task's `distinct` and `periodic` switches separate the two (quick preset, 3000 steps):
- `--set task.distinct=true` (no token twice in the segment): no two-back head forms; one layer-0 head, L0H3, feeds
  the keys (its key paths 0.44 of the gap, every other's ≤ 0.03) and ACDC's 8 edges reach 0.78 (10 edges reach 0.8).
  But the previous-token head is needed only where the first copy sits (positions ≤ 31), and beyond them its
  attention leaks to far keys: 0.83 on the first copy, 0.09 at the end of the repeat, 0.59 overall (the induction
  experiment asks 0.8).
- adding `--set task.periodic=true` (the copy runs on to the end, so keys at every position matter): one sender,
  L0H0, feeds the keys of three induction heads; EAP-IG and ACDC reach 0.795 at 8 edges, 0.8 at 9. The
  previous-token score rises only to 0.69 (0.95 at position 1, 0.37 at position 61: with rotary positions the head
  leaks to keys 20, 39 and 57 back, which nothing penalises once the repeats are predicted), and K-composition
  scores every receiver alike (0.32–0.33), so its top pair, L0H0 → L1H3, is a head the circuit does not use (path
  patching 0.005). Trained twice as long (`--set train.steps=6000`, 357 s): 8 edges reach 0.874 (EAP-IG and ACDC;
  ACDC needs 7 for 0.8), the previous-token score only 0.75, and K-composition still cannot tell the receivers apart
  (0.33–0.34): its top pair reads into L1H3, an induction head by its attention (0.97) whose output, patched alone,
  restores 2% of the gap (L1H1 51%, L1H2 48%, L1H0 29%), so ACDC drops that pair's key edge and path patching gives
  it 0.006: two of the five criteria fail, and the induction experiment's previous-token criterion, where one fails
  now. With learned positions instead of rotary (`--set model.positional=learned`), previous-token attention splits
  over three layer-0 heads (0.36–0.48 each) and 8 edges reach 0.21.
- `periodic` alone (repeats allowed): a two-back head again (offset-2 attention 0.75), previous-token 0.91, 8 edges
  0.05; half the sequences distinct (measured with a throwaway change, not a switch): two-back head 0.67, 8 edges
  0.16.
- several segments, each repeated once, packed into each sequence with no token twice anywhere (a throwaway change:
  keys at every position serve, none by accident), 3000 steps: one key sender, L0H0 (its path into L1H0's keys
  carries 0.68 of the gap; previous-token score 0.84), but three induction heads (0.76 each) that also read L0H0
  through their values, so 8 edges reach 0.01 and 0.8 takes 13 (ACDC).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
import torch
from pydantic import Field

from workbench.config import ConfigError
from workbench.device import device_of
from workbench.experiments.base import Criterion
from workbench.experiments.induction import Induction, InductionConfig
from workbench.hooks import over_training
from workbench.hooks.attention import head_scores
from workbench.hooks.circuits import (
    METHODS,
    CircuitRun,
    activation_patching,
    area_scores,
    composition_scores,
    direct_logit_attribution,
    discover_all,
    discovery_scores,
    formed_gap,
    method_scores,
    next_token_margin,
    path_patching,
)
from workbench.models.io import load_state, load_weights
from workbench.runs import Run, atomic_write, data_root
from workbench.viz import LAYOUT
from workbench.viz.circuits import (
    circuit_graph_figure,
    circuit_over_training_figure,
    faithfulness_figure,
    logit_attribution_bars,
    patching_heatmap,
)

OVER_TRAINING = "circuit_over_training.json"  # the artifact: discovery at each snapshot

PAPER = "Elhage et al. 2021; Olsson et al. 2022; MIB (Mueller et al. 2025) for faithfulness, CPR and CMD"


class InductionCircuitConfig(InductionConfig):
    source: Literal["shipped", "train"] = Field(
        "shipped", description="shipped: load data/induction (same model and task config); train: train here")
    pairs: int = Field(32, ge=1, description="clean/corrupted prompt pairs discovery runs on")
    ig_steps: int = Field(10, ge=1, description="EAP-IG's integration steps")
    threshold: float = Field(0.01, ge=0, le=1, description="ACDC: prune an edge costing < this share of the gap")
    max_fraction: float = Field(0.1, gt=0, le=1, description="the circuit size the faithfulness criterion allows")


class InductionCircuit(Induction):
    name = "induction-circuit"
    title = "The induction circuit, discovered"
    paper = PAPER
    family = "circuits"
    claim = ("Discovery finds the previous-token head → induction head K-composition; a small circuit recovers "
             "the behaviour; path patching confirms the pair.")
    Config = InductionCircuitConfig
    presets = {
        "smoke": {**Induction.presets["smoke"], "source": "train", "pairs": 4, "ig_steps": 2, "train.snapshots": 5,
                  "train.dense_windows": 0},
        "quick": {},
        "full": {**Induction.presets["full"], "source": "train"},
    }
    criteria = [
        Criterion("top K-composition pair = previous-token head → induction head", "k_composition_pair_found",
                  ">=", 1.0, PAPER),
        Criterion("ACDC's circuit keeps that pair's key edge", "acdc_keeps_pair_edge", ">=", 1.0, PAPER),
        Criterion("a circuit with ≤10% of edges has faithfulness ≥ 0.8 (best method)", "faithfulness_at_max_fraction",
                  ">=", 0.8, "MIB"),
        Criterion("path patching: the pair's key path carries ≥ 5% of the gap", "path_patching_pair", ">=", 0.05,
                  "Wang et al. 2023 (path patching)"),
        Criterion("path patching: no other sender's key path into that head carries more",
                  "path_patching_pair_is_top", ">=", 1.0, "Wang et al. 2023 (path patching)"),
    ]
    shipped_snapshots = 0
    artifacts = (OVER_TRAINING,)

    # --- the model: the shipped induction model, or trained here ---
    def train(self, cfg: InductionCircuitConfig, run: Run | None, callback=None, progress_bar: bool = True):
        trained = cfg.source == "train"
        model = super().train(cfg, run, callback, progress_bar) if trained else self.load_shipped(cfg, run)
        if run is not None:
            table = self.circuit_over_training(model.eval(), cfg, self.training_run(cfg, run.path), progress_bar)
            atomic_write(run.path / OVER_TRAINING, table.to_json(orient="records"))
        return model

    @staticmethod
    def training_run(cfg: InductionCircuitConfig, path: str | Path) -> Path:
        """The run whose snapshots trace the training of the model at `path`: data/induction for the shipped
        model, else the run itself."""
        return data_root() / "induction" if cfg.source == "shipped" else Path(path)

    def load_shipped(self, cfg: InductionCircuitConfig, run: Run | None):
        source = data_root() / "induction"
        if not (source / "model.safetensors").exists():
            raise ConfigError(f"source=shipped: {source} has no model; run `workbench run induction --quick --ship` "
                              "or set source=train")
        shipped = json.loads((source / "config.json").read_text())["config"]
        for part in ("model", "task"):
            mine = getattr(cfg, part)
            theirs = type(mine).model_validate({**shipped[part], "device": getattr(mine, "device", None)}
                                               if part == "model" else shipped[part])
            if theirs != mine:
                raise ConfigError(f"source=shipped: {part} differs from data/induction's; set source=train to "
                                  "train this config")
        model = self.build(cfg)
        load_state(model, load_weights(source / "model.safetensors"), source / "model.safetensors")
        if run is not None:  # the training log of the model, so its curves come along
            shutil.copyfile(source / "metrics.jsonl", run.path / "metrics.jsonl")
        return model

    def evaluate_during_training(self, model, cfg: InductionCircuitConfig) -> dict[str, float]:
        return Induction.evaluate(self, model, cfg.model_copy(update={"eval_batch": min(64, cfg.eval_batch)}))

    def discovery(self, model, cfg: InductionCircuitConfig):
        """Prompts, metric, the prepared run, each method's graph and faithfulness curve; computed once per
        model and config (evaluate and figures both need them)."""
        key = (id(model), cfg.model_dump_json(), float(sum(p.detach().double().sum() for p in model.parameters())))
        if getattr(self, "_discovered", (None,))[0] != key:
            self._discovered = (key, self._discover(model, cfg))
        return self._discovered[1]

    def _discover(self, model, cfg: InductionCircuitConfig):
        clean, corrupted, metric = self.prompts_and_metric(cfg)
        run = CircuitRun.prepare(model, clean, corrupted, metric)
        run.check_gap("induction-circuit")
        graphs, curves = discover_all(model, clean, corrupted, metric, METHODS, cfg.ig_steps, cfg.threshold, run)
        return clean, corrupted, metric, run, graphs, curves

    def prompts_and_metric(self, cfg: InductionCircuitConfig):
        clean, corrupted, positions = self.circuit_prompts(cfg, cfg.pairs)
        return clean, corrupted, next_token_margin(clean, positions)

    # --- discovery at every snapshot of the model's training (an artifact: it takes minutes) ---
    def circuit_over_training(self, model, cfg: InductionCircuitConfig, source: Path, progress: bool = True
                              ) -> pd.DataFrame:
        """At each snapshot that `source` (the run that trained the model) keeps when shipped: the clean − corrupted
        gap and, once the gap is `MIN_GAP_SHARE` of the final model's, what discovery finds (`method_scores`) and,
        per layer-0 head, the share of the gap its paths into later heads' keys carry (path patching, summed over
        those heads): which heads the induction heads' keys read, and how that changes as the circuit forms."""
        clean, corrupted, metric = self.prompts_and_metric(cfg)
        min_gap = formed_gap(model, clean, corrupted, metric)
        senders = [f"L0H{h}" for h in range(cfg.model.n_heads)]
        keys = [f"L{layer}H{h}.k" for layer in range(1, cfg.model.n_layers) for h in range(cfg.model.n_heads)]

        def measure(snapshot) -> dict[str, float]:
            row = discovery_scores(snapshot, clean, corrupted, metric, METHODS, cfg.ig_steps, cfg.threshold,
                                   cfg.max_fraction, min_gap)
            if "n_edges" in row:  # discovery ran: which layer-0 heads the keys read
                paths = path_patching(snapshot, clean, corrupted, metric, senders, keys).sum(axis=1)
                row |= {f"{sender}.key_paths": float(share) for sender, share in paths.items()}
            return row

        from workbench.experiments.runner import kept_snapshots  # the runner imports the catalog

        steps = kept_snapshots(source, Induction.shipped_snapshots)  # data/induction's, or those it would ship
        return over_training(source, measure, steps=steps, progress=progress)

    def run_metrics(self, cfg: InductionCircuitConfig, run: Run, models) -> dict[str, float]:
        """The best snapshot's faithfulness within `max_fraction` of the edges, and its step (reported, not judged:
        the criterion is about the finished model)."""
        table = self.saved_over_training(run.path)
        if table.empty:
            return {}
        best = table.loc[table["faithfulness_at_max_fraction"].idxmax()]
        return {"snapshot_best_faithfulness_at_max_fraction": float(best["faithfulness_at_max_fraction"]),
                "snapshot_best_step": int(best["step"])}

    @staticmethod
    def saved_over_training(path: str | Path) -> pd.DataFrame:
        """The `circuit_over_training` table a run (or data/induction-circuit) saved; empty if it has none or
        discovery ran on none of its snapshots."""
        path = Path(path) / OVER_TRAINING
        table = pd.DataFrame(json.loads(path.read_text())) if path.exists() else pd.DataFrame()
        if "faithfulness_at_max_fraction" not in table or table["faithfulness_at_max_fraction"].isna().all():
            return pd.DataFrame()
        return table

    @torch.no_grad()
    def evaluate(self, model, cfg: InductionCircuitConfig) -> dict[str, float]:
        metrics = super().evaluate(model, cfg)
        clean, corrupted, metric, run, graphs, curves = self.discovery(model, cfg)
        scores = head_scores(model, self.eval_batch(cfg, cfg.task.max_segment).tokens.to(device_of(model)),
                             segment=cfg.task.max_segment)
        composition = composition_scores(model, "k")
        sender, receiver = composition.stack().idxmax()
        prev = scores[scores.layer == 0].set_index("head")["previous_token"]
        induction = scores.set_index(["layer", "head"])["induction"]
        r_layer, r_head = int(receiver[1:].split("H")[0]), int(receiver.split("H")[1])
        pair_found = (sender == f"L0H{int(prev.idxmax())}" and induction[(r_layer, r_head)] >= 0.8)
        kept = graphs["ACDC"].kept
        pair_edge = (graphs["ACDC"].writers.index(sender), graphs["ACDC"].readers.index(f"{receiver}.k"))
        earlier = [f"L{layer}H" for layer in range(r_layer)]  # every head below the receiver may send
        paths = path_patching(model, clean, corrupted, metric,
                              senders=[w for w in run.ports.writers if w.startswith(tuple(earlier))],
                              receivers=[f"{receiver}.k"])[f"{receiver}.k"]
        others = paths.drop(sender)
        metrics |= {
            "clean_metric": run.clean_metric, "corrupted_metric": run.corrupted_metric,
            "n_edges": graphs["EAP"].n_edges, "k_composition_sender_head": int(sender.split("H")[1]),
            "k_composition_receiver_layer": r_layer, "k_composition_receiver_head": r_head,
            "k_composition_top": float(composition.loc[sender, receiver]),
            "k_composition_pair_found": float(pair_found), "acdc_keeps_pair_edge": float(kept[pair_edge]),
            "acdc_edges": int(kept.sum()), "acdc_faithfulness": run.faithfulness(kept),
            "path_patching_pair": float(paths[sender]),
            "path_patching_pair_is_top": float(others.empty or paths[sender] >= others.max()),
        }
        return metrics | method_scores(run, graphs, curves, cfg.max_fraction)

    @torch.no_grad()
    def figures(self, model, cfg: InductionCircuitConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {k: v for k, v in super().figures(model, cfg, run).items() if k in ("induction_scores",
                                                                                  "previous_token_scores")}
        clean, corrupted, metric, circuit_run, graphs, curves = self.discovery(model, cfg)
        figs["faithfulness"] = faithfulness_figure(curves, {m: area_scores(c) for m, c in curves.items()},
                                                   cfg.max_fraction)
        figs["acdc_circuit"] = circuit_graph_figure(graphs["ACDC"], edges=[
            (w, r) for w, r, k in graphs["ACDC"].edges()[["writer", "reader", "kept"]].values if k])
        top = graphs["EAP-IG"].edges().head(max(1, int(cfg.max_fraction * graphs["EAP-IG"].n_edges)))
        figs["eap_ig_circuit"] = circuit_graph_figure(graphs["EAP-IG"], edges=list(zip(top.writer, top.reader,
                                                                                         strict=True)))
        heads = activation_patching(model, clean, corrupted, metric, "attn_head_out")
        span = circuit_run.gap
        figs["head_patching"] = patching_heatmap((heads - circuit_run.corrupted_metric) / span, ("layer", "head"),
                                                 "patching each head's output into the corrupted run",
                                                 metric="share of the gap")
        comp = composition_scores(model, "k")
        later = [c for c in comp.columns if comp[c].notna().any()]
        earlier = [r for r in comp.index if comp.loc[r].notna().any()]
        fig = go.Figure(go.Heatmap(z=comp.loc[earlier, later].values, x=later, y=earlier, colorscale="Viridis",
                                   hovertemplate="%{y} → %{x}<br>K-composition %{z:.3f}<extra></extra>"))
        fig.update_layout(title="K-composition scores (weights)", xaxis_title="reading head (keys)",
                          yaxis_title="writing head", **LAYOUT)
        figs["k_composition"] = fig
        paths = path_patching(model, clean, corrupted, metric, senders=earlier, receivers=[f"{h}.k" for h in later])
        figs["path_patching"] = patching_heatmap(
            torch.tensor(paths.values, dtype=torch.float32), ("sender", "receiver"),
            "path patching: share of the gap lost", columns=list(paths.columns), rows=list(paths.index),
            metric="share lost")
        seg = cfg.task.max_segment
        dla = direct_logit_attribution(model, clean[:1], int(clean[0, 2 * seg]), pos=2 * seg - 1)
        figs["direct_logit_attribution"] = logit_attribution_bars(dla, "direct logit attribution to the next token")
        table = self.saved_over_training(run.path) if run is not None else pd.DataFrame()
        if not table.empty:
            figs["circuit_over_training"] = circuit_over_training_figure(table, cfg.max_fraction)
        return figs
