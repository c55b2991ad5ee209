"""The dashboard's caches key by a run's path; a run retrained, resumed or reshipped under that path clears them."""

import shutil
import time

import streamlit as st

from workbench.dashboard.common import forget_if_changed
from workbench.runs import atomic_write


def test_a_run_changed_under_the_same_path_clears_the_caches(tmp_path):
    calls = []

    @st.cache_resource
    def load(path: str) -> int:
        calls.append(path)
        return len(calls)

    run = tmp_path / "data" / "induction"
    run.mkdir(parents=True)
    forget_if_changed(run)
    assert load(str(run)) == 1 and load(str(run)) == 1  # cached
    forget_if_changed(run)
    assert load(str(run)) == 1  # nothing changed: still cached
    time.sleep(0.05)  # file times tick in jiffies
    atomic_write(run / "result.json", "{}")  # a run finishing
    forget_if_changed(run)
    assert load(str(run)) == 2
    time.sleep(0.05)
    staged = tmp_path / "data" / ".staging"  # `ship` replacing data/EXP whole: copies, then one rename
    staged.mkdir()
    shutil.copyfile(run / "result.json", staged / "result.json")
    shutil.rmtree(run)
    staged.rename(run)
    forget_if_changed(run)
    assert load(str(run)) == 3
