"""`workbench bench`: how fast workbench's hooked model trains and caches, next to plain PyTorch.

Speed lives here and never in unit tests: a 2-core CI box shared with other jobs is far too noisy for
timing thresholds. Everything is measured in one process, side by side, with warm-up and several
repetitions, implementations interleaved so that background load hits them alike; results carry
median, min, max and IQR, the machine, and the targets with pass/fail.

    result = run_bench(quick=True, out="data/bench.json")   # what CI runs (seconds)
    print(format_table(result))
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench.models import ModelConfig, build_model
from workbench.runs import data_root, home, write_json

SCHEMA = "workbench-bench-1"
D_VOCAB, N_CTX = 64, 256
OURS_PLAIN_TARGET = 1.05  # hook points that nobody hooks should cost ≤ 5 % of a training step
CACHE_TARGET = 1.1  # caching one activation should cost ≤ 10 % over a plain forward
CODEBOOK_TARGET = 1.5  # one MLP codebook of 1000 codes should cost ≤ 1.5× a plain training step
CODEBOOK_CODES = 1000
EAP_TARGET, EAP_IG_TARGET, IG_STEPS = 2.0, 10.0, 10  # seconds on 2 cores, 2-layer model (issue #12)
EAP_SHAPE = (32, 64)  # clean/corrupted pairs × tokens: the induction-circuit experiment's


@dataclass(frozen=True)
class BenchConfig:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def model_config(self) -> ModelConfig:
        # learned positions + LayerNorm: the same architecture as the plain reference and the bridge
        return ModelConfig(n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_mlp=self.d_mlp,
                           d_vocab=D_VOCAB, n_ctx=N_CTX, positional="learned", norm="layer")


CONFIGS = [
    BenchConfig("2L d64 attn-only", 2, 64, 4, 0),
    BenchConfig("4L d128 mlp", 4, 128, 4, 512),
    BenchConfig("6L d256", 6, 256, 8, 1024),
]
SHAPES = [(64, 64), (32, 256)]  # batch x seq
CACHE_CONFIG = CONFIGS[1]
# name → names_filter; "forward" is a plain call. The lambda hooks hook_pattern, which forces the explicit
# (materialised-pattern) attention path instead of SDPA.
CACHE_VARIANTS: dict[str, Any] = {
    "forward": "none",
    "1 name": "blocks.0.hook_resid_post",
    "all hooks": None,
    "hook_pattern": lambda name: name.endswith("hook_pattern"),
}


@dataclass(frozen=True)
class Plan:
    configs: list[BenchConfig]
    shapes: list[tuple[int, int]]
    cache_shape: tuple[int, int]
    warmup: int
    reps: int
    matmul_sizes: list[int]


def make_plan(quick: bool) -> Plan:
    if quick:  # every section, smallest sizes, few reps: seconds, for CI
        return Plan(CONFIGS[:1], SHAPES[:1], SHAPES[0], warmup=1, reps=3, matmul_sizes=[1024])
    return Plan(CONFIGS, SHAPES, (32, 256), warmup=2, reps=7, matmul_sizes=[512, 1024, 2048])


# --- the plain-PyTorch reference GPT: what our model would be without hook points ---
class PlainBlock(nn.Module):
    def __init__(self, c: BenchConfig):
        super().__init__()
        self.n_heads, self.d_head = c.n_heads, c.d_head
        self.ln1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.n_heads * c.d_head)
        self.out = nn.Linear(c.n_heads * c.d_head, c.d_model)
        self.mlp = None
        if c.d_mlp > 0:
            self.mlp = nn.Sequential(nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.d_mlp), nn.GELU(),
                                     nn.Linear(c.d_mlp, c.d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(batch, pos, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [batch head pos d_head]
        x = x + self.out(z.transpose(1, 2).reshape(batch, pos, -1))
        return x if self.mlp is None else x + self.mlp(x)


class PlainGPT(nn.Module):
    def __init__(self, c: BenchConfig):
        super().__init__()
        self.embed = nn.Embedding(D_VOCAB, c.d_model)
        self.pos_embed = nn.Embedding(N_CTX, c.d_model)
        self.blocks = nn.Sequential(*(PlainBlock(c) for _ in range(c.n_layers)))
        self.ln_final = nn.LayerNorm(c.d_model)
        self.unembed = nn.Linear(c.d_model, D_VOCAB)
        for p in self.parameters():
            if p.dim() >= 2:  # same init scale as ours, so activations (and any denormals) look alike
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.unembed(self.ln_final(self.blocks(self.embed(tokens) + self.pos_embed(positions))))


def build_plain(c: BenchConfig) -> PlainGPT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PlainGPT(c)


def build_bridge(c: BenchConfig) -> tuple[nn.Module | None, str | None]:
    """TL's TransformerBridge around its native model, or (None, why) when it cannot be built."""
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    try:
        cfg = TransformerBridgeConfig(d_model=c.d_model, n_layers=c.n_layers, n_heads=c.n_heads, d_head=c.d_head,
                                      d_mlp=c.d_mlp, d_vocab=D_VOCAB, n_ctx=N_CTX, act_fn="gelu",
                                      attn_only=c.d_mlp == 0, seed=0)
        return TransformerBridge.boot_native(cfg), None
    except Exception as e:  # an inexpressible config is a result to record, not a crash
        return None, f"TransformerBridge.boot_native failed: {type(e).__name__}: {e}"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- timing ---
