"""resnet-train as a user runs it: a subprocess, on tiny synthetic data."""

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import time

import pytest
import torch
from conftest import RESUME, TINY, TINY_MODEL, TRAIN, assert_same_end, image_folder_run, run_cli
from fixtures import write_jpeg_folder
from PIL import Image

from resnet_repro.training.records import read_metrics

pytestmark = pytest.mark.slow


def test_a_run_leaves_its_record(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "schedule.iterations=8",
        "schedule.warmup_iterations=4",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "data.val_split=64",
        f"hydra.run.dir={run_dir}",
    ]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    records = read_metrics(run_dir)
    assert [m["iteration"] for m in records] == [2, 4, 6, 8]
    assert [m["lr"] for m in records] == [0.01, 0.01, 0.1, 0.1]  # warm-up, then back to 0.1
    assert {"epoch", "train_loss", "train_error", "images_per_sec"} <= records[0].keys()
    assert "test_error" not in records[0]
    assert {"test_error", "test_loss", "val_error"} <= records[1].keys()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["parameters"] == 75290 and summary["depth"] == 8
    assert summary["test_error"] == records[-1]["test_error"]
    assert summary["code_version"] and summary["wall_time_s"] > 0
    assert "depth: 8" in (run_dir / "config.yaml").read_text()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert torch.load(run_dir / "checkpoints" / "last.pt")["iteration"] == 8
    assert "test err" in r.stdout + r.stderr  # concise log lines when not on a terminal

    again = run_cli(*args)  # the same command again: nothing left to do
    assert again.returncode == 0 and "already" in again.stdout + again.stderr
    assert len(read_metrics(run_dir)) == 4

    changed = run_cli(*args[:-1], "model.depth=14", f"hydra.run.dir={run_dir}")
    assert changed.returncode == 2 and "different experiment" in changed.stderr
    assert "model.depth: 8 in the checkpoint, 14 now" in changed.stderr
    assert torch.load(run_dir / "checkpoints" / "last.pt")["iteration"] == 8
    # The refused command left the run directory describing its own checkpoint.
    assert "model.depth=14" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "depth: 8" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert not list(run_dir.glob(".hydra-*"))


