"""[R1] table 6 at the paper's own schedule (docs/r1_table6.md): the table beside independent
reproductions, made from runs' summaries."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, call

from resnet_repro.errors import UserError
from resnet_repro.evaluate import eval_main
from resnet_repro.nets.models import build_model, model_defaults
from resnet_repro.reproduction.paper import R1_TABLE6_REPRODUCTIONS
from resnet_repro.reproduction.runs import Run, find_runs, read_run
from resnet_repro.reproduction.tables import make_tables
from resnet_repro.weights import file_sha256

sys.path.insert(0, str(ROOT / "scripts"))
from controls import controls_table, read_arm  # noqa: E402


def run(depth: int, iterations: int, test_error: float, seed: int = 0) -> Run:
    config = {
        "model": model_defaults() | {"depth": depth},
        "data": {"name": "cifar10", "root": "data", "batch_size": 128},
        "optim": {"lr": 0.1},
        "schedule": {"iterations": iterations, "milestones": [iterations // 2]},
        "trainer": {"seed": seed},
    }
    metrics = [{"iteration": iterations, "test_error": test_error}]
    summary = {"iteration": iterations, "test_error": test_error}
    return Run(Path(f"r{depth}-{iterations}-{seed}"), config, metrics, summary)


def test_runs_of_the_papers_schedule_stand_beside_the_reproductions():
    text = make_tables([run(20, 64000, 9.12), run(20, 64000, 9.30, seed=1), run(32, 64000, 8.0)])
    section = text.split("at its own schedule (64000 iterations)")[1]
    assert "| ResNet-20 | cifar10 | 9.21 (2) | 8.75 | 8.27 | 7.84 |" in section
    assert "| ResNet-32 | cifar10 | 8.00 (1) | 7.51 | 7.37 | 7.54 |" in section
    for reproduction in R1_TABLE6_REPRODUCTIONS:  # each with its recipe and where it says so
        assert f"- {reproduction.name}: " in section and reproduction.source in section


def test_shorter_runs_are_not_set_beside_the_reproductions():
    text = make_tables([run(20, 1280, 32.6), run(56, 1280, 50.0)])
    assert "| ResNet-20 | 1280 | 1 | 32.60 |" in text  # [R1] table 6 itself has them
    assert "independent reproductions" not in text


# The controls: scripts/controls.py on a folder laid out as ~/runs/r1_table6_short is.
def control_run(path: Path, seed: int, precision: str, test_error: float | None) -> None:
    """A resnet-train run directory as the tables read it; test_error None: not finished."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(
        "model: {depth: 20}\ndata: {name: cifar10}\n"
        "schedule: {iterations: 3200, milestones: [1600, 2400]}\n"
        f"trainer: {{seed: {seed}, precision: {precision}}}\n"
    )
    (path / "metrics.jsonl").write_text(json.dumps({"iteration": 400, "test_error": 50.0}) + "\n")
    if test_error is not None:
        (path / "summary.json").write_text(json.dumps({"test_error": test_error}))


def classic_result(folder: Path, seed: int, test_error: float, iterations: int = 3200) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = {"seed": seed, "iterations": iterations, "milestones": [1600, 2400]}
    (folder / f"seed{seed}.json").write_text(json.dumps(result | {"test_error": test_error}))


def test_controls_table_sets_each_pipeline_beside_resnet_train_in_fp32_seed_by_seed(tmp_path):
    for seed, error in enumerate([20.0, 21.0, 22.0]):
        control_run(tmp_path / "fp32" / str(seed), seed, "fp32", error)
        classic_result(tmp_path / "classic", seed, error + 0.5 - seed)
    control_run(tmp_path / "bf16" / "0", 0, "bf16", 20.4)
    control_run(tmp_path / "bf16" / "1", 1, "bf16", None)  # still training: not counted
    text = controls_table(tmp_path)
    assert "on 3200 iterations (lr divided by 10 at 1600 and 2400)" in text
    rows = {tuple(line.split(" | ")[:2]): line for line in text.splitlines() if line[:2] == "| "}
    assert (
        rows["| resnet-train", "fp32"]
        == "| resnet-train | fp32 | 3 | 20.00 | 21.00 | 22.00 | 21.00 +- 1.00 |  |  |"
    )
    assert rows["| resnet-train", "bf16 autocast"] == (
        "| resnet-train | bf16 autocast | 1 | 20.40 |  |  | 20.40 | +0.40 (+0.40 to +0.40) "
        "| seed 1: iteration 400 of 3200 |"
    )
    classic = rows["| scripts/classic_cifar.py --train", "fp32"]
    assert "| 20.50 | 20.50 | 20.50 | 20.50 +- 0.00 | -0.50 (-1.50 to +0.50) |" in classic
    assert "channels_last" not in text  # the diagnostic arm: a row only where it was run
    control_run(tmp_path / "fp32_nchw" / "0", 0, "fp32", 19.8)
    rows = {line.split(" | ")[0]: line for line in controls_table(tmp_path).splitlines()}
    assert rows["| resnet-train, trainer.channels_last=false"] == (
        "| resnet-train, trainer.channels_last=false | fp32 | 1 | 19.80 |  |  | 19.80 "
        "| -0.20 (-0.20 to -0.20) |  |"
    )


