"""The models shipped in data/ still meet their criteria when re-evaluated from disk."""

import pytest

from workbench import experiments
from workbench.config import read_json
from workbench.experiments.runner import evaluate_saved
from workbench.runs import DATA_ROOT

SHIPPED = [name for name in experiments.names() if (DATA_ROOT / name / "model.safetensors").exists()]


def test_foundation_experiment_is_shipped():
    assert "induction" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_meets_its_criteria(name):
    stored = read_json(DATA_ROOT / name / "result.json")
    assert stored["mode"] == "quick" and stored["command"].startswith(f"workbench run {name} --quick")
    result = evaluate_saved(DATA_ROOT / name)
    assert result["metrics"] == pytest.approx(stored["metrics"], rel=1e-4, abs=1e-6)
    failed = [c for c in result["criteria"] if not c["passed"]]
    assert not failed, failed
