"""The circuit graph: running circuits, EAP / EAP-IG against exact effects, ACDC, faithfulness, path patching."""

import pandas as pd
import pytest
import torch

from tests.unit.test_circuits import CLEAN, CORRUPTED, A, B, closed_form
from tests.unit.test_circuits import model as hand_built  # noqa: F401  (the fixture)
from workbench.config import ConfigError
from workbench.hooks.circuits import (
    CircuitRun,
    acdc,
    area_scores,
    composition_scores,
    edge_attribution,
    faithfulness_curve,
    logit_diff,
    path_patching,
    target_probability,
)
from workbench.models import ModelConfig, Transformer
from workbench.viz.circuits import circuit_over_training_figure


def edge(graph, writer, reader):
    return float(graph.scores[graph.writers.index(writer), graph.readers.index(reader)])


def random_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=11, n_ctx=16, positional="rotary")
    model = Transformer(cfg.model_copy(update=overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 11, (4, 7), generator=g), torch.randint(0, 11, (4, 7), generator=g)


def test_the_graph_of_a_two_layer_model():
    graph = edge_attribution(random_model(), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
                             logit_diff(1, 2))
    assert graph.writers == ["input", *[f"L0H{h}" for h in range(4)], "MLP0", *[f"L1H{h}" for h in range(4)], "MLP1"]
    assert graph.readers[:4] == ["L0H0.q", "L0H1.q", "L0H2.q", "L0H3.q"] and graph.readers[-1] == "logits"
    # layer 0's 12 readers see the input; its MLP the input and 4 heads; layer 1's 12 readers 6 writers; …
    assert graph.n_edges == 12 * 1 + 1 * 5 + 12 * 6 + 1 * 10 + 11


@pytest.mark.parametrize("attention", ["softmax", "gated"])
def test_the_full_circuit_is_the_clean_run_and_the_empty_one_the_corrupted_run(pair, attention):
    model = random_model(attention=attention)
    run = CircuitRun.prepare(model, *pair, logit_diff(1, 2))
    valid = run.ports.valid
    assert torch.allclose(run.logits(valid), model(pair[0]), atol=1e-5)
    assert torch.allclose(run.logits(torch.zeros_like(valid)), model(pair[1]), atol=1e-5)
    # a head whose inputs all carry the corrupted run writes what it wrote there: a gate reads the q edge too
    only = torch.zeros_like(valid)
    only[run.ports.writers.index("L0H0"), run.ports.readers.index("logits")] = True
    assert torch.allclose(run.logits(only), model(pair[1]), atol=1e-5)
    graph = edge_attribution(model, *pair, logit_diff(1, 2))
    curve = faithfulness_curve(model, *pair, logit_diff(1, 2), graph)
    assert curve["faithfulness"].iloc[0] == pytest.approx(0.0, abs=1e-5)  # no edges
    assert curve["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-5)  # all edges
    assert curve["edges"].iloc[-1] == graph.n_edges and curve["edges"].iloc[1] == 1
    scores = area_scores(curve)
    assert scores["cmd"] >= 0
    perfect = curve.assign(faithfulness=1.0)
    assert area_scores(perfect) == pytest.approx({"cpr": 1.0, "cmd": 0.0})


def test_eap_is_exact_on_the_linear_hand_built_model(hand_built):  # noqa: F811
    graph = edge_attribution(hand_built, torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B))
    m_clean = closed_form(CLEAN)
    mean_corrupted = (CORRUPTED.count(A) - CORRUPTED.count(B)) / 5
    last = {t: (t == A) - (t == B) for t in (CLEAN[-1], CORRUPTED[-1])}
    assert edge(graph, "input", "logits") == pytest.approx(last[CORRUPTED[-1]] - last[CLEAN[-1]], abs=1e-5)
    head_corrupted = last[CLEAN[-1]] + mean_corrupted - m_clean  # the head reads (v) or writes corrupted values
    assert edge(graph, "input", "L0H0.v") == pytest.approx(head_corrupted, abs=1e-5)
    assert edge(graph, "L0H0", "logits") == pytest.approx(head_corrupted, abs=1e-5)
    assert edge(graph, "input", "L0H0.q") == pytest.approx(0.0, abs=1e-6)  # q = k = 0: attention stays uniform
    assert graph.node_scores()["L0H0"] == pytest.approx(head_corrupted, abs=1e-5)


def test_acdc_keeps_exactly_the_edges_the_closed_form_needs(hand_built):  # noqa: F811
    graph = acdc(hand_built, torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B), threshold=0.05,
                 progress=False)
    kept = set(map(tuple, graph.edges().query("kept")[["writer", "reader"]].values.tolist()))
    assert kept == {("input", "logits"), ("L0H0", "logits"), ("input", "L0H0.v")}
    run = CircuitRun.prepare(hand_built, torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B))
    assert run.faithfulness(graph.kept) == pytest.approx(1.0)


