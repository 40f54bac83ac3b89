"""resnet-train installed as clusters install tools: a wheel (what `pip install .` and `pip
install git+...` build too), not the editable install of the Makefile, run from elsewhere."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY

pytestmark = pytest.mark.slow


def pip(*args, cwd=None) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_an_installed_wheel_trains_from_any_directory(tmp_path):
    # The build reads a copy of the sources, so that it leaves no build/ in the checkout.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("resnet_repro", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src))
    [wheel] = (tmp_path / "dist").glob("resnet_repro-*.whl")
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install
    where = subprocess.run(
        [sys.executable, "-c", "from resnet_repro import commandline; print(commandline.CONF_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()) == site / "resnet_repro" / "conf"

    def installed(*args) -> None:
        r = subprocess.run(
            [str(site / "bin" / "resnet-train"), *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]

    installed(*TINY, "schedule.iterations=3")
    [summary] = (elsewhere / "outputs").rglob("summary.json")
    assert json.loads(summary.read_text())["iteration"] == 3
    # Hydra finds the local launcher in the wheel (its plugin scan cannot see into every kind
    # of editable install)
    sweep = [*TINY, "trainer.seed=0,1", "schedule.iterations=3", "hydra.sweep.dir=sweep"]
    installed("-m", "hydra/launcher=local", *sweep)
    assert len(list((elsewhere / "sweep").glob("*/summary.json"))) == 2
    # every config of the checkout is in the wheel
    shipped = {p.relative_to(site / "resnet_repro" / "conf") for p in site.rglob("*.yaml")}
    assert shipped == {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
