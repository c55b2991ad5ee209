"""Every experiment's quick preset, retrained from scratch, meets its criteria. Minutes each, so marked
slow: run by hand (`pytest -m slow`) and timed by `workbench bench --catalog`; CI re-evaluates the
shipped quick models instead (test_shipped.py)."""

import pytest

from workbench import experiments
from workbench.experiments.runner import run

NOT_YET = {"looped": "learns, but error at 2b loops is 1.8x that at b (README: In-context learning)",
           "no-op-heads": "clipped softmax lowers the residual ∞-norm 1.24x, not 1.3x (README: Attention variants)",
           "icl-mixture": "1.9x / 3.2x / 8.1x each class's optimum, not 1.3x (README: More phenomena)"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.xfail(reason=NOT_YET[name], strict=True))
                                  if name in NOT_YET else name for name in experiments.names()])
def test_quick_preset_reproduces(name, tmp_path):
    result = run(name, mode="quick", out=tmp_path, progress_bar=False)
    failed = [(c["name"], c["value"], c["op"], c["bound"]) for c in result["criteria"] if not c["passed"]]
    assert not failed, failed