def test_edge_attribution_matches_finite_differences(pair):
    model = random_model().double()
    clean, corrupted = pair
    metric = target_probability(3)
    graph = edge_attribution(model, clean, corrupted, metric)
    run = CircuitRun.prepare(model, clean, corrupted, metric)
    eps = 1e-4
    for writer, reader in [("input", "logits"), ("L0H1", "L1H2.k"), ("input", "L0H3.q"), ("MLP0", "L1H0.v"),
                           ("L1H3", "MLP1"), ("L0H2", "MLP0")]:
        keep = run.ports.valid.double()
        keep[graph.writers.index(writer), graph.readers.index(reader)] = 1 - eps
        finite = (run.metric(keep) - run.clean_metric) / eps
        assert edge(graph, writer, reader) == pytest.approx(finite, rel=1e-3, abs=1e-9), (writer, reader)


def test_eap_ig_converges_to_the_exact_patching_effect(hand_built):  # noqa: F811
    """With the head's output zeroed the model is linear in its input and only the input → logits edge matters;
    the metric (a probability) is not linear, so EAP is off and EAP-IG closes in on the exact effect."""
    with torch.no_grad():
        hand_built.blocks[0].attn.out.weight.zero_()
    clean, corrupted, metric = torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), target_probability(A)
    run = CircuitRun.prepare(hand_built, clean, corrupted, metric)
    exact = run.corrupted_metric - run.clean_metric
    errors = [abs(edge(edge_attribution(hand_built, clean, corrupted, metric, ig_steps=n), "input", "logits")
                  - exact) for n in (1, 4, 32, 256)]
    assert errors[0] > 0.02
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


def test_our_edge_scores_agree_with_transformer_lens():
    from transformer_lens.tools.analysis import attribution_patch
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig

    model = random_model()
    g = torch.Generator().manual_seed(2)
    clean, corrupted = torch.randint(0, 11, (1, 6), generator=g), torch.randint(0, 11, (1, 6), generator=g)
    metric = logit_diff(3, 4)
    theirs = attribution_patch(model, clean, corrupted, metric, EdgeAttributionConfig(granularity="edge"))
    ours = edge_attribution(model, corrupted, clean, metric)  # their denoising = our noising, inputs swapped

    def name(node, reading: bool) -> str:
        if node.kind == "embed":
            return "input"
        if node.kind == "logits":
            return "logits"
        head = f"L{node.layer}H{node.head}"
        return {"attn_head_out": head, "mlp_out": f"MLP{node.layer}", "mlp_in": f"MLP{node.layer}",
                "q_input": head + ".q", "k_input": head + ".k", "v_input": head + ".v"}[node.kind]

    summed: dict[tuple[str, str], float] = {}
    for (writer, reader), score in theirs.edge_scores.items():
        key = (name(writer, False), name(reader, True))
        summed[key] = summed.get(key, 0.0) + score
    assert len(summed) == ours.n_edges
    for (writer, reader), score in summed.items():
        assert edge(ours, writer, reader) == pytest.approx(score, abs=1e-4), (writer, reader)


def test_path_patching_finds_the_only_path(hand_built):  # noqa: F811
    table = path_patching(hand_built, torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B),
                          senders=["input", "L0H0"], receivers=["L0H0", "logits"])
    gap = closed_form(CLEAN) - closed_form(CORRUPTED)
    assert table.loc["L0H0", "logits"] == pytest.approx(1.2 / gap)
    assert table.loc["input", "L0H0"] == pytest.approx(1.2 / gap)  # through the head's v input
    assert table.loc["input", "logits"] == pytest.approx(2.0 / gap)
    assert table.isna().loc["L0H0", "L0H0"]  # a head does not read itself


