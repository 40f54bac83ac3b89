"""The scripts for a lent GPU machine (scripts/gpu_*.sh, docs/speed.md "On a GPU"), in what can
be checked without one: they stop at once, saying why, when what they need is not there, and
the package's commands run where no console script is installed. Their whole run is rehearsed
on a stand-in of that machine (docs/speed.md)."""

import os
import shutil
import site
import subprocess
import sys

import pytest
from conftest import ROOT

from resnet_repro.entry import command

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_preflight  # noqa: E402


def test_the_check_stops_at_once_without_its_wheels(tmp_path):
    (tmp_path / "scripts").mkdir()
    for name in ("gpu_check.sh", "gpu_env.sh", "gpu_figure6.sh", "gpu_folders.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    for script in ("gpu_check.sh", "gpu_figure6.sh", "gpu_folders.sh"):
        r = subprocess.run(
            ["bash", str(tmp_path / "scripts" / script), str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and "run 'make gpu-wheels'" in r.stdout, r.stdout + r.stderr


def test_the_preflight_names_what_is_missing_and_where_it_comes_from(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_preflight, "NEEDED", {"hydra": "x", "no_such_module": ".whl/ (y)"})
    found = gpu_preflight.problems()
    assert len(found) == 1 and found[0].startswith("no_such_module does not import")
    assert found[0].endswith("it comes from .whl/ (y)")
    monkeypatch.setattr(gpu_preflight, "OLDEST", {"torch": (99, 0)})
    assert "older than 99.0" in gpu_preflight.problems()[-1]


@pytest.mark.slow  # it starts processes
def test_the_preflight_passes_here_and_describes_the_machine(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_preflight.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "gpu_preflight: ready" in r.stdout, r.stderr
    machine = (tmp_path / "machine.txt").read_text()
    assert machine.startswith("Python ") and "torch " in machine and "CPU: " in machine


@pytest.mark.slow  # it starts processes
def test_commands_run_through_python_where_no_script_is_installed(tmp_path, monkeypatch):
    """On the GPU machine the package is on PYTHONPATH and no console script is installed:
    the tests, the benchmark and the scripts run each command through the Python at hand."""
    bare = tmp_path / "bin" / "python"  # a Python with nothing installed beside it
    bare.parent.mkdir()
    bare.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(bare))
    # what scripts/gpu_env.sh does there: the packages and the checkout on PYTHONPATH
    paths = [*site.getsitepackages(), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    for name, says in (("resnet-train", "resnet-train:"), ("resnet-eval", "usage: resnet-eval"),
                       ("torchrun", "--nproc-per-node")):  # fmt: skip
        argv = command(name)
        assert argv[0] == str(bare)
        r = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0 and says in r.stdout, r.stderr