def test_controls_of_different_schedules_or_none_at_all_are_refused(tmp_path):
    with pytest.raises(UserError, match="holds none of fp32/, bf16/, classic/"):
        controls_table(tmp_path)
    control_run(tmp_path / "fp32" / "0", 0, "fp32", 20.0)
    classic_result(tmp_path / "classic", 0, 20.0, iterations=1600)
    with pytest.raises(UserError, match="trained different schedules"):
        controls_table(tmp_path)


def test_evidence_keeps_what_the_tables_read_and_leaves_checkpoints(tmp_path):
    src = tmp_path / "controls"
    control_run(src / "fp32" / "0", 0, "fp32", 20.0)
    (src / "fp32" / "0" / "checkpoints").mkdir()
    (src / "fp32" / "0" / "checkpoints" / "last.pt").write_bytes(b"x")
    (src / "fp32" / "0" / "train.log").write_text("log")
    classic_result(src / "classic", 0, 20.5)
    out = tmp_path / "docs"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evidence.py"), str(src), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == [
        "controls/classic/seed0.json",
        "controls/fp32/0/config.yaml",
        "controls/fp32/0/metrics.jsonl",
        "controls/fp32/0/summary.json",
    ]
    assert controls_table(out / "controls") == controls_table(src)


# The page itself: its tables are the scripts' output on the runs' files kept beside it, and
# the weights it ships are those runs' (their numbers checked on the real data in
# test_real_data.py).
DOCS = ROOT / "docs" / "r1_table6"
WEIGHTS = ROOT / "weights"
SHIPPED = ["resnet20"]  # resnet32 joins when its run has finished


def test_the_pages_tables_are_made_from_its_runs():
    assert (DOCS / "tables.md").read_text() == make_tables(find_runs([DOCS / "runs"])) + "\n"
    assert (DOCS / "controls.md").read_text() == controls_table(DOCS / "controls") + "\n"
    page = (ROOT / "docs" / "r1_table6.md").read_text()
    assert controls_table(DOCS / "controls") in page
    # The fp32 arm's first two seeds, run again on another CPU: the page quotes the kept runs.
    first, _, _ = read_arm(DOCS / "controls_first_machine", "fp32")
    assert f"{first[0]:.2f}% and {first[1]:.2f}%" in page


def test_the_shipped_weights_are_the_finished_runs_and_the_page_gives_their_checksums():
    assert sorted(p.stem for p in WEIGHTS.glob("*.pt")) == sorted(SHIPPED)
    page = (ROOT / "docs" / "r1_table6.md").read_text()
    for name in SHIPPED:
        path = WEIGHTS / f"{name}.pt"
        about = json.loads(path.with_suffix(".json").read_text())
        assert file_sha256(path) == about["sha256"] and about["sha256"] in page
        summary = read_run(DOCS / "runs" / name).summary
        assert about["trained"]["iteration"] == summary["iteration"] == 64000
        assert about["trained"]["test_error"] == summary["test_error"]
        assert f"{summary['test_error']:.2f}" in page
        model = build_model(**about["model"])
        model.load_state_dict(torch.load(path, weights_only=True))  # strict, and no code run


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_file_evaluates_and_refuses_data_it_was_not_made_for(name, tmp_path, capsys):
    path = WEIGHTS / f"{name}.pt"
    out = tmp_path / "eval.json"
    assert call(eval_main, path, "data=synthetic", "data.test_size=256", "--json", out) == 0
    result = json.loads(out.read_text())
    assert result["test_images"] == 256 and result["sha256"] == file_sha256(path)
    assert result["model"] == "ResNet-" + name.removeprefix("resnet")
    capsys.readouterr()
    assert call(eval_main, path, "data=cifar100", "data.root=nowhere") == 2
    said = capsys.readouterr().err
    assert "is a net with 10 classes, and data=cifar100 has 100" in said and "Traceback" not in said