def test_composition_scores_find_a_planted_k_composition():
    model = random_model(d_mlp=0, positional="learned", norm="none")
    with torch.no_grad():  # L1H2's keys read exactly what L0H1 writes
        attn0, attn1 = model.blocks[0].attn, model.blocks[1].attn
        d = model.cfg.d_head
        w_o = attn0.out.weight[:, d:2 * d]  # [d_model, d_head] of head 1
        attn1.qkv.weight[model.cfg.d_model + 2 * d:model.cfg.d_model + 3 * d] = 5 * w_o.T
    scores = composition_scores(model, "k")
    assert scores.stack().idxmax() == ("L0H1", "L1H2")
    assert scores.isna().loc["L1H0", "L0H0"]


def test_bad_requests(hand_built):  # noqa: F811
    clean, corrupted = torch.tensor([CLEAN]), torch.tensor([CORRUPTED])
    with pytest.raises(ConfigError, match="threshold=1.5"):
        acdc(hand_built, clean, corrupted, logit_diff(A, B), threshold=1.5)
    with pytest.raises(ConfigError, match="ig_steps=0"):
        edge_attribution(hand_built, clean, corrupted, logit_diff(A, B), ig_steps=0)
    with pytest.raises(ConfigError, match="same shape"):
        edge_attribution(hand_built, clean, corrupted[:, :4], logit_diff(A, B))
    with pytest.raises(ConfigError, match="scalar"):
        acdc(hand_built, clean, corrupted, lambda logits: logits[:, -1, 0])
    with pytest.raises(ConfigError, match="nothing to recover"):
        acdc(hand_built, clean, clean, logit_diff(A, B))
    with pytest.raises(ConfigError, match="receiver 'L3H0'"):
        path_patching(hand_built, clean, corrupted, logit_diff(A, B), receivers=["L3H0"])
    with pytest.raises(ConfigError, match="fraction"):
        graph = edge_attribution(hand_built, clean, corrupted, logit_diff(A, B))
        faithfulness_curve(hand_built, clean, corrupted, logit_diff(A, B), graph, fractions=(0.0, 2.0))


def test_a_mamba_block_is_refused_not_left_out_of_the_graph(pair):
    with pytest.raises(ConfigError, match="block 1 .MambaBlock.*Mamba"):
        CircuitRun.prepare(random_model(block=["attention", "mamba"]), *pair, logit_diff(1, 2))


def test_discovery_runs_on_a_transformer_bridge(native_bridge):
    """A native bridge's attention cannot split q, k, v inputs: each layer's heads share one reader."""
    bridge = native_bridge
    g = torch.Generator().manual_seed(0)
    clean, corrupted = torch.randint(0, 50, (2, 6), generator=g), torch.randint(0, 50, (2, 6), generator=g)
    metric = logit_diff(3, 4)
    run = CircuitRun.prepare(bridge, clean, corrupted, metric)
    assert run.ports.readers == ["L0.attn", "MLP0", "L1.attn", "MLP1", "logits"]
    with torch.no_grad():
        assert torch.allclose(run.logits(run.ports.valid), bridge(clean), atol=1e-5)
        assert torch.allclose(run.logits(torch.zeros_like(run.ports.valid)), bridge(corrupted), atol=1e-5)
    graph = edge_attribution(bridge, clean, corrupted, metric)
    keep = run.ports.valid.float()
    w, r = graph.writers.index("L0H2"), graph.readers.index("L1.attn")
    keep[w, r] = 1 - 1e-3
    finite = (run.metric(keep) - run.clean_metric) / 1e-3
    assert float(graph.scores[w, r]) == pytest.approx(finite, rel=0.02, abs=1e-4)
    found = acdc(bridge, clean, corrupted, metric, threshold=0.02, progress=False)
    assert 0 < int(found.kept.sum()) < found.n_edges
    table = path_patching(bridge, clean, corrupted, metric, senders=["L0H0", "MLP0"], receivers=["L1.attn", "logits"])
    assert table.notna().all().all()
    assert edge_attribution(bridge, clean, corrupted, metric, ig_steps=5).method == "EAP-IG"


