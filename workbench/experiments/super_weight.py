"""Super weights (Yu et al. 2024, "The Super Weight in Large Language Models").

Claim (for LLMs): a handful of single weights — one in an early MLP's down-projection — are so important that
zeroing one destroys the model (perplexity ×1000s); each writes a "super activation", a massive value in one
residual channel. The workbench's tool searches any model for them: attribution |w · ∂L/∂w| over every weight to
shortlist, then exact ablation of each candidate (`hooks/super_weight.py`). It must find a planted super weight
exactly; then it is run on a small LM trained the way that makes massive activations (the no-op-heads recipe:
lr 1e-2, BOS on every sequence) and on the workbench's other shipped LMs, and reports honestly whether any of them
has a weight whose removal multiplies the loss by 10 or more.
"""

from __future__ import annotations

import copy
import math

import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from pydantic import Field

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.super_weight import Weight, find_super_weights, plant_super_weight, super_activation
from workbench.models import ModelConfig
from workbench.runs import Run, data_root
from workbench.tasks.language import BOS, SegmentedLanguage, SegmentedLanguageConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, training_curves

PAPER = "Yu et al. 2024, The Super Weight in Large Language Models"
SUPER = 10.0  # a weight whose removal multiplies the loss by this much is a super weight


class SuperWeightConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=4, d_model=64, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=256)
    task: SegmentedLanguageConfig = SegmentedLanguageConfig()
    train: TrainConfig = TrainConfig(steps=2000, batch_size=16, lr=1e-2, warmup_steps=200, min_lr_ratio=0.0,
                                     betas=(0.9, 0.95), eval_every=500, snapshots=4)
    shortlist: int = Field(32, ge=1, description="weights the attribution shortlists for exact ablation")
    # large enough to swamp the massive activations (residual ∞-norm ~200) that this recipe grows on its own
    planted_size: float = Field(1000.0, gt=0, description="the planted weight's value")
    scan_shipped: list[str] = Field(["no-op-heads/vanilla-s0", "future-lens", "structural-probe", "induction"],
                                    description="shipped token LMs to search too: data/<name>[/<variant>]")
    eval_batch: int = Field(32, ge=1, description="held-out sequences the loss is measured on")


def lm_loss(batch):
    """The masked next-token loss of a batch, as a function of the model (what ablation measures)."""
    def loss(model):
        b = batch.to(device_of(model))
        return F.cross_entropy(model(b.inputs)[b.loss_mask], b.targets[b.loss_mask])
    return loss


