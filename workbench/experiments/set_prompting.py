"""Set-based prompting (McIlroy et al. 2024, "Order-Independence Without Fine Tuning").

Claim: a transformer's output depends on the order of items it reads, even when the items form a set. Change
only the attention mask (members of the set see the shared prefix, not each other) and the position indices
(every member starts at the same position), and the output after the set is the same under every order of its
members, with no retraining. Shown on an induction model: a BOS prefix, three random segments as the set, then
the start of one segment as the suffix, whose continuation the model predicts by induction.
"""

from __future__ import annotations

import copy

import plotly.graph_objects as go
import torch
from pydantic import Field

from workbench.experiments.base import Criterion
from workbench.experiments.induction import Induction, InductionConfig
from workbench.hooks.order import arrange, order_sensitivity, suffix_logits
from workbench.runs import Run
from workbench.tasks.base import set_prompt
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, attention_heatmap

PAPER = "McIlroy et al. 2024, Order-Independence Without Fine Tuning (set-based prompting)"


class SetPromptingConfig(InductionConfig):
    members: int = Field(3, ge=2, le=5, description="items in the set (every order is tried: members! orders)")
    member_len: int = Field(6, ge=3, description="tokens per member")
    prompts: int = Field(64, ge=1, description="prompts evaluated")
    retrain: TrainConfig | None = None  # the claim needs an induction model, not one with a concentrated circuit


class SetPrompting(Induction):
    name = "set-prompting"
    title = "Set-based prompting: order independence"
    paper = PAPER
    claim = "With the set mask and shared positions, every order of a set's members gives the same output."
    Config = SetPromptingConfig
    presets = {
        "smoke": {**{k: v for k, v in Induction.presets["smoke"].items() if not k.startswith("retrain.")},
                  "prompts": 4},
        "quick": {"train.steps": 1000},
        "full": {"train.steps": 3000},
    }
    criteria = [
        Criterion("with the set mask, every order gives the same logits (< 1e-5, float64)", "set.max_logit_change", "<",
                  1e-5, PAPER),
        Criterion("without it, reordering moves the logits ≥ 1000× more", "plain.max_logit_change", ">=", 1000,
                  PAPER, versus="set.max_logit_change"),
    ]
    shipped_snapshots = 4

    def set_parts(self, cfg: SetPromptingConfig, n: int | None = None):
        """BOS; `members` random segments; the suffix: the first two tokens of member 0, whose third token
        induction predicts (the target)."""
        n = n or cfg.prompts
        g = torch.Generator().manual_seed(cfg.eval_seed)
        members = [torch.randint(1, cfg.task.d_vocab, (n, cfg.member_len), generator=g) for _ in range(cfg.members)]
        prefix = torch.zeros(n, 1, dtype=torch.long)  # BOS
        return prefix, members, members[0][:, :2], members[0][:, 2]

    def evaluate(self, model, cfg: SetPromptingConfig) -> dict[str, float]:
        metrics = {k: v for k, v in super().evaluate(model, cfg).items()
                   if k in ("induction_score", "prev_token_score", "repeat_loss_ratio")}
        prefix, members, suffix, target = self.set_parts(cfg)
        # In float64: in float32 the orders differ by rounding alone (~1e-5 on logits of ~30 here), which would
        # neither test the claim nor reproduce across machines.
        exact = copy.deepcopy(model).double()
        for name, masked in (("set", True), ("plain", False)):
            table = order_sensitivity(exact, prefix, members, suffix, set_mask=masked)
            metrics[f"{name}.max_logit_change"] = float(table.max_logit_change.max())
            metrics[f"{name}.mean_kl"] = float(table.mean_kl.mean())
            metrics[f"{name}.accuracy"] = self.accuracy(model, prefix, members, suffix, target, masked)
        return metrics

    @staticmethod
    def accuracy(model, prefix, members, suffix, target, masked: bool) -> float:
        """How often the model predicts member 0's third token after its first two (members in given order)."""
        logits = suffix_logits(model, prefix, members, suffix, tuple(range(len(members))), masked)[:, -1]
        return float((logits.argmax(-1).cpu() == target).float().mean())

    @torch.no_grad()
    def figures(self, model, cfg: SetPromptingConfig, run: Run | None = None) -> dict[str, go.Figure]:
        prefix, members, suffix, _ = self.set_parts(cfg, 8)
        exact = copy.deepcopy(model).double()
        tables = {name: order_sensitivity(exact, prefix, members, suffix, set_mask=name == "set mask").iloc[1:]
                  for name in ("set mask", "plain causal mask")}  # row 0 is the reference order itself
        fig = go.Figure([go.Bar(x=t.order, y=t.max_logit_change.clip(lower=1e-16), name=name)
                         for name, t in tables.items()])
        fig.update_layout(title="largest logit change after the set when its members are reordered (vs 0 1 2; "
                                "float64)",
                          xaxis_title="order of the members", yaxis_title="max |Δ logit| (log scale)",
                          yaxis_type="log", barmode="group", **LAYOUT)
        tokens, segments = arrange(prefix[:1], [m[:1] for m in members], suffix[:1], tuple(range(len(members))))
        visible, positions = set_prompt(segments)
        causal = torch.ones_like(visible[0]).tril()
        labels = [f"{t} @{p}" for t, p in zip(tokens[0].tolist(), positions[0].tolist(), strict=True)]
        mask = attention_heatmap((visible[0] & causal).float(), labels, "which keys each query sees (token @position)")
        return {"order_sensitivity": fig, "set_mask": mask}
