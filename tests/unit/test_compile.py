"""The RASP compiler: each primitive compiled alone equals the interpreter; ill-typed programs are refused with one
line; every library program is exact; the recorded circuit is the program's dataflow; grading is right."""

import itertools
import random

import pytest
import torch

from workbench.compile import (
    Aggregate,
    Map,
    RASPError,
    Select,
    SelectorWidth,
    SequenceMap,
    compile_program,
    evaluate,
    indices,
    numerical,
    tokens,
)
from workbench.compile.compiler import live_edges
from workbench.compile.programs import PROGRAMS
from workbench.hooks.circuits.grading import edge_mask, grade, roc_auc
from workbench.hooks.circuits.graph import CircuitGraph

VOCAB = ["a", "b", "c", "d"]


def check_exact(program, vocab=VOCAB, max_len=4, n=300, seed=0):
    compiled = compile_program(program, vocab, max_len)
    rng = random.Random(seed)
    for length in range(1, max_len + 1):
        inputs = [[rng.choice(vocab) for _ in range(length)] for _ in range(n // max_len)]
        for x, got in zip(inputs, compiled.run(inputs), strict=True):
            want = evaluate(program, x)
            if compiled.output_values is None:
                assert got == pytest.approx(want, abs=1e-4), x
            else:
                assert got == want, x
    return compiled


PRIMITIVES = {
    "map (categorical lookup)": lambda: Map(lambda t: {"a": "b", "b": "c", "c": "d", "d": "a"}[t], tokens),
    "map of indices": lambda: Map(lambda i: i % 2, indices),
    "map to a number (numerical)": lambda: numerical(Map(lambda t: VOCAB.index(t) / 2, tokens)),
    "map of a number (discretising MLP)": lambda: Map(lambda v: v > 0.4, numerical(
        Aggregate(Select(indices, indices, "LEQ"), numerical(Map(lambda t: int(t == "a"), tokens))))),
    "numerical map of a number": lambda: numerical(Map(lambda v: 3 * v - 1, numerical(
        Aggregate(Select(indices, indices, "LEQ"), numerical(Map(lambda t: int(t == "b"), tokens)))))),
    "sequence map": lambda: SequenceMap(lambda t, i: f"{t}{i}", tokens, indices),
    "aggregate (categorical, one key)": lambda: Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens),
    "aggregate (numerical mean)": lambda: numerical(Aggregate(Select(tokens, tokens, "EQ"),
                                                              numerical(Map(lambda i: i, indices)))),
    "selector width": lambda: SelectorWidth(Select(tokens, tokens, "LEQ")),
}


@pytest.mark.parametrize("name", PRIMITIVES)
def test_each_primitive_compiled_alone_equals_the_interpreter(name):
    check_exact(PRIMITIVES[name]())


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_library_program_is_exact_on_every_input(name):
    spec = PROGRAMS[name]
    compiled = compile_program(spec.make(), spec.vocab, spec.max_len)
    for length in range(1, spec.max_len + 1):
        combos = itertools.permutations(spec.vocab, length) if spec.unique else itertools.product(spec.vocab,
                                                                                                    repeat=length)
        inputs = [list(x) for x in combos]
        for x, got in zip(inputs, compiled.run(inputs), strict=True):
            want = evaluate(compiled.program, x)
            assert got == (pytest.approx(want, abs=1e-4) if compiled.output_values is None else want), x


@pytest.mark.parametrize("build, message", [
    (lambda: Select(numerical(Map(lambda t: 1.0, tokens)), tokens, "EQ"), "keys=.* is numerical"),
    (lambda: SequenceMap(lambda a, b: a, numerical(Map(lambda t: 1, tokens)), tokens), "input a=.* is numerical"),
    (lambda: Aggregate(tokens, tokens), "the first argument must be a Select"),
    (lambda: Select(tokens, tokens, "ALMOST"), "predicate 'ALMOST' unknown"),
    (lambda: Map(lambda t: t, "tokens"), "expected an SOp"),
    (lambda: compile_program(Map(lambda t: {"a": 1}[t], tokens), VOCAB, 3), r"failed on \('b',\)"),
    (lambda: compile_program(tokens, VOCAB, 3), "the program is the input itself"),
    (lambda: compile_program(Map(lambda v: v, numerical(Aggregate(Select(tokens, tokens, "EQ"), numerical(
        Map(lambda t: 2.5 * VOCAB.index(t), tokens))))), VOCAB, 3), "no finite value set"),
])
def test_an_ill_typed_program_is_refused_with_one_line(build, message):
    with pytest.raises(RASPError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_a_categorical_aggregate_of_several_values_is_an_error_in_the_interpreter():
    mean_token = Aggregate(Select(tokens, tokens, "TRUE"), tokens)
    assert evaluate(mean_token, ["a", "a"]) == ["a", "a"]
    with pytest.raises(RASPError, match="selected different values"):
        evaluate(mean_token, ["a", "b"])


def test_the_recorded_circuit_is_the_programs_dataflow():
    spec = PROGRAMS["sort"]
    compiled = compile_program(spec.make(), spec.vocab, spec.max_len)
    edges = {(e["writer"], e["reader"]) for e in compiled.true_edges}
    # target_position = SelectorWidth(Select(tokens, tokens, LT)) in layer 0; sort = Aggregate in layer 1
    assert edges == {("input", "L0H0.q"), ("input", "L0H0.k"), ("L0H0", "MLP0"), ("input", "L1H0.q"),
                     ("MLP0", "L1H0.k"), ("input", "L1H0.v"), ("L1H0", "logits")}
    # the query of the second head reads only positions: the same in every pair, so no corruption reveals it
    rng = random.Random(0)
    pairs = [(rng.sample(spec.vocab, 5), rng.sample(spec.vocab, 5)) for _ in range(16)]
    live = dict(zip([(e["writer"], e["reader"]) for e in compiled.true_edges], live_edges(compiled, pairs),
                    strict=True))
    assert not live[("input", "L1H0.q")] and live[("MLP0", "L1H0.k")] and live[("L1H0", "logits")]


def test_compiled_weights_load_through_load_model_like_any_model(tmp_path):
    import workbench
    from workbench.experiments.runner import run

    result = run("rasp", mode="smoke", out=tmp_path, progress_bar=False,
                 overrides={"variants": {"histogram": {"task": {"program": "histogram"}}}})
    model = workbench.load_model(result["run_dir"], variant="histogram")
    compiled = compile_program(PROGRAMS["histogram"].make(), PROGRAMS["histogram"].vocab, 5)
    tokens_ = compiled.encode([["a", "b", "a"]])
    assert torch.equal(model(tokens_), compiled.model(tokens_))


def test_grading_counts_found_and_true_edges_and_auc_ranks_them():
    scores = torch.tensor([[-5.0, 0.001, float("nan")], [-0.2, float("nan"), -3.0]])
    graph = CircuitGraph(["input", "L0H0"], ["L0H0.q", "MLP0", "logits"], scores, "EAP", 10.0, 0.0)
    true = edge_mask(graph, [("input", "L0H0.q"), ("L0H0", "logits"), ("input", "MLP0")])
    g = grade(graph, true, threshold=0.01)  # found: |score| ≥ 0.1 → three edges, two of them true
    assert g["precision"] == pytest.approx(2 / 3) and g["recall"] == pytest.approx(2 / 3)
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, False, True])) == pytest.approx(0.5)
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, True, False])) == 1.0
