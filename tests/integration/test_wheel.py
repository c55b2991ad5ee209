"""`pip install .` from a wheel works: nothing is found relative to the package's install path.

The wheel goes into a fresh venv; its dependencies come from the test venv's site-packages through a
plain path entry (which does not activate the checkout's editable install), so only the wheel's own
files are importable as `workbench`.
"""

import site
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp / "dist").glob("workbench-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", where], capture_output=True, text=True,
                             check=True).stdout.strip()
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (venv / purelib.split(str(venv) + "/", 1)[1] / "deps.pth").write_text("\n".join(dict.fromkeys(deps)))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


def test_the_installed_package_is_the_wheel_and_carries_the_dashboard(fresh_venv, tmp_path):
    code = ("import workbench, workbench.cli as c; cmd = c.dashboard_command('127.0.0.1', 1); "
            "import pathlib; print(workbench.__file__); print(pathlib.Path(cmd[4]).parent)")
    out = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    package, app_dir = out.stdout.split()
    assert package.startswith(str(fresh_venv)), out.stderr
    views = sorted(p.name for p in (REPO / "workbench" / "dashboard" / "views").glob("*.py"))
    assert "circuits.py" in views  # every page of the checkout travels in the wheel
    assert sorted(p.name for p in __import__("pathlib").Path(app_dir, "views").glob("*.py")) == views


def test_workbench_list_and_eval_from_the_wheel(fresh_venv):
    workbench = str(fresh_venv / "bin" / "workbench")
    listing = subprocess.run([workbench, "list"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0 and "[shipped: pass]" in listing.stdout, listing.stderr
    evaluated = subprocess.run([workbench, "eval", "data/induction"], cwd=REPO, capture_output=True, text=True,
                               timeout=300)
    assert evaluated.returncode == 0 and "induction (quick): PASSED" in evaluated.stdout, evaluated.stderr
