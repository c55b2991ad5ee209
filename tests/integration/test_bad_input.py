"""The bad-input catalog: every case gives one line naming the field or file, a non-zero exit for
the CLI, and no half-written run directory. Cases are data; one parametrised test runs them all."""

import contextlib
import errno
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import workbench
from tests.conftest import REPO
from workbench.cli import main
from workbench.compile import Aggregate, Map, Select, compile_program, numerical, tokens
from workbench.hooks.attention import attention_patterns
from workbench.hooks.circuits import ablated, acdc, edge_attribution, logit_diff
from workbench.hooks.icl import probe_by_layer
from workbench.hooks.order import order_sensitivity
from workbench.models import ModelConfig, build_model
from workbench.runs import list_runs
from workbench.tasks import parse_token_ids
from workbench.tasks.base import set_prompt

SHIPPED = REPO / "data" / "induction"


@dataclass
class Case:
    id: str
    surface: str  # "cli" | "api" | "form"
    action: object  # (tmp: Path, monkeypatch) -> None; must fail
    message: str  # must appear in the one-line error
    leaves_run: bool = False  # NaN with a good checkpoint: the resumable run is kept on purpose


class Failed(Exception):
    pass


def cli(*argv):
    def action(tmp, monkeypatch):
        args = [a.replace("{tmp}", str(tmp)) for a in argv]
        if args[0] in ("run", "sweep"):
            args += ["--out", str(tmp / "runs")]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        if code == 0:
            raise AssertionError(f"exit 0 for {args}")
        lines = [line for line in err.getvalue().replace("\r", "\n").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], lines  # progress bars above, one error line last
        raise Failed(errors[0])
    return action


def saved(mutate):
    """A copy of the shipped model under tmp/saved, broken by `mutate(dir)`, evaluated via the CLI."""
    def action(tmp, monkeypatch):
        target = tmp / "saved"
        shutil.copytree(SHIPPED, target)
        mutate(target)
        cli("eval", str(target))(tmp, monkeypatch)
    return action


def edit_json(name, change):
    def mutate(d):
        data = json.loads((d / name).read_text())
        change(data)
        (d / name).write_text(json.dumps(data))
    return mutate


def truncate(d):
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 2])


def no_write_permission(tmp, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr("workbench.runs.tempfile.mkdtemp", denied)  # root ignores chmod, so simulate
    cli("run", "induction", "--smoke")(tmp, monkeypatch)


def disk_full(tmp, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("workbench.train.save_weights", full)
    cli("run", "induction", "--smoke")(tmp, monkeypatch)


def finished_run(tmp, monkeypatch):
    result = workbench.run("induction", mode="smoke", out=tmp / "done", progress_bar=False)
    cli("resume", result["run_dir"])(tmp, monkeypatch)


def ray_timeout(tmp, monkeypatch):
    def hangs(*a, **k):
        raise TimeoutError("timed out")
    monkeypatch.setattr("workbench.sweep.socket.create_connection", hangs)  # a black-holed host, simulated
    cli("sweep", "induction", "--smoke", "--grid", "train.lr=1e-3", "--address", "127.0.0.1:6379")(tmp, monkeypatch)


def corrupt_result(tmp, monkeypatch):
    result = workbench.run("induction", mode="smoke", out=tmp / "other", progress_bar=False)
    (Path(result["run_dir"]) / "result.json").write_text('{"passed": tru')
    cli("runs", "--out", str(tmp / "other"))(tmp, monkeypatch)


def model_call(tokens):
    def action(tmp, monkeypatch):
        build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8))(tokens)
    return action


def form(text):
    return lambda tmp, monkeypatch: parse_token_ids(text, d_vocab=64, n_ctx=64)