def summarise(times: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median": median, "min": min(times), "max": max(times), "q1": q1, "q3": q3, "iqr": q3 - q1,
            "n": len(times), "samples": times}


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, reps: int) -> dict[str, dict]:
    """Warm each up, then time them round-robin (rotating the order) so drift and load hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    keys, times = list(fns), {k: [] for k in fns}
    for rep in range(reps):
        for key in keys[rep % len(keys):] + keys[: rep % len(keys)]:
            start = time.perf_counter()
            fns[key]()
            times[key].append(time.perf_counter() - start)
    return {k: summarise(v) for k, v in times.items()}


def random_tokens(batch: int, seq: int) -> Int[Tensor, "batch pos"]:
    return torch.randint(0, D_VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0))


def train_step(model: nn.Module, tokens: Int[Tensor, "batch pos"]) -> Callable[[], None]:
    """One training step: forward, cross-entropy, backward, AdamW."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    targets = tokens.roll(-1, dims=1).flatten()

    def step() -> None:
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# --- sections ---
def bench_train(c: BenchConfig, shape: tuple[int, int], plan: Plan) -> dict:
    ours, plain = build_model(c.model_config(), seed=0), build_plain(c)
    counts = {"ours": n_params(ours), "plain": n_params(plain)}
    if counts["ours"] != counts["plain"]:
        raise AssertionError(f"{c.name}: plain reference has {counts['plain']} parameters, ours {counts['ours']}")
    models: dict[str, nn.Module] = {"ours": ours, "plain": plain}
    bridge, why = build_bridge(c)
    if bridge is not None:
        models["bridge"], counts["bridge"] = bridge, n_params(bridge)
    tokens = random_tokens(*shape)
    seconds: dict[str, dict] = time_interleaved({k: train_step(m, tokens) for k, m in models.items()},
                                                plan.warmup, plan.reps)
    if bridge is None:
        seconds["bridge"] = {"not_available": why}
    return {"config": c.name, **config_fields(c), "batch": shape[0], "seq": shape[1], "n_params": counts,
            "seconds": seconds, "ratios": ratios(seconds, "median"),
            # min/min as well: under background load the fastest rep is the least disturbed one
            "ratios_min": ratios(seconds, "min")}


def ratios(seconds: dict[str, dict], stat: str) -> dict[str, float | None]:
    plain = seconds["plain"][stat]
    return {f"{k}/plain": seconds[k][stat] / plain if stat in seconds[k] else None for k in ("ours", "bridge")}


def config_fields(c: BenchConfig) -> dict:
    return {"n_layers": c.n_layers, "d_model": c.d_model, "n_heads": c.n_heads, "d_head": c.d_head,
            "d_mlp": c.d_mlp, "d_vocab": D_VOCAB, "n_ctx": N_CTX}


