"""The figure and table scripts on run directories made here by short real runs (an experiment's
sweep as a user starts it), and what they say when given something that is not a set of runs."""

import json
import shutil
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli
from fixtures import write_image_folder

from resnet_repro.entry import command
from resnet_repro.nets.models import build_model
from resnet_repro.reproduction.responses import layer_responses, response_layers
from resnet_repro.training.records import METRICS

pytestmark = pytest.mark.slow
SCRIPTS = ROOT / "scripts"
EXPORT = command("resnet-export")
SHORT = [  # a few iterations, two evaluations, one thread
    "schedule.iterations=6",
    "schedule.milestones=[3,5]",
    "trainer.log_every=2",
    "trainer.eval_every=3",
    "trainer.threads=1",
]


def script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def degradation(tmp_path_factory):
    """experiment=degradation_cpu with two seeds, on a tiny CIFAR-10 image folder: plain-20,
    plain-56, ResNet-20 and ResNet-56, 8 runs of 6 iterations."""
    tmp = tmp_path_factory.mktemp("degradation")
    write_image_folder(tmp / "cifar10", {"train": 4, "test": 3})
    sweep = tmp / "sweep"
    r = run_cli(
        "experiment=degradation_cpu",
        "trainer.seed=0,1",
        f"data.root={tmp / 'cifar10'}",
        "data.download=false",
        "data.batch_size=20",
        *SHORT,
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 0, r.stderr
    return sweep


@pytest.fixture(scope="module")
def shortcut_types(tmp_path_factory):
    """experiment=shortcuts_cpu, three of its cases with two seeds, on a small net and synthetic
    data."""
    sweep = tmp_path_factory.mktemp("shortcuts") / "sweep"
    r = run_cli(
        "experiment=shortcuts_cpu",
        "shortcut_case=original,scaling_0.5_1,conv1x1",
        "trainer.seed=0,1",
        "model.depth=8",
        "data=synthetic",
        "data.train_size=64",
        "data.test_size=32",
        "data.batch_size=32",
        *SHORT,
        "schedule.warmup_iterations=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 0, r.stderr
    return sweep


def summaries(sweep, model: str) -> list[dict]:
    found = [
        json.loads(p.read_text()) for p in sorted(sweep.glob(f"*model={model},*/summary.json"))
    ]
    assert found, model
    return found


def table_row(text: str, name: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_sweep_runs_every_net_and_seed_tagged(degradation):
    runs = sorted(p.parent for p in degradation.glob("*/summary.json"))
    assert len(runs) == 8
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["tags"] == ["degradation_cpu"]
        assert "tags:\n- degradation_cpu" in (run / "config.yaml").read_text()
    assert {s["model"] for s in map(json.loads, (r.joinpath("summary.json").read_text()
                                                 for r in runs))} == {
        "plain20", "plain56", "resnet20", "resnet56"
    }  # fmt: skip


def test_table6_holds_the_measured_numbers(degradation, tmp_path):
    r = script("tables.py", degradation, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "tables.md").read_text()
    assert "[R1] table 6" in text and "8 runs, 8 finished" in text
    for name, model, paper in (("ResNet-20", "resnet20", 8.75), ("plain-56", "plain56", 13.5)):
        errors = [s["test_error"] for s in summaries(degradation, model)]
        median, mean, std = (
            statistics.median(errors),
            statistics.mean(errors),
            statistics.stdev(errors),
        )
        cells = table_row(text, name)
        assert cells[1:5] == ["6", "2", f"{median:.2f}", f"{mean:.2f} +- {std:.2f}"]
        assert cells[5] == f"{min(errors):.2f}" and cells[6].startswith(f"{paper:.2f}")
        assert cells[7] == f"{median - paper:+.2f}"
    assert table_row(text, "ResNet-110")[3] == "not run"


def test_unfinished_runs_are_marked_and_not_averaged(degradation, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(degradation, runs)
    cut = next(runs.glob("*model=resnet20,*trainer.seed=1"))
    (cut / "summary.json").unlink()
    lines = (cut / METRICS).read_text().splitlines()
    (cut / METRICS).write_text("\n".join(lines[:1]) + "\n")  # stopped at iteration 2
    r = script("tables.py", runs, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "not finished (iteration 2 of 6)" in r.stderr
    [seed0] = [s["test_error"] for s in summaries(runs, "resnet20")]
    cells = table_row((tmp_path / "out" / "tables.md").read_text(), "ResNet-20")
    assert cells[2:4] == ["1", f"{seed0:.2f}"]
    assert cells[8] == "1 unfinished (furthest: iteration 2 of 6)"


def test_make_figures_draws_figures_6_and_7_and_the_tables(degradation, tmp_path):
    r = subprocess.run(
        ["make", "-s", "figures", f"RUNS={degradation}", f"OUT={tmp_path}", "ARGS=--threads 1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    for name in ("figure6.png", "figure6.pdf", "figure7.png", "figure7.pdf"):
        assert (tmp_path / name).stat().st_size > 5000, name
    assert "| ResNet-56 | 6 | 2 |" in (tmp_path / "tables.md").read_text()
    assert not (tmp_path / "curves.png").exists()  # no shortcut type or unit to compare


def test_figure7_of_a_run_whose_checkpoints_are_gone_reads_its_exported_weights(
    degradation, tmp_path
):
    """docs/r1_table6's case: ResNet-20's run directory is gone, its evidence copy and exported
    weights are in the checkout, ResNet-32's run is on disk. Figure 7 is the same as from the
    run itself; without the weights, or with another run's, it says what to give."""
    resnet20, resnet56 = (
        next(degradation.glob(f"*model={m},*trainer.seed=0")) for m in ("resnet20", "resnet56")
    )
    for run, name in ((resnet20, "r20"), (resnet56, "r56")):
        r = subprocess.run([*EXPORT, run, tmp_path / f"{name}.pt"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = script("evidence.py", resnet20, "--out", tmp_path / "evidence")
    assert r.returncode == 0, r.stderr
    copy = tmp_path / "evidence" / resnet20.name
    assert not (copy / "checkpoints").exists()

    def figure7(*args):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        r = script("figure7.py", *args, "--out", out, "--threads", "1")
        return r, (json.loads((out / "figure7.json").read_text()) if r.returncode == 0 else None)

    _, direct = figure7(resnet20, resnet56)
    r, from_weights = figure7(copy, resnet56, "--weights", tmp_path / "r56.pt", tmp_path / "r20.pt")
    assert r.returncode == 0, r.stderr
    assert from_weights == direct and set(direct) == {"ResNet-20", "ResNet-56"}
    for args in ([], ["--weights", tmp_path / "r56.pt"]):  # none, or another depth's
        r, _ = figure7(copy, resnet56, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "no weights file given with --weights is of it" in r.stderr, r.stderr
        assert "at its last iteration 6" in r.stderr and "--no-figure7" in r.stderr


def test_curves_and_table_of_the_shortcut_types(shortcut_types, tmp_path):
    # ARGS given, even empty: `make test ARGS="-k ..."` hands its ARGS down (MAKEFLAGS)
    r = subprocess.run(
        ["make", "-s", "figures", f"RUNS={shortcut_types}", f"OUT={tmp_path}", "ARGS="],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "curves.png").stat().st_size > 5000
    assert not (tmp_path / "figure6.png").exists()  # one depth of [R1]'s nets: no figure 6
    text = (tmp_path / "tables.md").read_text()
    assert "## [R2] table 1's shortcut types at another depth, schedule or data set" in text
    assert "Runs that no table" not in text  # the table above shows them all
    runs = {
        case: [
            json.loads(p.read_text())
            for p in sorted(shortcut_types.glob(f"*shortcut_case={case},*/summary.json"))
        ]
        for case in ("original", "scaling_0.5_1", "conv1x1")
    }
    assert all(len(r) == 2 for r in runs.values())

    def cell(case, key, digits=2):
        values = [s[key] for s in runs[case]]
        mean = statistics.fmean(values)
        return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    def mean(case, key):
        return statistics.fmean(s[key] for s in runs[case])

    # curves.md: the numbers drawn; its last row is each configuration's final means.
    last = table_row((tmp_path / "curves.md").read_text(), "6")
    finals = {f"{mean(c, 'train_loss'):.3f} / {mean(c, 'test_error'):.1f}" for c in runs}
    assert set(last[1:]) == finals and len(last) == 4
    for name, case, paper in (
        ("original (identity)", "original", "6.61"),
        ("constant scaling 0.5 / 1", "scaling_0.5_1", "fail (> 20)"),
        ("1x1 conv shortcut", "conv1x1", "12.22"),
    ):
        cells = table_row(text, name)
        assert cells[2:4] == ["6", "2"]
        assert cells[4:7] == [
            cell(case, "train_loss", 3), cell(case, "train_error"), cell(case, "test_error")
        ]  # fmt: skip
        loss, error = (mean(case, k) - mean("original", k) for k in ("train_loss", "test_error"))
        assert cells[7] == ("" if case == "original" else f"{loss:+.3f}, {error:+.2f}")
        assert cells[8] == paper


@pytest.mark.parametrize("name", ["figure6.py", "figure7.py", "curves.py"])
def test_a_figure_of_two_data_sets_is_refused(name, degradation, shortcut_types, tmp_path):
    r = script(name, degradation, shortcut_types, "--out", tmp_path)
    assert r.returncode == 2
    assert "compares runs on one data set" in r.stderr and "cifar10" in r.stderr
    assert "synthetic" in r.stderr and "Traceback" not in r.stderr


def test_runs_that_are_not_there_or_not_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "never_started" / ".hydra").mkdir(parents=True)
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "config.yaml").write_text("just: text\n")
    cases = {
        tmp_path / "missing": "is not a folder",
        tmp_path / "empty": "holds no runs: no config.yaml of a resnet-train run",
        tmp_path / "never_started": "training never started",
        tmp_path / "not_a_run": "is not a readable resnet-train run directory",
    }
    # Every script reads runs through runs.find_runs: each case once, through two scripts.
    for i, (path, message) in enumerate(cases.items()):
        name = ("tables.py", "figure6.py")[i % 2]
        r = script(name, path, "--out", tmp_path / "out")
        assert r.returncode == 2 and message in r.stderr, (name, path, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr) < 500


def test_figure7_measures_a_known_standard_deviation():
    # Each 3x3 layer's BN with weight 0 and bias b outputs b[c] everywhere in channel c: the
    # standard deviation over all of the layer's values is that of b, whatever the input.
    torch.manual_seed(0)
    for depth, layers in ((20, 19), (56, 55)):
        for shortcut in ("A", "none"):
            model = build_model(depth, shortcut=shortcut)
            bns = response_layers(model)
            assert len(bns) == layers  # the first conv, and two 3x3 convs a unit
            expected = []
            for i, bn in enumerate(bns):
                bias = torch.arange(bn.num_features, dtype=torch.float32) * (i + 1) / 10
                bn.weight.data.zero_()
                bn.bias.data.copy_(bias)
                expected.append(bias.std(unbiased=False).item())
            batches = [(torch.randn(8, 3, 32, 32), None), (torch.randn(4, 3, 32, 32), None)]
            assert layer_responses(model, batches) == pytest.approx(expected, rel=1e-6)
    # On a net as initialised, eval-mode BN (mean 0, var 1) passes the conv output's spread on.
    model = build_model(20)
    x = torch.randn(16, 3, 32, 32)
    first = model.bn1.eval()(model.conv1(x))
    assert layer_responses(model, [(x, None)])[0] == pytest.approx(first.std().item(), rel=1e-3)
