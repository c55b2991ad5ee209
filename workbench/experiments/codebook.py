"""Codebook features on TokFSM (Tamkin et al. 2023, "Codebook Features: Sparse and Discrete Interpretability
for Neural Networks").

Claim: a transformer trained on digit-written walks of a 100-state machine, then given k = 1 codebooks on
every attention head and MLP, stays near the optimal loss; its MLP codebooks assign a code to nearly every
machine state, with a precision that no single neuron reaches at the same recall; and swapping a position's
MLP codes for another state's makes the network predict as if it were in that state. The base model
(pretraining only) and the codebook model are two variants of one run.

Recipe: the paper trains the model with its codebooks. Here the pretrained model is frozen and only the codes
learn (`train_model`); on our CPU budget training both drifted (see the `finetune` comment). Quick
reproduction: loss gap 0.070, 100 state codes at precision 0.965 vs 0.565 for the best neuron, swap JSD 0.226.
"""

from __future__ import annotations

import shutil

import pandas as pd
import plotly.graph_objects as go
import torch
from pydantic import Field, model_validator

from workbench.device import device_of
from workbench.experiments.base import Criterion, Experiment, HeldOutConfig
from workbench.hooks.codebook import (
    CodebookSpec,
    attach,
    code_ids,
    codebook_mse,
    forced_codes,
    js_divergence,
)
from workbench.hooks.features import code_table, matched_unit_baseline
from workbench.hooks.sae import TopKSAE, train_sae
from workbench.models import ModelConfig
from workbench.models.io import load_state, load_weights, read_metadata, save_weights
from workbench.runs import Run
from workbench.tasks.tokfsm import TokFSM, TokFSMConfig
from workbench.train import Phase, TrainConfig, task_loss
from workbench.viz import training_curves

PAPER = "Tamkin et al. 2023, Codebook Features"
STATE_PRECISION = 0.5  # a code is a state code when most of its firings are on that state's second digit


class CodebookExperimentConfig(HeldOutConfig):
    model: ModelConfig = ModelConfig(n_layers=4, d_model=128, n_heads=4, d_mlp=512, positional="rotary",
                                     d_vocab=11, n_ctx=128)
    task: TokFSMConfig = TokFSMConfig(seq_digits=63)
    train: TrainConfig = TrainConfig(steps=2500, batch_size=64, lr=1e-3, warmup_steps=100, min_lr_ratio=0.1,
                                     eval_every=500)
    # Calibrated from the step-2500 model (loss gap 0.009; 0.468 right after insertion, mostly from the MLP
    # codebooks). Training the model's own weights beside the codes drifted: gradients that skip the codebooks
    # moved the activations off their codes (gap 1.06 after 600 steps at lr 1e-4, live MLP codes 853 → 539);
    # straight through to the input blew the activations up (reconstruction term 1e4). With the model frozen,
    # 400 steps gave a gap of 0.356 at lr 1e-4, 0.208 at 1e-3, 0.160 at 3e-3.
    finetune: TrainConfig = TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=20, min_lr_ratio=0.1,
                                        eval_every=500)
    train_model: bool = Field(False, description="fine-tune the model's weights with the codes (False: only the "
                                                 "codes learn, the pretrained model is frozen)")
    codebooks: bool = Field(True, description="fine-tune with codebooks after pretraining (False: the base model)")
    codes: int = Field(1000, ge=1, description="C, codes per codebook")
    k: int = Field(1, ge=1, description="codes active at once")
    mse_weight: float = Field(1.0, ge=0, description="λ of the reconstruction term")
    # codebook first: the base model is its pretraining phase, taken from its phase-boundary snapshot
    variants: dict[str, dict] = {"codebook": {}, "base": {"codebooks": False}}
    swaps: int = Field(500, ge=1, description="state transitions in the code-swap intervention")
    sae_steps: int = Field(2000, ge=1, description="TopK SAE training steps (same C and k, same activations)")
    sae_sequences: int = Field(512, ge=1, description="sequences whose activations the SAE is fitted to")

    @model_validator(mode="after")
    def _fits_model(self) -> CodebookExperimentConfig:
        if self.model.d_vocab != self.task.d_vocab:
            raise ValueError(f"model.d_vocab={self.model.d_vocab} must equal the task's {self.task.d_vocab} "
                             f"(task.base={self.task.base} digits + BOS)")
        CodebookSpec(codes=self.codes, k=self.k).check("codebook")
        return self