def test_smallest_circuit_reaching_a_faithfulness(hand_built):  # noqa: F811
    from workbench.hooks.circuits import smallest_circuit

    clean, corrupted = torch.tensor([CLEAN]), torch.tensor([CORRUPTED])
    graph = edge_attribution(hand_built, clean, corrupted, logit_diff(A, B))
    run = CircuitRun.prepare(hand_built, clean, corrupted, logit_diff(A, B))
    k = smallest_circuit(run, graph, 0.8)
    assert run.faithfulness(graph.top(k)) >= 0.8 > run.faithfulness(graph.top(k - 1))
    assert k == 3  # input → logits alone recovers 2.0 of 3.2; the head needs both its v input and its output
    assert smallest_circuit(run, graph, 1.5) is None


def over_training_table():
    """Two snapshots before discovery ran (no behaviour yet; one at step 0) and two after."""
    found = {"n_edges": 81, "EAP.edges_for_0.8": 20.0, "ACDC.edges_for_0.8": 10.0}
    return pd.DataFrame([
        {"step": 0, "gap": 0.0},
        {"step": 10, "gap": 0.1},
        {"step": 100, "gap": 5.0, "L0H0.key_paths": 0.5, "L0H1.key_paths": 0.0, **found,
         "EAP.faithfulness_at_max_fraction": 0.3, "ACDC.faithfulness_at_max_fraction": 0.75,
         "faithfulness_at_max_fraction": 0.75},
        {"step": 1000, "gap": 9.0, "L0H0.key_paths": 0.3, "L0H1.key_paths": 0.4, **found,
         "EAP.faithfulness_at_max_fraction": 0.1, "ACDC.faithfulness_at_max_fraction": 0.2,
         "faithfulness_at_max_fraction": 0.2}])


def test_circuit_over_training_figure():
    fig = circuit_over_training_figure(over_training_table(), max_fraction=0.1)
    lines = {(t.name, t.yaxis): t for t in fig.data if t.name}
    assert list(lines["ACDC", "y"].x) == [100, 1000] and list(lines["ACDC", "y"].y) == [0.75, 0.2]
    assert list(lines["EAP", "y2"].y) == [20.0, 20.0]  # edges needed, on the second panel
    assert list(lines["L0H1", "y3"].x) == [100, 1000] and list(lines["L0H1", "y3"].y) == [0.0, 0.4]
    assert not any(0 in t.x or 10 in t.x for t in fig.data)  # no log position for 0; no discovery before the gap
    budgets = [s.y0 for s in fig.layout.shapes if s.yref == "y2"]
    assert budgets == [pytest.approx(8.1)]  # 10% of 81 edges


def test_induction_circuit_reports_its_best_snapshot(tmp_path):
    from workbench.experiments import get
    from workbench.experiments.induction_circuit import OVER_TRAINING
    from workbench.runs import Run

    exp = get("induction-circuit")
    cfg = exp.config("smoke")
    assert exp.run_metrics(cfg, Run(tmp_path), None) == {}  # a run without the artifact
    (tmp_path / OVER_TRAINING).write_text(over_training_table().to_json(orient="records"))
    assert exp.run_metrics(cfg, Run(tmp_path), None) == {"snapshot_best_faithfulness_at_max_fraction": 0.75,
                                                         "snapshot_best_step": 100}
    assert "circuit_over_training" in exp.figures(exp.build(cfg).eval(), cfg, Run(tmp_path))


def test_discovery_scores_skip_a_model_whose_behaviour_has_not_formed(hand_built):  # noqa: F811
    from workbench.hooks.circuits import discovery_scores, smallest_circuit

    clean, corrupted, metric = torch.tensor([CLEAN]), torch.tensor([CORRUPTED]), logit_diff(A, B)
    gap = CircuitRun.prepare(hand_built, clean, corrupted, metric).gap
    assert discovery_scores(hand_built, clean, corrupted, metric, min_gap=2 * abs(gap)) == {"gap": gap}
    row = discovery_scores(hand_built, clean, corrupted, metric, ("EAP", "ACDC"), min_gap=abs(gap) / 2)
    graph = edge_attribution(hand_built, clean, corrupted, metric)
    assert row["n_edges"] == graph.n_edges and "EAP-IG.cpr" not in row
    assert row["EAP.edges_for_0.8"] == smallest_circuit(CircuitRun.prepare(hand_built, clean, corrupted, metric),
                                                       graph, 0.8) == 3
    assert row["faithfulness_at_max_fraction"] == max(row["EAP.faithfulness_at_max_fraction"],
                                                      row["ACDC.faithfulness_at_max_fraction"])