def bench_codebook(plan: Plan) -> dict:
    """Training step and forward of our model with one k = 1 codebook of 1000 codes after the last MLP,
    against the same model without it (timed interleaved)."""
    from workbench.hooks.codebook import CodebookSpec, attach

    c = CACHE_CONFIG if CACHE_CONFIG in plan.configs else plan.configs[-1]
    tokens = random_tokens(*plan.shapes[0])
    plain, coded = build_model(c.model_config(), seed=0), build_model(c.model_config(), seed=0)
    site = f"blocks.{c.n_layers - 1}.hook_{'mlp_out' if c.d_mlp else 'attn_out'}"
    attach(coded, site, CodebookSpec(codes=CODEBOOK_CODES, k=1))

    def forward(model: nn.Module) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad():
                model(tokens)
        return call

    seconds = time_interleaved({"plain step": train_step(plain, tokens), "codebook step": train_step(coded, tokens),
                                "plain forward": forward(plain), "codebook forward": forward(coded)},
                               plan.warmup, plan.reps)
    return {"config": c.name, "batch": tokens.shape[0], "seq": tokens.shape[1], "site": site,
            "codes": CODEBOOK_CODES, "k": 1, "seconds": seconds,
            "step_ratio": seconds["codebook step"]["median"] / seconds["plain step"]["median"],
            "forward_ratio": seconds["codebook forward"]["median"] / seconds["plain forward"]["median"]}


def bench_attention_variants(plan: Plan) -> dict:
    """A training step with each attention variant against softmax, on the smallest config; which path each
    takes (SDPA, or the explicit one that materialises the pattern)."""
    from workbench.models.attention import NORMALISERS

    c, shape = CONFIGS[0], plan.shapes[0]
    tokens = random_tokens(*shape)
    models = {name: build_model(c.model_config().model_copy(update={"attention": name}), seed=0)
              for name in NORMALISERS}
    seconds = time_interleaved({name: train_step(m, tokens) for name, m in models.items()}, plan.warmup, plan.reps)
    base = seconds["softmax"]["median"]
    return {"config": c.name, "batch": shape[0], "seq": shape[1], "variants": [
        {"attention": name, "path": "explicit" if m.blocks[0].attn.pattern_needed() else "sdpa",
         "seconds": seconds[name], "vs_softmax": seconds[name]["median"] / base} for name, m in models.items()]}


MAMBA_LENGTHS = (64, 256, 1024)


def bench_mamba_scan(plan: Plan, lengths: tuple[int, ...]) -> dict:
    """A training step of one Mamba layer (d 32, inner 64, state 8: the `mamba` recipe) with the sequential and the
    parallel scan, beside one attention layer of the same width, at each length (batch 8)."""
    base = dict(n_layers=1, d_model=32, n_heads=4, d_mlp=0, d_vocab=D_VOCAB, n_ctx=max(lengths), positional="none")
    models = {"mamba sequential": {"block": "mamba", "mamba_scan": "sequential"},
              "mamba parallel": {"block": "mamba", "mamba_scan": "parallel"}, "attention": {"block": "attention"}}
    rows = []
    for length in lengths:
        tokens = random_tokens(8, length)
        steps = {name: train_step(build_model(ModelConfig(**base, **extra), seed=0), tokens)
                 for name, extra in models.items()}
        seconds = time_interleaved(steps, plan.warmup, plan.reps)
        rows.append({"seq": length, "seconds": seconds,
                     "sequential/parallel": seconds["mamba sequential"]["median"] / seconds["mamba parallel"]["median"],
                     "parallel/attention": seconds["mamba parallel"]["median"] / seconds["attention"]["median"]})
    return {"config": "1L d32, Mamba inner 64 state 8", "batch": 8, "rows": rows}