CASES = [
    Case("unknown experiment", "cli", cli("run", "inducton", "--smoke"), "unknown experiment 'inducton'"),
    Case("unknown --set key", "cli", cli("run", "induction", "--set", "model.n_layrs=3"),
         "unknown key 'n_layrs'"),
    Case("mistyped section", "cli", cli("run", "induction", "--set", "modle.n_layers=3"), "unknown key 'modle'"),
    Case("wrong type int", "cli", cli("run", "induction", "--set", "model.n_layers=three"), "model.n_layers"),
    Case("wrong type bool", "cli", cli("run", "induction", "--set", "model.tied_embeddings=maybe"),
         "model.tied_embeddings"),
    Case("value not a section", "cli", cli("run", "induction", "--set", "seed.x=1"),
         "'seed' is a value, not a section"),
    Case("negative size", "cli", cli("run", "induction", "--set", "model.d_model=-8"), "model.d_model"),
    Case("zero size", "cli", cli("run", "induction", "--set", "train.batch_size=0"), "train.batch_size"),
    Case("d_model not divisible", "cli", cli("run", "induction", "--set", "model.d_model=30"),
         "model.d_model=30 is not divisible by model.n_heads=4"),
    Case("sequence longer than n_ctx", "cli", cli("run", "induction", "--set", "task.seq_len=200",
                                                  "--set", "task.max_segment=50"), "exceeds model.n_ctx"),
    Case("unknown choice", "cli", cli("run", "induction", "--set", "model.positional=sinusoid"),
         "model.positional"),
    Case("negative seed", "cli", cli("run", "induction", "--seed", "-1"), "seed"),
    Case("seed out of range", "cli", cli("run", "induction", "--seed", str(2**64)), "seed"),
    Case("--set without =", "cli", cli("run", "induction", "--set", "nokey"), "expected key=value"),
    Case("eval missing directory", "cli", cli("eval", "{tmp}/nowhere"), "not a run directory"),
    Case("zero-byte safetensors", "cli", saved(lambda d: (d / "model.safetensors").write_bytes(b"")), "0 bytes"),
    Case("truncated safetensors", "cli", saved(truncate), "not a valid safetensors file"),
    Case("missing safetensors", "cli", saved(lambda d: (d / "model.safetensors").unlink()), "weights file not found"),
    Case("weights do not match config", "cli",
         saved(edit_json("config.json", lambda c: c["config"]["model"].update(d_model=128))),
         "weights do not match the config"),
    Case("newer schema version", "cli", saved(edit_json("config.json", lambda c: c.update(schema_version=99))),
         "schema_version 99 is not supported"),
    Case("corrupt config.json", "cli", saved(lambda d: (d / "config.json").write_text("{'not': json")),
         "not valid JSON"),
    Case("pickle instead of safetensors", "cli",
         saved(lambda d: (d / "model.safetensors").write_bytes(b"\x80\x04\x95\x00cos\nsystem\n")),
         "not a valid safetensors file"),
    Case("resume a finished run", "cli", finished_run, "already finished"),
    Case("corrupt result.json", "cli", corrupt_result, "result.json: result is not valid JSON"),
    Case("resume a non-run", "cli", cli("resume", "{tmp}"), "config.json"),
    Case("report of a run that has not finished", "cli", cli("report", "{tmp}"),
         "no result.json; a report needs a finished run"),
    Case("no write permission", "cli", no_write_permission, "cannot create a run here (Permission denied)"),
    Case("disk full on checkpoint", "cli", disk_full, "checkpoint write failed (No space left on device)"),
    Case("NaN loss keeps last good checkpoint", "cli",
         cli("run", "induction", "--smoke", "--set", "train.lr=1e30", "--set", "train.checkpoint_every=1",
             "--set", "train.warmup_steps=0"),
         "loss became nan at step 2; training stopped, last good checkpoint kept", leaves_run=True),
    Case("unreachable Ray --address", "cli",
         cli("sweep", "induction", "--smoke", "--grid", "train.lr=1e-3", "--address", "127.0.0.1:1"),
         "--address 127.0.0.1:1: no Ray cluster reachable (Connection refused"),
    Case("Ray --address times out", "cli", ray_timeout, "no Ray cluster reachable (timed out, waited up to 5 s)"),
    Case("a halting threshold outside (0, 1)", "cli",
         cli("run", "universal", "--smoke", "--set", "variants.act.model.halt_threshold=1.5"),
         "model.halt_threshold=1.5: the halting threshold (1 − ε) must lie in (0, 1)"),
    Case("a scaling sweep over one size", "cli", cli("sweep", "scaling", "--smoke", "--grid", "variant=d32L1"),
         "a fit of L(N) needs ≥ 3 model sizes at the largest token budget; got 1 (d32L1)"),
    Case("a sweep over a variant that does not exist", "cli",
         cli("sweep", "scaling", "--smoke", "--grid", "variant=d99L9"), "--grid variant: d99L9 unknown"),
    Case("--grid without values", "cli", cli("sweep", "induction", "--grid", "train.lr"), "expected key=v1,v2"),
    Case("unknown --grid key", "cli", cli("sweep", "induction", "--smoke", "--grid", "model.n_layrs=1,2"),
         "unknown key 'n_layrs'"),
    Case("unknown mode", "api", lambda t, m: workbench.run("induction", mode="fast"), "mode 'fast' unknown"),
    Case("token ids outside vocab", "api", model_call(torch.tensor([[3, 25]])), "model.d_vocab=20"),
    Case("sequence longer than n_ctx (api)", "api", model_call(torch.zeros(1, 9, dtype=torch.long)),
         "exceeds model.n_ctx=8"),
    Case("load_model on a file", "api", lambda t, m: workbench.load_model(SHIPPED / "result.json"),
         "not a run directory"),
    Case("layer out of range", "api", lambda t, m: attention_patterns(workbench.load_model(SHIPPED),
                                                                      torch.zeros(1, 4, dtype=torch.long), [5]),
         "layer 5 out of range"),
    Case("task pool M ≤ 0", "cli", cli("run", "icl-linear", "--smoke", "--set", "task.M=0"),
         "task.M: Input should be greater than or equal to 1"),
    Case("task wider than the read-in", "cli", cli("run", "icl-linear", "--smoke", "--set", "task.d=8"),
         "the task's tokens are 9 wide, so it needs model.d_input=9"),
    Case("more examples than the context holds", "cli",
         cli("run", "icl-linear", "--smoke", "--set", "task.n_points=12"),
         "task.seq_len=24 (tokens a sequence) exceeds model.n_ctx=22"),
    Case("probe at a hook point that does not exist", "api",
         lambda t, m: probe_by_layer(workbench.load_model(SHIPPED), torch.zeros(4, 6, dtype=torch.long),
                                     torch.zeros(4, 1), torch.zeros(4, 6, dtype=torch.bool),
                                     hook="blocks.{layer}.hook_resid_later"),
         "hook point 'blocks.0.hook_resid_later' does not exist"),
    Case("variant that does not exist", "api", lambda t, m: workbench.load_model(SHIPPED, variant="rotary"),
         "variant 'rotary' unknown"),
    Case("bidirectional next-token objective", "cli",
         cli("run", "icl-markov", "--smoke", "--set", "model.mask=bidirectional"), "lets position i read its own"),
    Case("circuit: a node that does not exist", "cli", cli("circuit", str(SHIPPED), "--path", "L0H9:L1H0.k"),
         "sender 'L0H9' is not in the circuit graph"),
    Case("circuit: a path without a receiver", "cli", cli("circuit", str(SHIPPED), "--path", "L0H2"),
         "write each as SENDER:RECEIVER"),
    Case("circuit: ACDC threshold outside [0, 1]", "cli",
         cli("circuit", str(SHIPPED), "--method", "acdc", "--threshold", "1.5"), "threshold=1.5"),
    Case("circuit: EAP-IG with 0 steps", "cli", cli("circuit", str(SHIPPED), "--steps", "0"), "ig_steps=0"),
    Case("circuit: a model without circuit prompts", "cli", cli("circuit", str(REPO / "data" / "icl-linear")),
         "defines no clean/corrupted prompts"),
    Case("circuit: clean and corrupted of different lengths", "api",
         lambda t, m: edge_attribution(workbench.load_model(SHIPPED), torch.zeros(2, 8, dtype=torch.long),
                                       torch.zeros(2, 7, dtype=torch.long), logit_diff(1, 2)), "same shape"),
    Case("circuit: a metric that returns a non-scalar", "api",
         lambda t, m: acdc(workbench.load_model(SHIPPED), torch.zeros(2, 8, dtype=torch.long),
                           torch.ones(2, 8, dtype=torch.long), lambda logits: logits[:, -1, 0]), "scalar"),
    Case("circuit: ablating a hook that does not exist", "api",
         lambda t, m: ablated(workbench.load_model(SHIPPED), ["blocks.0.attn.hook_resultt"]).__enter__(),
         "'blocks.0.attn.hook_resultt' does not exist"),
    Case("clipping with ζ ≤ γ", "cli",
         cli("run", "length-gen", "--smoke", "--set", "model.attention=clipped", "--set", "model.clip_zeta=-0.1"),
         "model.clip_zeta=-0.1 must exceed model.clip_gamma=-0.03"),
    Case("an option the variant's attention cannot serve", "cli",
         cli("run", "no-op-heads", "--smoke", "--set", "model.clip_gamma=-0.1"),
         "model.clip_gamma=-0.1 configures attention='clipped', but model.attention='softmax' would ignore it"),
    Case("task tokens beyond the model's vocabulary", "cli",
         cli("run", "length-gen", "--smoke", "--set", "model.d_vocab=20"),
         "the task uses 35 tokens; model.d_vocab=20 is too small"),
    Case("a Mamba model with an attention-only option", "cli",
         cli("run", "mamba", "--smoke", "--set", "model.positional=rotary"),
         "model.positional='rotary' configures attention, but every layer is a Mamba or MLP block"),
    Case("a Mamba state of size 0", "cli", cli("run", "mamba", "--smoke", "--set", "model.mamba_d_state=0"),
         "model.mamba_d_state"),
    Case("a chain of thought beyond the context", "cli",
         cli("run", "cot-parity", "--smoke", "--set", "task.n_bits=20"),
         "task.n_bits=20: the chain of thought makes sequences of 40 tokens, beyond model.n_ctx=32"),
    Case("an attention hook asked of a Mamba layer", "api",
         lambda t, m: build_model(ModelConfig(n_layers=1, d_model=8, block="mamba", n_ctx=8, d_vocab=8)
                                  ).run_with_cache(torch.zeros(1, 4).long(), names_filter="blocks.0.attn.hook_pattern"),
         "hook 'blocks.0.attn.hook_pattern': layer 0 is a 'mamba' block, which has no such hook"),
    Case("a probe offset beyond the context", "cli",
         cli("run", "future-lens", "--smoke", "--set", "score_from=62"),
         "score_from=62: a probe 3 tokens ahead needs positions before task.seq_len=64"),
    Case("a sliding window without a causal mask", "cli",
         cli("run", "attention-spans", "--smoke", "--set", "model.window=8", "--set", "model.mask=bidirectional"),
         "model.window=8 needs model.mask='causal'"),
    Case("a Dyck string of odd length", "cli", cli("run", "structural-probe", "--smoke", "--set", "task.length=47"),
         "task.length=47 must be even"),
    Case("a RASP program the compiler cannot type", "api",
         lambda t, m: compile_program(Map(lambda v: v, numerical(Aggregate(Select(tokens, tokens, "EQ"), numerical(
             Map(lambda x: 2.5, tokens))))), ["a", "b"], 3), "no finite value set the compiler can enumerate"),
    Case("set members that overlap", "api", lambda t, m: set_prompt(torch.tensor([[0, 1, 2, 1, 0]])),
         "a member's tokens are split by another member's"),
    Case("set prompt longer than the context", "api",
         lambda t, m: order_sensitivity(build_model(ModelConfig(n_ctx=8, d_vocab=20)), torch.zeros(1, 1).long(),
                                        [torch.ones(1, 3).long()] * 2, torch.ones(1, 2).long()),
         "exceeds model.n_ctx=8"),
    Case("empty prompt", "form", form(""), "prompt: empty"),
    Case("blank prompt", "form", form("  \t "), "prompt: empty"),
    Case("non-UTF-8 prompt", "form", form(b"\xc3\x28 1 2"), "not valid UTF-8"),
    Case("non-integer token", "form", form("1 2 banana"), "'banana' is not a token id"),
    Case("token outside vocabulary", "form", form("1 64"), "outside the vocabulary"),
    Case("prompt longer than n_ctx", "form", form("1 " * 65), "exceed the model's n_ctx=64"),
]


def test_the_catalog_is_big_enough():
    assert len(CASES) >= 25 and {c.surface for c in CASES} == {"cli", "api", "form"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.surface}: {c.id}")
def test_bad_input(case, tmp_path, monkeypatch):
    with pytest.raises(Exception) as info:
        case.action(tmp_path, monkeypatch)
    message = str(info.value)
    assert isinstance(info.value, Failed | ValueError), f"{type(info.value).__name__}: {message}"
    assert message.count("\n") == 0 and message, message
    assert case.message in message
    if case.surface == "cli":
        assert message.startswith("error: ")
    runs = list_runs(Path(tmp_path) / "runs")
    if case.leaves_run:
        [run] = runs
        assert run.status == "interrupted" and "step-1.safetensors" in message
    else:
        assert runs == []
