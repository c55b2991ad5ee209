"""Chain of thought makes parity learnable (Feng et al. 2023, "Towards Revealing the Mystery behind Chain of
Thought"; Merrill & Sabharwal 2024, "The Expressive Power of Transformers with Chain of Thought").

Claim: a fixed-depth transformer asked for the parity of n bits in one step does not learn it; the same model
writing the running parities first (each step: the previous parity XOR one bit) learns it quickly. Two variants
of one run, `direct` and `cot`, the same model. The chain is scored by generation: the model writes its own
chain greedily from "=" and only its last token counts. The attention figure shows how: at each chain step a
head reads the next bit, at a fixed offset.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.attention import attention_patterns
from workbench.models import ModelConfig
from workbench.runs import Run
from workbench.tasks.parity import Parity, ParityConfig
from workbench.train import TrainConfig
from workbench.viz import LAYOUT, attention_heatmap, compare_curves

PAPER = "Feng et al. 2023, Towards Revealing the Mystery behind Chain of Thought; Merrill & Sabharwal 2024"
COLOURS = {"direct": "#7f7f7f", "cot": "#1f77b4"}


class CoTParityConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_ctx=32, d_vocab=3)
    task: ParityConfig = ParityConfig()
    train: TrainConfig = TrainConfig(steps=1000, batch_size=64, lr=1e-3, warmup_steps=50, eval_every=50,
                                     snapshots=8)
    variants: dict[str, dict] = {"direct": {}, "cot": {"task": {"cot": True}}}
    eval_batch: int = Field(2048, ge=1, description="held-out bit strings")

    @model_validator(mode="after")
    def _fits_model(self) -> CoTParityConfig:
        chain = self.task.model_copy(update={"cot": True})
        if chain.seq_len > self.model.n_ctx:
            raise ValueError(f"task.n_bits={self.task.n_bits}: the chain of thought makes sequences of "
                             f"{chain.seq_len} tokens, beyond model.n_ctx={self.model.n_ctx}; raise model.n_ctx to "
                             f"{chain.seq_len} or use fewer bits")
        return self


class CoTParity(Experiment):
    name = "cot-parity"
    title = "Chain of thought: parity in steps, not at once"
    paper = PAPER
    family = "expressivity"
    claim = "The same small model fails to answer parity directly but learns it when it writes the running parities."
    Config = CoTParityConfig
    presets = {
        "smoke": {"train.steps": 20, "train.batch_size": 16, "train.warmup_steps": 5, "train.eval_every": 10,
                  "eval_batch": 64},
        "quick": {},
        "full": {"train.steps": 3000, "task.n_bits": 32, "model.n_ctx": 64},
    }
    criteria = [
        Criterion("chain of thought: the generated answer is right (≥ 0.95 after 1000 steps)", "cot.accuracy", ">=",
                  0.95, PAPER),
        Criterion("direct: the answer stays near chance (≤ 0.60)", "direct.accuracy", "<=", 0.60, PAPER),
    ]
    shipped_snapshots = 4

    def task(self, cfg: CoTParityConfig) -> Parity:
        return Parity(cfg.task)

    @torch.no_grad()
    def answers(self, model, cfg: CoTParityConfig, batch) -> torch.Tensor:
        """The model's answers: its prediction at "=", or the last token of the chain it generates itself."""
        n = cfg.task.n_bits
        prompt = batch.tokens[:, : n + 1]
        if not cfg.task.cot:
            return model(prompt)[:, -1].argmax(-1)
        return model.generate(prompt, n)[:, -1]

    @torch.no_grad()
    def evaluate(self, model, cfg: CoTParityConfig) -> dict[str, float]:
        batch = self.eval_batch(cfg).to(device_of(model))
        metrics = {"accuracy": float((self.answers(model, cfg, batch) == batch.meta["parity"]).float().mean())}
        if cfg.task.cot:  # teacher-forced: each chain step given the true chain before it
            steps = model(batch.tokens).argmax(-1)[:, cfg.task.n_bits:] == batch.targets[:, cfg.task.n_bits:]
            metrics["step_accuracy"] = float(steps.float().mean())
        return metrics

    @torch.no_grad()
    def figures(self, model, cfg: CoTParityConfig, run: Run | None = None) -> dict[str, go.Figure]:
        if not cfg.task.cot:
            return {}
        batch = self.eval_batch(cfg, 256).to(device_of(model))
        patterns = attention_patterns(model, batch.tokens)
        names = [f"b{i + 1}" for i in range(cfg.task.n_bits)] + ["="] + [
            f"p{i + 1}" for i in range(cfg.task.n_bits - 1)]
        # the head whose chain positions attend most to the bit they need (the one after the parity so far)
        n = cfg.task.n_bits
        chain = torch.arange(n, 2 * n, device=batch.tokens.device)
        layer, head = max(((layer, head) for layer in patterns for head in range(model.cfg.n_heads)),
                          key=lambda lh: float(patterns[lh[0]][:, lh[1], chain, chain - n].mean()))
        title = f"chain of thought: layer {layer} head {head}, mean over 256 strings (p_k reads bit k+1)"
        return {"attention": attention_heatmap(patterns[layer][:, head].mean(0), names, title)}

    def figures_variants(self, models, cfg: CoTParityConfig, run: Run | None = None) -> dict[str, go.Figure]:
        scores = {name: s["accuracy"] for name, s in self.variant_scores(models, cfg).items()}
        fig = go.Figure(go.Bar(x=list(scores), y=list(scores.values()), text=[f"{v:.3f}" for v in scores.values()],
                               textposition="outside", marker_color=[COLOURS.get(n, "#1f77b4") for n in scores]))
        fig.add_hline(y=0.5, line_dash="dot")  # labelled in the subtitle: on the plot, the bars hide a label
        fig.update_layout(title=f"parity of {cfg.task.n_bits} bits: answer accuracy (chain scored by generation)"
                          "<br><sup>dotted: chance, 0.5</sup>",
                          yaxis_range=[0, 1.1], yaxis_title="held-out accuracy", height=360, **LAYOUT)
        figs = {"accuracy": fig}
        if run is not None:
            figs["training"] = compare_curves({n: run.variant(n).metrics() for n in models}, ["loss", "accuracy"])
        return figs | super().figures_variants(models, cfg, run)