class SuperWeight(Experiment):
    name = "super-weight"
    title = "Super weights: does one weight hold a small model together?"
    paper = PAPER
    family = "circuits"
    claim = ("A search by attribution and exact ablation finds a planted super weight exactly; whether small trained "
             "LMs have one (loss ×≥ 10 from a single weight) is reported, not assumed.")
    Config = SuperWeightConfig
    presets = {
        "smoke": {"train.steps": 20, "train.warmup_steps": 5, "train.eval_every": 10, "shortlist": 4,
                  "eval_batch": 4, "scan_shipped": []},
        "quick": {},
        "full": {"train.steps": 6000, "model.n_layers": 6, "model.d_model": 128, "model.d_mlp": 512},
    }
    criteria = [
        Criterion("the search ranks the planted super weight first", "planted_found", ">=", 1.0, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: SuperWeightConfig) -> SegmentedLanguage:
        return SegmentedLanguage(cfg.task)

    def search(self, model, cfg: SuperWeightConfig):
        return self.memo("search", model, cfg, lambda: find_super_weights(model, lm_loss(self.eval_batch(cfg)),
                                                                          cfg.shortlist))

    def planted(self, model, cfg: SuperWeightConfig):
        """A copy of the model with a super weight planted in its last MLP, pushing towards BOS once zeroed, and
        the search's table on it."""
        def run():
            copied = copy.deepcopy(model)
            layer = copied.cfg.n_layers - 1  # the last MLP: only the final norm and the unembedding read it
            weight = plant_super_weight(copied, layer, unit=0, size=cfg.planted_size, token=BOS)  # never a target
            return weight, find_super_weights(copied, lm_loss(self.eval_batch(cfg)), cfg.shortlist)
        return self.memo("planted", model, cfg, run)

    def shipped_scan(self, cfg: SuperWeightConfig) -> dict[str, float]:
        """The worst single-weight loss ratio of each shipped token LM (each variant of a run)."""
        from workbench.experiments.runner import load

        def run():
            found = {}
            for entry in cfg.scan_shipped:
                name, _, variant = entry.partition("/")
                if not (data_root() / name / "result.json").exists():
                    continue
                loaded = load(data_root() / name, variant=variant or None)
                table = find_super_weights(loaded.model, lm_loss(loaded.experiment.eval_batch(loaded.config)),
                                           cfg.shortlist)
                found[entry] = float(table["ratio"].iloc[0])
            return found
        return self.memo("shipped", None, cfg, run)

    def evaluate(self, model, cfg: SuperWeightConfig) -> dict[str, float]:
        table = self.search(model, cfg)
        top = table.iloc[0]
        weight, planted = self.planted(model, cfg)
        activation = super_activation(model, self.eval_batch(cfg).tokens, Weight(top["param"], int(top["row"]),
                                                                                 int(top["col"])))
        metrics = {"max_loss_ratio": float(top["ratio"]), "base_loss": float(top["base_loss"]),
                   "has_super_weight": float(top["ratio"] >= SUPER),
                   "top_weight_activation_vs_typical": activation["times_typical"],
                   "planted_found": float(planted.iloc[0]["weight"] == str(weight)),
                   "planted_ratio": float(planted.iloc[0]["ratio"])}
        for name, ratio in self.shipped_scan(cfg).items():
            metrics[f"shipped.{name}.max_loss_ratio"] = ratio
        return metrics

    def evaluate_during_training(self, model, cfg: SuperWeightConfig) -> dict[str, float]:
        with torch.no_grad():
            return {"eval_loss": float(lm_loss(self.eval_batch(cfg, 16))(model))}

    def figures(self, model, cfg: SuperWeightConfig, run: Run | None = None) -> dict[str, go.Figure]:
        table = self.search(model, cfg)
        weight, planted = self.planted(model, cfg)
        figs = {"ablation": ablation_figure({"trained": table, "with a planted weight": planted}, str(weight)),
                "scan": scan_figure({"this run": float(table["ratio"].iloc[0]), **self.shipped_scan(cfg)})}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "eval_loss"])
        return figs


def super_line(fig: go.Figure, label: str) -> None:
    """The dotted line at loss × SUPER on the log y axis, labelled. Its label is placed by hand: plotly puts an
    `add_hline` annotation on a log axis at 10^y (here 10^10), stretching the axis to reach it."""
    fig.add_hline(y=SUPER, line_dash="dot")
    fig.add_annotation(x=1, xref="paper", xanchor="right", y=math.log10(SUPER), yref="y", yanchor="bottom",
                       text=label, showarrow=False, font={"size": 11})


def ablation_figure(tables: dict, planted: str, top: int = 12) -> go.Figure:
    """The shortlisted weights' loss ratio when zeroed (log scale), worst first, per model."""
    fig = go.Figure()
    for name, table in tables.items():
        shown = table.head(top)
        fig.add_trace(go.Bar(x=[f"#{i + 1}" for i in range(len(shown))], y=shown["ratio"], name=name,
                             text=[("planted: " if w == planted else "") + w for w in shown["weight"]],
                             hovertemplate="%{text}<br>loss × %{y:.3g}<extra>" + name + "</extra>"))
    super_line(fig, f"super weight (loss × {SUPER:g})")
    fig.update_layout(title="zeroing one weight: loss ratio of the worst shortlisted weights", barmode="group",
                      yaxis_type="log", yaxis_title="loss without the weight / loss", xaxis_title="rank",
                      height=380, **LAYOUT)
    return fig


def scan_figure(ratios: dict[str, float]) -> go.Figure:
    """The worst single weight of each model searched."""
    fig = go.Figure(go.Bar(x=list(ratios), y=list(ratios.values()), text=[f"×{r:.3g}" for r in ratios.values()],
                           textposition="outside", marker_color=["#d62728" if r >= SUPER else "#7f7f7f"
                                                                 for r in ratios.values()]))
    super_line(fig, f"super weight (× {SUPER:g})")
    fig.update_layout(title="the worst single weight of each small model: loss ratio when zeroed", yaxis_type="log",
                      yaxis_title="loss ratio", height=380, **LAYOUT)
    return fig