def test_the_log_reads_the_same_on_a_terminal(tmp_path):
    # On a terminal a progress bar is drawn; train.log still gets every metric line.
    args = [*TINY, "schedule.iterations=12", "trainer.log_every=2", "trainer.eval_every=4"]
    args += ["data.val_split=64"]
    plain = run_cli(*args, f"hydra.run.dir={tmp_path / 'plain'}")
    assert plain.returncode == 0, plain.stderr
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    proc = subprocess.Popen(
        [*TRAIN, *args, f"hydra.run.dir={tmp_path / 'tty'}"],
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    assert proc.wait(timeout=120) == 0, screen.decode(errors="replace")
    os.close(main)
    assert b"it/s" in screen or b"s/it" in screen  # the bar was there

    def metric_lines(run_dir):
        log = (run_dir / "train.log").read_text()
        lines = [ln.split("] ", 1)[1] for ln in log.splitlines() if "] it " in ln]
        return [re.sub(r"\d+ img/s", "img/s", ln) for ln in lines]

    assert metric_lines(tmp_path / "tty") == metric_lines(tmp_path / "plain")
    assert len(metric_lines(tmp_path / "plain")) == 6
    assert sum("val err" in ln for ln in metric_lines(tmp_path / "tty")) == 3


# SIGKILL at random moments, twice: test_faults.py.
def test_resume_after_a_sigterm_is_bit_identical(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    args = [*RESUME, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [*TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ckpt = run_dir / "checkpoints" / "last.pt"
    while not ckpt.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # a clean stop
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "hydra.run.dir=" in err and "resume" in err
    stopped_at = torch.load(ckpt)["iteration"]
    assert 0 < stopped_at < 150

    r = run_cli(*args)  # the same command again resumes
    assert r.returncode == 0, r.stderr
    assert f"resuming from iteration {stopped_at}" in r.stdout + r.stderr
    assert_same_end(uninterrupted, run_dir)
    # The record reads as one run: every iteration once, and the same numbers, but for the
    # training window the interruption cut short.
    ra, rb = read_metrics(uninterrupted), read_metrics(run_dir)
    assert [m["iteration"] for m in rb] == [m["iteration"] for m in ra]
    cut = min(m["iteration"] for m in ra if m["iteration"] > stopped_at)
    for ma, mb in zip(ra, rb, strict=True):
        if ma["iteration"] != cut:
            assert ma["train_loss"] == mb["train_loss"]
            assert ma.get("test_error") == mb.get("test_error")


# Each case goes through the whole command; the settings' own checks, value by value, are
# tested in-process in test_settings.py.
BAD = {
    "depth": (["model.depth=21"], "6n+2"),
    "shortcut": (["model.shortcut=D"], "A, B, C, none"),
    "preset": (["model=resnet21"], "resnet110"),  # Hydra lists the presets
    "no-data": (["data=cifar10", "data.download=false", "data.root={empty}"], "No cifar10 data"),
    "cuda": (["trainer.device=cuda"], "no CUDA GPU"),
    "lr": (["optim.lr=nan"], "optim.lr=nan must be a finite number > 0"),
    "typo": (["modle=resnet20"], "did you mean model?"),
    "placement": (["model.activation=preact"], "original, bn_after_add"),
    "gating-plain": (
        ["model.shortcut=none", "model.shortcut_variant=exclusive_gating"],
        "plain net",
    ),
    "bottleneck": (["model.block=bottleneck", "model.depth=14"], "9n+2 with n >= 1"),
    "no-folder": (["data=imagefolder", "data.root={empty}"], "No image folder at data.root"),
    "unset-root": (["data=imagenet"], "data.root must be given"),
    "sync-bn-cpu": (["trainer.sync_bn=true", "trainer.device=cpu"], "needs CUDA GPUs"),
    "fp16-cpu": (["trainer.precision=fp16", "trainer.device=cpu"], "on a CPU use bf16"),
    "slurm-here": (["hydra/launcher=slurm"], "this machine has no sbatch"),
    "cfg-and-multirun": (["--cfg", "job", "-m"], "--multirun and --cfg cannot be combined"),
    "compile-checkpointing": (
        ["trainer.compile=true", "model.checkpointing=true"],
        "cannot be combined with model.checkpointing",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_user_mistakes_end_with_a_message_and_nothing_written(tmp_path, case):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    overrides, expected = BAD[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    overrides = [o.format(empty=empty) for o in overrides]
    base = TINY_MODEL if overrides[0].startswith("data=") else TINY
    r = run_cli(*base, *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert expected in out and "Traceback" not in out
    assert len(r.stderr) < 1500
    assert not (tmp_path / "run").exists() and not list(empty.iterdir())


def test_printing_a_config_works_anywhere_and_takes_a_users_own_files(tmp_path):
    # --cfg with the SLURM launcher, on a machine without sbatch: only launching needs SLURM
    r = run_cli("hydra/launcher=slurm", "--cfg", "hydra", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SlurmLauncher" in r.stdout
    # the README's example of an experiment of one's own, added with --config-dir
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "r110_wd.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: resnet110\n"
        "optim:\n  weight_decay: 0.0005\n"
    )
    r = run_cli("--config-dir", "myconf", "experiment=r110_wd", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "depth: 110" in r.stdout and "weight_decay: 0.0005" in r.stdout


@pytest.mark.parametrize("printing", [["--help"], ["--cfg", "job"]])
def test_printing_into_a_reader_that_has_gone_ends_quietly(printing, tmp_path):
    """`resnet-train --help | head`: the reader leaves early, and the command ends as a Unix tool
    does (SIGPIPE), not with Python's BrokenPipeError traceback (seen before, from --help)."""
    read, write = os.pipe()
    os.close(read)  # gone before the first line, so that every write fails: no race
    try:
        r = subprocess.run(
            [*TRAIN, *printing], stdout=write, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
    finally:
        os.close(write)
    assert r.returncode == -signal.SIGPIPE and r.stderr == ""


def test_a_mistake_never_removes_what_was_there_before(tmp_path):
    """Before: the user's own folder (mylogs/.hydra, mylogs/train.log) was deleted with the run
    directory Hydra "made". Now only what this process created goes."""
    mine = tmp_path / "mylogs"
    (mine / ".hydra").mkdir(parents=True)
    (mine / "train.log").write_text("notes\n")
    r = run_cli(*TINY, "data.batch_size=0", "hydra.run.dir=mylogs", cwd=tmp_path)
    assert r.returncode == 2 and "data.batch_size=0" in r.stderr
    assert (mine / "train.log").read_text() == "notes\n" and (mine / ".hydra").is_dir()
    assert sorted(p.name for p in mine.iterdir()) == [".hydra", "train.log"]
    # a folder made by the run, below one of the user's, goes; the user's stays
    (tmp_path / "runs").mkdir()
    r = run_cli(*TINY, "data.batch_size=0", "hydra.run.dir=runs/a/b", cwd=tmp_path)
    assert r.returncode == 2 and list((tmp_path / "runs").iterdir()) == []


def test_what_a_run_was_is_what_its_checkpoint_and_summary_say(tmp_path):
    from fixtures import write_image_folder

    from resnet_repro.reproduction.runs import read_run

    a, b = tmp_path / "a", tmp_path / "b"
    write_image_folder(a, {"train": 2, "test": 1})
    write_image_folder(b, {"train": 2, "test": 1})
    Image.new("RGB", (32, 32), "white").save(b / "train" / "airplane" / "0000.png")
    run_dir = tmp_path / "run"
    args = [*TINY_MODEL, "data.batch_size=10", "data.download=false", f"hydra.run.dir={run_dir}"]
    assert run_cli(*args, f"data.root={a}", "schedule.iterations=4").returncode == 0

    # config.yaml edited after the run: the rerun says finished and restores it; the figure
    # and table scripts take the summary's settings over an edited one
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("depth: 8", "depth: 14"))
    r = run_cli(*args, f"data.root={a}", "schedule.iterations=4")
    assert r.returncode == 0 and "finished all 4 iterations already" in r.stdout
    assert "depth: 8" in config.read_text()
    config.write_text(config.read_text().replace("depth: 8", "depth: 14"))
    assert read_run(run_dir).model["depth"] == 8

    # other images at data.root (a second sweep of the same second, another data set): not
    # this command's finished run
    r = run_cli(*args, f"data.root={b}", "schedule.iterations=4")
    assert r.returncode == 2 and "data.root holds other images" in r.stderr

    # a longer schedule of the same run extends it
    r = run_cli(*args, f"data.root={a}", "schedule.iterations=6")
    assert r.returncode == 0 and "extending the run from 4 to 6 iterations" in r.stdout
    assert "resuming from iteration 4" in r.stdout
    assert json.loads((run_dir / "summary.json").read_text())["iteration"] == 6


def test_multirun_sweep(tmp_path):
    # A sweep over two axes: depth, and [R2] table 1's shortcut variants.
    r = run_cli(
        "-m",
        *TINY,
        "model.depth=8,14",
        "model.shortcut_variant=identity,shortcut_gating",
        "model.gate_bias=-6",
        "schedule.iterations=2",
        "trainer.log_every=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr
    runs = [json.loads(s.read_text()) for s in sorted(tmp_path.glob("*/summary.json"))]
    assert sorted((s["depth"], s["shortcut_variant"]) for s in runs) == [
        (8, "identity"),
        (8, "shortcut_gating"),
        (14, "identity"),
        (14, "shortcut_gating"),
    ]
    params = {(s["depth"], s["shortcut_variant"]): s["parameters"] for s in runs}
    assert params[8, "shortcut_gating"] > params[8, "identity"]  # the gates' 1x1 convs


def test_imagenet_model_on_an_image_folder(tmp_path):
    root = write_jpeg_folder(tmp_path / "jpegs", classes=12)
    run_dir = tmp_path / "run"
    args = image_folder_run(root, run_dir, batch=8, workers=2, eval_every=9)
    r = run_cli("model=preact_resnet18", "data.ten_crop=true", *args)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iteration"] == 18  # 2 epochs of 72 images in batches of 8
    assert summary["lr"] == pytest.approx(0.1 * 8 / 256)
    assert {"val_error", "val_top5_error"} <= summary.keys() and "test_error" not in summary
    assert summary["activation"] == "full_preact" and summary["flops"] > 0


def test_checkpoint_that_does_not_fit_the_model(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "schedule.iterations=2", f"hydra.run.dir={run_dir}"]
    assert run_cli(*args).returncode == 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt")
    ckpt["model"] = {k.replace("layer1", "stage1"): v for k, v in ckpt["model"].items()}
    ckpt["iteration"] = 1
    del ckpt["checksum"]  # as written by another version of the code, whole
    torch.save(ckpt, run_dir / "checkpoints" / "last.pt")
    r = run_cli(*args)
    assert r.returncode == 2 and "does not fit the model" in r.stderr
    assert "Traceback" not in r.stderr


def test_bf16_run_learns_on_cpu(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli(
        *TINY,
        "data.train_size=64",
        "data.augment=false",
        "trainer.precision=bf16",
        "schedule.iterations=30",  # loss 2.2 at 10, 0.3 at 30 (emulated bf16 is slow on a CPU)
        "trainer.log_every=10",
        f"hydra.run.dir={run_dir}",
    )
    assert r.returncode == 0, r.stderr
    records = read_metrics(run_dir)
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.5  # it fits the images
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["channels_last"] is True
    # the log says when bf16 is emulated here, and only then
    emulated = "bf16 autocast is emulated" in (run_dir / "train.log").read_text()
    assert emulated == (not summary["hardware"]["cpu_bf16"])