def codebook_sites(cfg: CodebookExperimentConfig) -> dict[str, CodebookSpec]:
    """Tamkin's placement: one codebook per head (on hook_z, before W_O) and one after each MLP."""
    sites = {}
    for layer in range(cfg.model.n_layers):
        sites[f"blocks.{layer}.attn.hook_z"] = CodebookSpec(codes=cfg.codes, k=cfg.k, per_head=True)
        sites[f"blocks.{layer}.hook_mlp_out"] = CodebookSpec(codes=cfg.codes, k=cfg.k)
    return sites


class Codebook(Experiment):
    name = "codebook"
    title = "Codebook features on TokFSM"
    paper = PAPER
    family = "codebook"
    claim = "k = 1 codebooks keep the loss near optimal and give MLP codes for FSM states, causally."
    Config = CodebookExperimentConfig
    artifacts = ("sae.safetensors",)  # the comparison SAE, fitted after training (codebook variant)
    # The finding is in the final codes, not in a replay of pretraining; the two models are 10 MB already.
    shipped_snapshots = 0
    presets = {
        "smoke": {"train.steps": 20, "finetune.steps": 20, "train.eval_every": 0, "finetune.eval_every": 0,
                  "codes": 64, "eval_batch": 16, "swaps": 20, "sae_steps": 20, "sae_sequences": 16,
                  "task.seq_digits": 31, "model.n_layers": 2,
                  "model.d_model": 32, "model.d_mlp": 64},
        "quick": {},
        "full": {"task.seq_digits": 127, "train.steps": 20000, "finetune.steps": 10000, "codes": 10000},
    }
    criteria = [
        Criterion("codebook model within 0.15 nats of the optimum", "codebook.loss_gap", "<=", 0.15, PAPER),
        Criterion("≥ 90 distinct state codes in an MLP codebook", "codebook.mlp_state_codes", ">=", 90, PAPER),
        Criterion("state codes are precise", "codebook.state_code_precision", ">=", 0.8, PAPER),
        Criterion("25 points above the recall-matched best neuron", "codebook.precision_over_neurons", ">=", 0.25,
                  PAPER),
        Criterion("swapping MLP codes moves predictions to the new state", "codebook.swap_jsd", "<=", 0.5, PAPER),
    ]

    def task(self, cfg: CodebookExperimentConfig) -> TokFSM:
        return TokFSM(cfg.task)

    def phases(self, cfg: CodebookExperimentConfig) -> list[Phase]:
        pretrain = Phase("pretrain", cfg.train)
        if not cfg.codebooks:
            return [pretrain]

        def insert_codebooks(model) -> None:
            g = torch.Generator().manual_seed(cfg.seed + 7)  # seeded: a resumed run inserts the same codes
            if not cfg.train_model:
                model.requires_grad_(False)  # the codes attached below are the only parameters that learn
            tokens = self.task(cfg).sample(32, g).tokens
            for name, spec in codebook_sites(cfg).items():
                _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n, k=name: n == k)
                attach(model, name, spec, activations=cache[name], generator=g)

        return [pretrain, Phase("codebook", cfg.finetune, setup=insert_codebooks)]

    def train(self, cfg: CodebookExperimentConfig, run: Run | None, callback=None, progress_bar: bool = True):
        """The base variant is exactly the codebook variant's pretraining (same seed, data, schedule; the
        reconstruction term is 0 without codebooks): when that variant has run, take its snapshot at the phase
        boundary and its log up to there instead of training the same steps again."""
        if cfg.codebooks:
            model = super().train(cfg, run, callback, progress_bar)
            if run is not None:
                sae, site = self.fit_sae(model, cfg, progress_bar)
                save_weights(sae.state_dict(), run.path / "sae.safetensors",
                             {"site": site, "latents": str(sae.latents), "k": str(sae.k)})
            return model
        twin = Run(run.path.parent / "codebook") if run is not None and run.path.parent.name == "variants" else None
        snapshots = twin.snapshots() if twin is not None else {}
        if cfg.train.steps not in snapshots:
            return super().train(cfg, run, callback, progress_bar)
        boundary = snapshots[cfg.train.steps]
        model = self.build(cfg)
        (run.path / "snapshots").mkdir(parents=True, exist_ok=True)
        (run.path / "metrics.jsonl").unlink(missing_ok=True)  # a copy interrupted by a kill starts over
        load_state(model, load_weights(boundary), boundary)
        for row in twin.metrics():
            if row["step"] <= cfg.train.steps:
                run.log(row)
        for step, path in snapshots.items():
            if step <= cfg.train.steps:
                shutil.copyfile(path, run.path / "snapshots" / path.name)
        return model

    # --- the SAE comparison ---
    def fit_sae(self, model, cfg: CodebookExperimentConfig, progress_bar: bool = True) -> tuple[TopKSAE, str]:
        """A TopK SAE with the codebook's C and k, fitted to what the MLP codebook with the most state codes
        reads (its `hook_input`), on fresh training sequences."""
        batch = self.task(cfg).sample(cfg.sae_sequences, torch.Generator().manual_seed(cfg.seed + 11))
        tables = self.state_codes(model, cfg, batch, neurons=False)
        site = f"blocks.{max(tables, key=lambda layer: len(tables[layer]))}.hook_mlp_out"
        inputs = self.site_inputs(model, batch.tokens, site)
        return train_sae(inputs.flatten(0, 1), cfg.codes, cfg.k, steps=cfg.sae_steps, seed=cfg.seed,
                         progress_bar=progress_bar), site

    @staticmethod
    @torch.no_grad()
    def site_inputs(model, tokens, site: str) -> torch.Tensor:
        name = f"{site}.codebook.hook_input"
        _, cache = model.run_with_cache(tokens.to(device_of(model)), names_filter=lambda n: n == name)
        return cache[name].cpu()

    @staticmethod
    def load_sae(path) -> tuple[TopKSAE, str]:
        meta = read_metadata(path)
        state = load_weights(path)
        sae = TopKSAE(state["W_enc"].shape[0], int(meta["latents"]), int(meta["k"]))
        load_state(sae, state, path)
        return sae.eval(), meta["site"]

    @torch.no_grad()
    def comparison(self, model, cfg: CodebookExperimentConfig, sae: TopKSAE, site: str) -> pd.DataFrame:
        """Codes, SAE latents and neurons at one MLP site, measured alike on held-out sequences: how many
        states have a unit with precision ≥ 0.5, their mean precision and recall; and for the codes and the
        SAE, the share of the loss they recover when they alone stand in for the MLP output there
        (0: as bad as zeroing it, 1: as good as the MLP output itself)."""
        batch = self.eval_batch(cfg)
        layer = int(site.split(".")[1])
        labels = self.state_labels(batch).flatten()
        inputs = self.site_inputs(model, batch.tokens, site).flatten(0, 1)
        latents = sae.encode(inputs)
        fired = latents.max(-1).values > 0
        ids = torch.where(fired, latents.argmax(-1), sae.latents)[:, None]  # id `latents` = no latent fired
        sae_table = code_table(ids, labels, sae.latents + 1, cfg.task.states)
        sae_table = sae_table[(sae_table.code < sae.latents) & (sae_table.precision >= STATE_PRECISION)]
        sae_table = sae_table.sort_values("precision", ascending=False).drop_duplicates("label")
        codes = self.eval_state_codes(model, cfg)[layer]
        neurons = codes.assign(precision=codes.unit_precision)  # each state code's recall-matched best neuron
        losses = self.spliced_losses(model, batch, site, sae)
        span = losses["zero"] - losses["mlp output"]
        rows = [("codes", codes, losses["codes"]), ("SAE latents", sae_table, losses["SAE"]),
                ("neurons (recall-matched)", neurons[neurons.precision >= STATE_PRECISION], None)]
        return pd.DataFrame([{"units": name, "states with a unit": len(t),
                              "mean precision": float(t.precision.mean()) if len(t) else 0.0,
                              "mean recall": float(t.recall.mean()) if len(t) else 0.0,
                              "loss recovered": None if loss is None else (losses["zero"] - loss) / span}
                             for name, t, loss in rows])

    @torch.no_grad()
    def spliced_losses(self, model, batch, site: str, sae: TopKSAE) -> dict[str, float]:
        """Cross-entropy with the site's output as the codebook makes it, as the SAE reconstructs the MLP output,
        as the MLP output itself (no bottleneck there), and zeroed; the other codebooks stay in place."""
        batch, seen = batch.to(device_of(model)), {}

        def keep(x, hook):
            seen["x"] = x

        def swap(make):
            return lambda out, hook: make(seen["x"]).to(out.dtype)

        makers = {"SAE": lambda x: sae(x.cpu()).to(x.device), "mlp output": lambda x: x, "zero": torch.zeros_like}
        losses = {"codes": float(task_loss(model, batch))}
        for name, make in makers.items():
            with model.hooks(fwd_hooks=[(f"{site}.codebook.hook_input", keep), (site, swap(make))]):
                losses[name] = float(task_loss(model, batch))
        return losses

    def run_metrics(self, cfg: CodebookExperimentConfig, run: Run, models) -> dict[str, float]:
        """The SAE comparison, from the SAE the run fitted (absent in runs from before it existed)."""
        if not isinstance(models, dict) or "codebook" not in models:
            return {}
        path = run.variant("codebook").path / "sae.safetensors"
        if not path.exists():
            return {}
        sae, site = self.load_sae(path)
        table = self.comparison(models["codebook"], cfg.variant("codebook"), sae, site).set_index("units")
        return {"codebook.sae_state_latents": float(table.loc["SAE latents", "states with a unit"]),
                "codebook.sae_state_precision": float(table.loc["SAE latents", "mean precision"]),
                "codebook.sae_loss_recovered": float(table.loc["SAE latents", "loss recovered"]),
                "codebook.codes_loss_recovered": float(table.loc["codes", "loss recovered"])}

    def loss(self, cfg: CodebookExperimentConfig):
        def ce_plus_reconstruction(model, batch) -> dict[str, torch.Tensor]:
            ce = task_loss(model, batch)
            mse = codebook_mse(model).to(ce.device)
            return {"loss": ce + cfg.mse_weight * mse, "ce": ce, "mse": mse}
        return ce_plus_reconstruction

    # --- evaluation ---
    @torch.no_grad()
    def language_metrics(self, model, cfg: CodebookExperimentConfig, batch) -> dict[str, float]:
        logits = model(batch.inputs.to(device_of(model))).cpu()
        mask = batch.loss_mask
        ce = torch.nn.functional.cross_entropy(logits[mask], batch.targets[mask])
        accuracy = (logits.argmax(-1)[mask] == batch.targets[mask]).float().mean()
        optimum = self.task(cfg).optimum()
        return {"loss": float(ce), "accuracy": float(accuracy), "optimum_loss": optimum["loss"],
                "optimum_accuracy": optimum["accuracy"], "loss_gap": float(ce) - optimum["loss"]}

    @staticmethod
    def state_labels(batch) -> torch.Tensor:
        """Each token's state, on the digit that completes it (the last one); −1 elsewhere."""
        last = batch.meta["digit"] == batch.meta["digit"].max()
        return torch.where(last, batch.meta["state"], -1)

    def eval_state_codes(self, model, cfg: CodebookExperimentConfig) -> dict[int, pd.DataFrame]:
        """`state_codes` on the held-out batch, computed once for the metrics and the SAE comparison."""
        return self.memo("state codes", model, cfg, lambda: self.state_codes(model, cfg, self.eval_batch(cfg)))

    @torch.no_grad()
    def state_codes(self, model, cfg: CodebookExperimentConfig, batch, neurons: bool = True
                    ) -> dict[int, pd.DataFrame]:
        """Per MLP layer: for every state with a state code, its most precise code — beside the best neuron at
        the same recall, unless `neurons` is False."""
        names = [f"blocks.{layer}.hook_mlp_out.codebook.hook_codes" for layer in range(cfg.model.n_layers)]
        posts = [f"blocks.{layer}.mlp.hook_post" for layer in range(cfg.model.n_layers)] if neurons else []
        _, cache = model.run_with_cache(batch.inputs.to(device_of(model)),
                                        names_filter=lambda n: n in names or n in posts)
        labels = self.state_labels(batch).flatten()
        tables = {}
        for layer in range(cfg.model.n_layers):
            codes = cache[names[layer]].cpu().flatten(0, 1)[:, 0]  # [N k]
            table = code_table(codes, labels, cfg.codes, cfg.task.states)
            table = table[table.precision >= STATE_PRECISION].sort_values("precision", ascending=False)
            tables[layer] = table.drop_duplicates("label").reset_index(drop=True)  # the best code per state
            if neurons:
                tables[layer] = matched_unit_baseline(tables[layer], cache[posts[layer]].cpu().flatten(0, 1), labels)
        return tables

    @torch.no_grad()
    def swap_jsd(self, model, cfg: CodebookExperimentConfig, batch, tables: dict[int, pd.DataFrame]
                 ) -> float | None:
        """Force, at positions that complete a state s, every MLP layer's code for another state s′ in place of s's
        (with k codes active, the other k − 1 stay); the JSD of the next-token distribution from s′'s (Bayes) one,
        relative to the JSD before the swap."""
        task, g = self.task(cfg), torch.Generator().manual_seed(cfg.eval_seed + 1)
        coded = set.intersection(*(set(t.label) for t in tables.values()))  # states with a code in every layer
        labels = self.state_labels(batch)
        where = [(b, p) for b, p in (labels >= 0).nonzero().tolist() if int(labels[b, p]) in coded]
        if len(coded) < 2 or not where:
            return None  # no two states have a code in every MLP layer: nothing to swap
        picks = torch.randperm(len(where), generator=g)[: cfg.swaps].tolist()
        states = sorted(coded)
        code_of = {layer: dict(zip(t.label, t.code, strict=True)) for layer, t in tables.items()}
        rows, positions, targets = [], [], []
        for i in picks:
            b, p = where[i]
            source = int(labels[b, p])
            targets.append(states[(states.index(source) + 1 + int(torch.randint(len(states) - 1, (1,), generator=g)))
                                  % len(states)])
            rows.append(b)
            positions.append(p)
        rows, positions = torch.tensor(rows), torch.tensor(positions)
        wanted = torch.stack([self.next_digit_law(task, t) for t in targets])
        # causal: position p reads the same whole row or its first p + 1 tokens, so the swaps run as one batch,
        # each row forced at its own position only
        inputs = batch.inputs[rows].to(device_of(model))
        where_forced = torch.zeros(inputs.shape, dtype=torch.bool)
        where_forced[torch.arange(len(rows)), positions] = True
        logits, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("codebook.hook_codes"))
        sources, forced = labels[rows, positions].tolist(), {}
        for layer, ids in code_of.items():
            site = f"blocks.{layer}.hook_mlp_out"
            # of the k codes chosen there, s's own is replaced by s′'s (the best-matching one if s's is not chosen)
            chosen = cache[f"{site}.codebook.hook_codes"][where_forced.to(inputs.device)].cpu()  # [n group=1 k]
            for i, (source, target) in enumerate(zip(sources, targets, strict=True)):
                slot = (chosen[i, 0] == ids[source]).nonzero()
                chosen[i, 0, int(slot[0]) if len(slot) else 0] = ids[target]
            forced[site] = (where_forced, chosen)
        at = (torch.arange(len(rows)), positions)
        before = js_divergence(logits.cpu()[at].softmax(-1), wanted)
        with forced_codes(model, forced):
            after = js_divergence(model(inputs).cpu()[at].softmax(-1), wanted)
        return float(after.mean() / before.mean().clamp(min=1e-12))

    @staticmethod
    def next_digit_law(task: TokFSM, state: int) -> torch.Tensor:
        """The Bayes law of the next token after a completed state: the first digits of its successors."""
        law = torch.zeros(task.d_vocab)
        law.scatter_add_(0, task.spelling[task.successors[state], 0], torch.full((task.cfg.out_edges,), 1.0))
        return law / law.sum()

    @torch.no_grad()
    def code_report(self, model, cfg: CodebookExperimentConfig, site: str, group: int = 0):
        """Every code of one codebook that fires on the held-out sequences — frequency, best state, precision,
        recall — with the chosen ids `[batch pos group k]` and the tokens they were read from."""
        batch = self.eval_batch(cfg)
        ids = code_ids(model, batch.tokens, [site])[site]
        table = code_table(ids[:, :, group].flatten(0, 1), self.state_labels(batch).flatten(), cfg.codes,
                           cfg.task.states)
        return table.rename(columns={"label": "state"}), ids, batch.tokens

    def evaluate(self, model, cfg: CodebookExperimentConfig) -> dict[str, float]:
        batch = self.eval_batch(cfg)
        metrics = self.language_metrics(model, cfg, batch)
        if not cfg.codebooks:
            return metrics
        tables = self.eval_state_codes(model, cfg)
        best = max(tables, key=lambda layer: len(tables[layer]))
        table = tables[best]
        metrics |= {f"state_codes_layer{layer}": float(len(t)) for layer, t in tables.items()}
        metrics |= {"mlp_state_codes": float(len(table)), "state_code_layer": float(best),
                    "state_code_precision": float(table.precision.mean()) if len(table) else 0.0,
                    "state_code_recall": float(table.recall.mean()) if len(table) else 0.0,
                    "neuron_precision_at_recall": float(table.unit_precision.mean()) if len(table) else 0.0}
        metrics["precision_over_neurons"] = metrics["state_code_precision"] - metrics["neuron_precision_at_recall"]
        swap = self.swap_jsd(model, cfg, batch, tables)
        return metrics if swap is None else metrics | {"swap_jsd": swap}

    def evaluate_during_training(self, model, cfg: CodebookExperimentConfig) -> dict[str, float]:
        return self.language_metrics(model, cfg, self.eval_batch(cfg, 64))

    def figures(self, model, cfg: CodebookExperimentConfig, run: Run | None = None) -> dict[str, go.Figure]:
        figs = {}
        if run is not None and run.metrics():
            figs["training"] = training_curves(run.metrics(), ["loss", "ce", "mse", "loss_gap"])
        return figs
