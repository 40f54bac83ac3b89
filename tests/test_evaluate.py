"""resnet-eval and resnet-export: a run's error evaluated again from its directory, its checkpoint
and its exported weights; files that are damaged, foreign or of another net refused with a
sentence and exit 2; ImageNet weights that load into torchvision."""

import json
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY, call, image_folder_run, run_cli
from fixtures import write_jpeg_folder

from resnet_repro.entry import command
from resnet_repro.evaluate import eval_main, export_main
from resnet_repro.nets.models import build_model

EVAL, EXPORT = command("resnet-eval"), command("resnet-export")
SHORT = ["schedule.iterations=6", "schedule.milestones=[3,5]", "trainer.eval_every=3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """ResNet-8 on synthetic data, 6 iterations: a finished run with a summary."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    r = run_cli(*TINY, *SHORT, f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr
    return run_dir


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_a_run_evaluated_again_gives_its_own_test_error(tiny_run, tmp_path, monkeypatch):
    summary = json.loads((tiny_run / "summary.json").read_text())
    r = run(*EVAL, tiny_run, "--json", tmp_path / "run.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "test top-1 error" in r.stdout
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["test_error"] == summary["test_error"]
    assert result["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    assert result["test_images"] == 128 and result["iteration"] == 6
    assert result["kind"] == "run" and result["trained"]["test_error"] == summary["test_error"]

    # the checkpoint alone, and by default into outputs/eval/ of the working directory
    monkeypatch.chdir(tmp_path)
    assert call(eval_main, tiny_run / "checkpoints" / "last.pt") == 0
    written = json.loads((tmp_path / "outputs" / "eval" / "run-last.json").read_text())
    assert written["test_error"] == summary["test_error"] and written["kind"] == "checkpoint"


@pytest.mark.slow
def test_exported_weights_are_a_plain_state_dict_that_evaluates_the_same(
    tiny_run, tmp_path, capsys
):
    out = tmp_path / "r8.pt"
    r = run(*EXPORT, tiny_run, out)  # the installed command, as a user runs it
    assert r.returncode == 0, r.stderr
    assert "iteration 6 of 6" in r.stdout
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.is_contiguous() for v in state.values())
    ckpt = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    assert state.keys() == ckpt["model"].keys()
    assert all(torch.equal(state[k], ckpt["model"][k]) for k in state)
    build_model(8).load_state_dict(state)  # strict
    about = json.loads(out.with_suffix(".json").read_text())
    assert about["model"]["depth"] == 8 and about["data"]["name"] == "synthetic"
    assert about["trained"]["iteration"] == 6 and about["trained"]["seed"] == 0
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert about["trained"]["test_error"] == summary["test_error"]

    # the file and its description alone: no model or data named on the command line
    assert call(eval_main, out, "--json", tmp_path / "e.json") == 0
    assert json.loads((tmp_path / "e.json").read_text())["test_error"] == summary["test_error"]
    # an export is never written over by accident
    assert call(export_main, tiny_run, out) == 2
    assert call(export_main, tiny_run, out, "--force") == 0


def refusal(capsys, main, *args) -> str:
    assert call(main, *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


class Code:  # a pickle of it names a class to import: loading it could run code
    pass


@pytest.mark.parametrize(
    "content, says",
    [
        (b"", "is empty"),
        (b"\x89PNG not a checkpoint at all", "not a whole PyTorch file"),
        ("truncated", "not a whole PyTorch file"),
        ("code", "could run code"),
        ("foreign", "holds a dict of best_prec1, state_dict, not weights"),
    ],
)
def test_damaged_and_foreign_files_are_refused(content, says, tmp_path, capsys):
    path = tmp_path / "w.pt"
    if content == "truncated":
        torch.save(build_model(8).state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
    elif content == "code":
        torch.save({"model": Code()}, path, pickle_module=pickle)
    elif content == "foreign":  # a popular CIFAR repository's format
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "best_prec1": 91.7}, path)
    else:
        path.write_bytes(content)
    assert says in refusal(capsys, eval_main, path)


@pytest.mark.slow
def test_weights_of_another_net_are_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "r8.pt"
    assert call(export_main, tiny_run, out) == 0
    bare = tmp_path / "bare.pt"  # without its description: the command line names the net
    bare.write_bytes(out.read_bytes())
    err = refusal(capsys, eval_main, bare, "data=synthetic")  # ResNet-20, the default model
    assert "does not fit ResNet-20: it holds an 8-layer CIFAR net" in err
    assert "Name the net it is" in err
    err = refusal(capsys, eval_main, bare, "data=synthetic", "model=resnet", "model.depth=8",
                  "data.num_classes=100")  # fmt: skip
    assert "a net with 10 classes, and data=synthetic has 100" in err
    err = refusal(capsys, eval_main, out, "model=resnet20")  # it says what it is
    assert "holds ResNet-8 (model.depth=8)" in err and "model.depth=20" in err
    err = refusal(capsys, eval_main, tiny_run, "model.shortcut=B")
    assert "model.shortcut=A" in err
    err = refusal(capsys, eval_main, out, "data=cifar100", "data.root=/nonexistent")
    assert "a net with 10 classes, and data=cifar100 has 100" in err
    changed = bytearray(out.read_bytes())  # a byte changed inside a tensor: torch.load passes it
    changed[len(changed) // 2] ^= 0xFF
    out.write_bytes(bytes(changed))
    assert "does not match the sha256 that r8.json gives" in refusal(capsys, eval_main, out)


def test_paths_that_hold_no_weights_are_refused(tmp_path, capsys):
    assert "no such file or run directory" in refusal(capsys, eval_main, tmp_path / "x.pt")
    assert "holds no checkpoint" in refusal(capsys, eval_main, tmp_path)
    assert "name the weights file" in refusal(capsys, export_main, tmp_path, tmp_path / "a.json")


@pytest.mark.slow
def test_imagenet_weights_load_into_torchvision_and_evaluate_top5_and_ten_crops(tmp_path, capsys):
    """ResNet-18 on an image folder of 12 classes: the export loads strictly into torchvision's
    resnet18 and computes what our net computes; evaluation has top-5 and 10-crop testing."""
    from torchvision.models import resnet18

    root = write_jpeg_folder(tmp_path / "folder", classes=12, train=2, val=2)
    run_dir = tmp_path / "run"
    args = image_folder_run(root, run_dir, batch=8, workers=0, eval_every=100)
    r = run_cli("model=resnet18", *args, "trainer.threads=1")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "r18.pt"
    assert call(export_main, run_dir, out) == 0
    assert "loads into torchvision.models.resnet18(num_classes=12)" in capsys.readouterr().out
    tv = resnet18(num_classes=12)
    tv.load_state_dict(torch.load(out, weights_only=True))  # strict
    ours = build_model(18, arch="imagenet", shortcut="B", num_classes=12)
    ours.load_state_dict(torch.load(out, weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(tv.eval()(x), ours.eval()(x))

    ten_crop = [out, f"data.root={root}", "data.workers=0", "data.ten_crop=true"]
    assert call(eval_main, *ten_crop, "--json", tmp_path / "ten.json") == 0
    ten = json.loads((tmp_path / "ten.json").read_text())
    assert ten["ten_crop"] and ten["val_images"] == 24
    assert {"val_error", "val_top5_error", "val_loss"} <= ten.keys()
    assert call(eval_main, run_dir, "data.workers=0", "--json", tmp_path / "centre.json") == 0
    centre = json.loads((tmp_path / "centre.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert centre["val_top5_error"] == summary["val_top5_error"] and not centre["ten_crop"]