def bench_eap_acdc(plan: Plan) -> dict:
    """EAP, EAP-IG (10 steps) and ACDC on the same circuit graph of a 2-layer attention-only model (q, k, v
    inputs split: 81 edges), each call timed end to end (corrupted and clean runs included)."""
    from workbench.hooks.circuits import acdc, edge_attribution, logit_diff

    c = CONFIGS[0]
    model = build_model(c.model_config(), seed=0).eval()
    clean = random_tokens(*EAP_SHAPE)
    corrupted = clean.roll(1, dims=0)  # another sequence for each pair
    metric = logit_diff(clean[:, -1], corrupted[:, -1])
    calls = {"EAP": lambda: edge_attribution(model, clean, corrupted, metric),
             f"EAP-IG {IG_STEPS} steps": lambda: edge_attribution(model, clean, corrupted, metric, ig_steps=IG_STEPS),
             "ACDC": lambda: acdc(model, clean, corrupted, metric, threshold=0.01, progress=False)}
    seconds = time_interleaved(calls, warmup=1, reps=max(2, plan.reps // 2))
    found = calls["ACDC"]()
    return {"config": c.name, "batch": EAP_SHAPE[0], "seq": EAP_SHAPE[1], "edges": found.n_edges,
            "acdc_threshold": 0.01, "acdc_edges_kept": int(found.kept.sum()), "seconds": seconds}


def cache_call(model: nn.Module, tokens: Int[Tensor, "batch pos"], names_filter: Any) -> Callable[[], dict]:
    def call() -> dict:
        with torch.no_grad():
            if names_filter == "none":
                model(tokens)
                return {}
            return dict(model.run_with_cache(tokens, names_filter=names_filter)[1])

    return call


def cache_bytes(cache: dict[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in cache.values())


def bench_cache(plan: Plan) -> dict:
    model = build_model(CACHE_CONFIG.model_config(), seed=0).eval()
    tokens = random_tokens(*plan.cache_shape)
    calls = {name: cache_call(model, tokens, f) for name, f in CACHE_VARIANTS.items()}
    seconds = time_interleaved(calls, plan.warmup, plan.reps)
    forward_s = seconds["forward"]["median"]
    variants = []
    for name, call in calls.items():
        cache = call()
        variants.append({"variant": name, "names_cached": len(cache), "cache_bytes": cache_bytes(cache),
                         "seconds": seconds[name], "time_ratio": seconds[name]["median"] / forward_s})
    return {"config": CACHE_CONFIG.name, **config_fields(CACHE_CONFIG), "batch": plan.cache_shape[0],
            "seq": plan.cache_shape[1], "mode": "eval, torch.no_grad",
            # Memory is the bytes the cache holds. Process peak RSS was tried and dropped: VmHWM could not be
            # reset on this VM, so it read 0 even for a 568 MB cache.
            "variants": variants}


def matmul_peak(plan: Plan) -> dict:
    """This machine's float32 matmul rate: the median over reps, best over sizes."""
    rows = []
    for n in plan.matmul_sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        s = time_interleaved({"mm": lambda a=a, b=b: a @ b}, plan.warmup + 1, plan.reps + 2)["mm"]
        rows.append({"size": n, "seconds": s, "flops_per_s": 2 * n**3 / s["median"]})
    best = max(rows, key=lambda r: r["flops_per_s"])
    return {"peak_flops_per_s": best["flops_per_s"], "best_size": best["size"], "sizes": rows}


def train_flops(c: BenchConfig, batch: int, seq: int) -> float:
    """FLOPs of one training step, counted analytically.

    6·N·tokens (Kaplan et al. 2020): forward is 2 FLOPs per matmul weight per token, backward twice that.
    N counts matmul weights only — per layer qkv + out 4·d_model·d_attn and MLP 2·d_model·d_mlp, plus the
    unembedding d_model·d_vocab; embedding lookups, norms, biases, softmax and AdamW are left out.
    Attention adds QKᵀ and pattern·V, each 2·seq²·d_attn per layer per sequence forward, ×3 for training:
    12·n_layers·seq²·d_attn per sequence, counted in full despite the causal mask (PaLM's MFU convention).
    """
    d_attn = c.n_heads * c.d_head
    n_matmul = c.n_layers * (4 * c.d_model * d_attn + 2 * c.d_model * c.d_mlp) + c.d_model * D_VOCAB
    return 6 * n_matmul * batch * seq + 12 * c.n_layers * seq**2 * d_attn * batch


def mfu_rows(train: list[dict], peak: float) -> list[dict]:
    by_name = {c.name: c for c in CONFIGS}
    rows = []
    for row in train:
        flops = train_flops(by_name[row["config"]], row["batch"], row["seq"])
        achieved = flops / row["seconds"]["ours"]["median"]
        rows.append({"config": row["config"], "batch": row["batch"], "seq": row["seq"], "flops_per_step": flops,
                     "seconds_per_step": row["seconds"]["ours"]["median"], "achieved_flops_per_s": achieved,
                     "mfu": achieved / peak})
    return rows


def bench_catalog() -> list[dict]:
    from workbench.experiments import names
    from workbench.experiments.runner import run

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names():
            start = time.perf_counter()
            try:
                passed, error = run(name, mode="quick", out=tmp, progress_bar=False)["passed"], None
            except Exception as e:  # one broken experiment should not lose the others' timings
                passed, error = False, f"{type(e).__name__}: {e}"
            rows.append({"experiment": name, "mode": "quick", "seconds": time.perf_counter() - start,
                         "passed": passed, "error": error})
    return rows


def targets(train: list[dict], cache: dict, codebook: dict, eap: dict) -> list[dict]:
    rows = [{"name": f"ours/plain {r['config']} {r['batch']}x{r['seq']}", "metric": "ours/plain", "op": "<=",
             "threshold": OURS_PLAIN_TARGET, "value": r["ratios"]["ours/plain"]} for r in train]
    one = next(v for v in cache["variants"] if v["variant"] == "1 name")
    rows.append({"name": "run_with_cache 1 name / forward", "metric": "time_ratio", "op": "<=",
                 "threshold": CACHE_TARGET, "value": one["time_ratio"]})
    rows.append({"name": f"one MLP codebook ({codebook['codes']} codes) step / plain step", "metric": "step_ratio",
                 "op": "<=", "threshold": CODEBOOK_TARGET, "value": codebook["step_ratio"]})
    for name, threshold in (("EAP", EAP_TARGET), (f"EAP-IG {IG_STEPS} steps", EAP_IG_TARGET)):
        rows.append({"name": f"{name}, {eap['config']} {eap['batch']}x{eap['seq']} ({eap['edges']} edges), s",
                     "metric": "seconds", "op": "<=", "threshold": threshold, "value": eap["seconds"][name]["median"]})
    return [{**r, "passed": bool(r["value"] <= r["threshold"])} for r in rows]


def machine_info(threads: int) -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu_count": os.cpu_count(), "cpus_usable": affinity, "torch_version": torch.__version__,
            "transformer_lens_version": metadata.version("transformer-lens"), "platform": platform.platform(),
            "machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
            "threads": threads, "torch_num_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def run_bench(quick: bool = False, out: str | Path | None = None, threads: int = 2, progress: bool = True,
              catalog: bool = False) -> dict:
    """Run every measurement in this process and return the result (also written to `out` if given)."""
    plan, previous_threads, started = make_plan(quick), torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(threads)  # fixed and recorded: timings are meaningless without it
    try:
        result = {"schema": SCHEMA, "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  "quick": quick, "machine": machine_info(threads),
                  "settings": {"warmup": plan.warmup, "reps": plan.reps, "threads": threads, "dtype": "float32"}}
        measure(result, plan, progress, catalog)
    finally:
        torch.set_num_threads(previous_threads)
    result["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["seconds"] = time.perf_counter() - started
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
    return result


def measure(result: dict, plan: Plan, progress: bool, catalog: bool) -> None:
    """Fill `result` section by section; the task list drives the progress bar."""
    tasks: list[tuple[str, Callable[[], None]]] = [("matmul peak", lambda: result.update(peak=matmul_peak(plan)))]
    train: list[dict] = []
    for c in plan.configs:
        for shape in plan.shapes:
            tasks.append((f"train {c.name} {shape[0]}x{shape[1]}",
                          lambda c=c, shape=shape: train.append(bench_train(c, shape, plan))))
    tasks.append(("run_with_cache", lambda: result.update(cache=bench_cache(plan))))
    tasks.append(("codebook", lambda: result.update(codebook_overhead=bench_codebook(plan))))
    tasks.append(("EAP / ACDC", lambda: result.update(eap_acdc=bench_eap_acdc(plan))))
    tasks.append(("attention variants", lambda: result.update(attention_variants=bench_attention_variants(plan))))
    lengths = MAMBA_LENGTHS[:2] if plan.reps < 5 else MAMBA_LENGTHS  # quick: the short lengths only
    tasks.append(("mamba scan", lambda: result.update(mamba_scan=bench_mamba_scan(plan, lengths))))
    if catalog:
        tasks.append(("catalog", lambda: result.update(catalog={"experiments": bench_catalog()})))
    bar = tqdm(tasks, desc="bench", disable=not progress, leave=False)
    for label, task in bar:
        bar.set_description(f"bench: {label}")
        gc.collect()
        task()
    result["train_step"] = train
    peak = result.pop("peak")
    result["mfu"] = {"peak": peak, "formula": "6·N_matmul·tokens + 12·n_layers·seq²·d_attn·batch",
                     "rows": mfu_rows(train, peak["peak_flops_per_s"])}
    result.setdefault("catalog", {"skipped": "off by default (long); run `workbench bench --catalog`"})
    result["targets"] = targets(train, result["cache"], result["codebook_overhead"], result["eap_acdc"])
    result["passed"] = all(t["passed"] for t in result["targets"])


# --- reporting ---
SECTIONS = ("train_step", "cache", "mfu", "catalog", "eap_acdc", "attention_variants", "codebook_overhead",
            "mamba_scan", "targets")


def _s(stats: dict) -> str:
    return f"{stats['median']:.4f}" if "median" in stats else "n/a"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [f"workbench bench{' (quick)' if result['quick'] else ''} — {result['timestamp']}, torch "
             f"{m['torch_version']}, {m['threads']} threads, {m['cpu_count']} CPUs, {m['platform']}", ""]
    lines += _train_lines(result) + [""] + _cache_lines(result) + [""] + _mfu_lines(result) + [""]
    lines += _other_lines(result)
    return "\n".join(lines)


def _train_lines(result: dict) -> list[str]:
    lines = ["Training step (forward + cross-entropy backward + AdamW), median s/step",
             f"  {'config':<18}{'shape':<8}{'ours':>9}{'plain':>9}{'bridge':>9}{'ours/plain':>12}{'bridge/plain':>14}"]
    for r in result["train_step"]:
        s = r["seconds"]
        lines.append(f"  {r['config']:<18}{r['batch']}x{r['seq']:<5}{_s(s['ours']):>9}{_s(s['plain']):>9}"
                     f"{_s(s['bridge']):>9}{_ratio(r['ratios']['ours/plain']):>12}"
                     f"{_ratio(r['ratios']['bridge/plain']):>14}")
        if "not_available" in s["bridge"]:
            lines.append(f"    bridge: {s['bridge']['not_available']}")
    return lines


def _cache_lines(result: dict) -> list[str]:
    c = result["cache"]
    lines = [f"run_with_cache ({c['config']}, {c['batch']}x{c['seq']}, {c['mode']})",
             f"  {'variant':<14}{'names':>6}{'median s':>10}{'x forward':>11}{'cache MB':>10}"]
    for v in c["variants"]:
        lines.append(f"  {v['variant']:<14}{v['names_cached']:>6}{_s(v['seconds']):>10}{v['time_ratio']:>11.3f}"
                     f"{v['cache_bytes'] / 2**20:>10.1f}")
    return lines


def _mfu_lines(result: dict) -> list[str]:
    peak = result["mfu"]["peak"]
    lines = [f"MFU of our model (peak: {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s, float32 matmul "
             f"{peak['best_size']}x{peak['best_size']}; FLOPs = {result['mfu']['formula']})",
             f"  {'config':<18}{'shape':<8}{'GFLOP/step':>11}{'GFLOP/s':>9}{'MFU':>7}"]
    for r in result["mfu"]["rows"]:
        lines.append(f"  {r['config']:<18}{r['batch']}x{r['seq']:<5}{r['flops_per_step'] / 1e9:>11.2f}"
                     f"{r['achieved_flops_per_s'] / 1e9:>9.1f}{r['mfu']:>7.1%}")
    return lines


def _other_lines(result: dict) -> list[str]:
    cat = result["catalog"]
    if "experiments" in cat:
        lines = ["Catalog (quick mode)"] + [
            f"  {r['experiment']:<14}{r['seconds']:>8.1f} s  {'pass' if r['passed'] else 'FAIL'}"
            + (f"  {r['error']}" if r["error"] else "") for r in cat["experiments"]]
    else:
        lines = [f"Catalog: skipped — {cat['skipped']}"]
    cb = result["codebook_overhead"]
    lines += [f"Codebook ({cb['config']}, {cb['batch']}x{cb['seq']}, {cb['codes']} codes at {cb['site']}): "
              f"step ×{cb['step_ratio']:.3f}, forward ×{cb['forward_ratio']:.3f} of the plain model"]
    e = result["eap_acdc"]
    lines += [f"eap_acdc ({e['config']}, {e['batch']}x{e['seq']}, {e['edges']} edges): "
              + ", ".join(f"{name} {_s(stats)} s" for name, stats in e["seconds"].items())
              + f"; ACDC kept {e['acdc_edges_kept']} edges at threshold {e['acdc_threshold']}"]
    if "attention_variants" in result:  # absent from files written before it was measured
        a = result["attention_variants"]
        lines += [f"attention variants ({a['config']}, {a['batch']}x{a['seq']}, training step vs softmax): "
                  + ", ".join(f"{v['attention']} ×{v['vs_softmax']:.2f} ({v['path']})" for v in a["variants"])]
    m = result["mamba_scan"]
    if "rows" in m:  # absent from files written before the Mamba block existed
        lines += [f"mamba_scan ({m['config']}, batch {m['batch']}, training step): " + "; ".join(
            f"{r['seq']}: sequential {_s(r['seconds']['mamba sequential'])} s, parallel "
            f"{_s(r['seconds']['mamba parallel'])} s, attention {_s(r['seconds']['attention'])} s" for r in m["rows"])]
    else:
        lines += [f"mamba_scan: not available — {m.get('not_available')}"]
    lines += ["", "Targets"] + [
        f"  [{'pass' if t['passed'] else 'FAIL'}] {t['name']}: {t['value']:.3f} (needs {t['op']} {t['threshold']})"
        for t in result["targets"]]
    return lines


# --- files and the command ---
def load_history(root: str | Path | None = None) -> tuple[list[dict], list[str]]:
    """bench.json and bench-*.json under root, oldest first; unreadable files come back as messages."""
    results, errors, seen = [], [], set()
    for path in sorted(Path(root or data_root()).glob("bench*.json")):
        if path.name != "bench.json" and not path.name.startswith("bench-"):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            errors.append(f"{path.name}: {e}")
            continue
        if data.get("schema") != SCHEMA:
            errors.append(f"{path.name}: not a {SCHEMA} file")
        elif data["timestamp"] not in seen:  # bench.json is often a copy of the newest history file
            seen.add(data["timestamp"])
            results.append({**data, "file": path.name})
    return sorted(results, key=lambda r: r["timestamp"]), errors


def default_out(quick: bool) -> Path:
    """Where results go without --out: data/bench.json holds the shipped full run, which a quick run (seconds,
    few repetitions) must never replace, so quick results go to out/bench-quick.json in the workbench home."""
    return home() / "out" / "bench-quick.json" if quick else data_root() / "bench.json"


def main(args) -> int:
    """`workbench bench [--quick] [--json] [--catalog] [--out PATH]`. Targets are reported, never an exit code:
    a noisy machine is not a failure."""
    out = args.out or default_out(args.quick)
    result = run_bench(quick=args.quick, out=out, catalog=args.catalog)
    print(format_table(result))
    print(f"→ {out}")
    if args.json:
        print(json.dumps(result, default=str))
    return 0
