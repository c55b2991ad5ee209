"""`workbench bench --quick` end to end: structure and internal consistency only — never timing thresholds
(speed belongs to the benchmark itself; a shared 2-core CI box is too noisy to assert it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import plotly.graph_objects as go
import pytest

from workbench import bench
from workbench.viz import bench as figures

SECTIONS = ["machine", "settings", "train_step", "cache", "mfu", "catalog", "eap_acdc", "attention_variants",
            "codebook_overhead", "mamba_scan", "targets", "passed"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    return bench.run_bench(quick=True, out=out, progress=False) | {"_out": str(out)}


def positive(stats: dict) -> bool:
    values = [stats[k] for k in ("median", "min", "max", "q1", "q3")] + stats["samples"]
    return all(math.isfinite(v) and v > 0 for v in values) and stats["min"] <= stats["median"] <= stats["max"]


def test_every_section_is_present_and_the_file_is_written(result):
    for key in SECTIONS:
        assert key in result, key
    on_disk = json.loads(Path(result["_out"]).read_text())
    assert on_disk["timestamp"] == result["timestamp"] and on_disk["schema"] == bench.SCHEMA
    assert on_disk["settings"]["threads"] == on_disk["machine"]["threads"] == 2
    for key in ("cpu_count", "torch_version", "platform"):
        assert on_disk["machine"][key]
    mamba = result["mamba_scan"]
    assert [r["seq"] for r in mamba["rows"]] == [64, 256]  # quick: the short lengths
    for row in mamba["rows"]:
        assert set(row["seconds"]) == {"mamba sequential", "mamba parallel", "attention"}
        assert all(positive(stats) for stats in row["seconds"].values())
        assert row["sequential/parallel"] == row["seconds"]["mamba sequential"]["median"] / \
            row["seconds"]["mamba parallel"]["median"]
    paths = {v["attention"]: v["path"] for v in result["attention_variants"]["variants"]}
    assert paths == {"softmax": "sdpa", "gated": "sdpa", "ssmax": "explicit", "clipped": "explicit",
                     "uniform": "explicit"}
    eap = result["eap_acdc"]
    assert eap["edges"] == 81 and 0 < eap["acdc_edges_kept"] <= 81
    assert set(eap["seconds"]) == {"EAP", "EAP-IG 10 steps", "ACDC"}
    assert [t["value"] for t in result["targets"][-2:]] == [eap["seconds"]["EAP"]["median"],
                                                            eap["seconds"]["EAP-IG 10 steps"]["median"]]
    codebook = result["codebook_overhead"]
    assert codebook["codes"] == 1000
    seconds = codebook["seconds"]  # ratios of the measured medians (timing itself is too noisy to bound here)
    assert codebook["step_ratio"] == seconds["codebook step"]["median"] / seconds["plain step"]["median"]
    assert codebook["forward_ratio"] == seconds["codebook forward"]["median"] / seconds["plain forward"]["median"]
    assert set(codebook["seconds"]) == {"plain step", "codebook step", "plain forward", "codebook forward"}
    assert "skipped" in result["catalog"]


def test_training_timings_are_positive_and_ratios_consistent(result):
    assert result["train_step"]
    for row in result["train_step"]:
        assert row["n_params"]["ours"] == row["n_params"]["plain"]
        s = row["seconds"]
        assert positive(s["ours"]) and positive(s["plain"])
        assert row["ratios"]["ours/plain"] == pytest.approx(s["ours"]["median"] / s["plain"]["median"])
        assert row["ratios_min"]["ours/plain"] == pytest.approx(s["ours"]["min"] / s["plain"]["min"])
        if "not_available" in s["bridge"]:
            assert row["ratios"]["bridge/plain"] is None
        else:
            assert positive(s["bridge"])
            assert row["ratios"]["bridge/plain"] == pytest.approx(s["bridge"]["median"] / s["plain"]["median"])


def test_cache_costs_are_consistent(result):
    variants = {v["variant"]: v for v in result["cache"]["variants"]}
    assert list(variants) == list(bench.CACHE_VARIANTS)
    forward = variants["forward"]["seconds"]["median"]
    for v in variants.values():
        assert positive(v["seconds"])
        assert v["time_ratio"] == pytest.approx(v["seconds"]["median"] / forward)
    assert variants["forward"]["cache_bytes"] == 0 and variants["1 name"]["names_cached"] == 1
    # memory grows with what is cached: one tensor < the four patterns < everything
    assert 0 < variants["1 name"]["cache_bytes"] < variants["hook_pattern"]["cache_bytes"] \
        < variants["all hooks"]["cache_bytes"]


def test_mfu_and_targets(result):
    peak = result["mfu"]["peak"]["peak_flops_per_s"]
    assert math.isfinite(peak) and peak > 0
    for row in result["mfu"]["rows"]:
        assert row["mfu"] == pytest.approx(row["flops_per_step"] / row["seconds_per_step"] / peak)
        assert row["mfu"] > 0
    assert len(result["targets"]) == len(result["train_step"]) + 4  # + cache, codebook, EAP, EAP-IG
    for t in result["targets"]:
        assert isinstance(t["passed"], bool) and t["passed"] == (t["value"] <= t["threshold"])
    assert result["passed"] == all(t["passed"] for t in result["targets"])


def test_format_table_mentions_each_section(result):
    text = bench.format_table(result)
    for needle in ("Training step", "run_with_cache", "MFU", "Catalog", "eap_acdc", "Codebook (",
                   "mamba_scan", "Targets", result["train_step"][0]["config"]):
        assert needle in text, needle


def test_figures_have_data(result):
    for build in (figures.train_ratios, figures.cache_costs, figures.mfu):
        fig = build(result)
        assert isinstance(fig, go.Figure) and fig.data and all(len(trace.y) for trace in fig.data)
    history = figures.ratio_history([result, result | {"timestamp": "later"}])
    assert len(history.data) == len(result["train_step"]) and len(history.data[0].y) == 2


def test_history_loader_sorts_and_skips_bad_files(result, tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps(result))
    (tmp_path / "bench-old.json").write_text(json.dumps(result | {"timestamp": "2000-01-01T00:00:00+00:00"}))
    (tmp_path / "bench-broken.json").write_text("{")
    results, errors = bench.load_history(tmp_path)
    assert [r["file"] for r in results] == ["bench-old.json", "bench.json"]
    assert len(errors) == 1 and "bench-broken.json" in errors[0]


def test_catalog_section_records_each_experiment(result, monkeypatch):
    from workbench.experiments import runner

    calls = []

    def fake_run(name, mode, out, progress_bar):
        calls.append((name, mode, progress_bar))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return {"passed": True}

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr("workbench.experiments.names", lambda: ["a", "b"])
    rows = bench.bench_catalog()
    assert calls == [("a", "quick", False), ("b", "quick", False)]
    assert [(r["experiment"], r["passed"]) for r in rows] == [("a", True), ("b", False)]
    assert "boom" in rows[1]["error"] and all(r["seconds"] >= 0 for r in rows)
    assert "boom" in bench.format_table(result | {"catalog": {"experiments": rows}})


def test_a_quick_bench_never_replaces_the_shipped_full_result(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    assert bench.default_out(quick=True) == tmp_path / "out" / "bench-quick.json"
    assert bench.default_out(quick=False) == tmp_path / "data" / "bench.json"
