"""What a long run meets on a cluster, each in a subprocess and bounded in time: kills at any
moment, stop signals, a full disk, damaged checkpoints, divergence, a second process."""

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import RESUME, TINY, TORCHRUN, TRAIN, assert_same_end, launch, run_cli, with_gpus

from resnet_repro.cli import ending
from resnet_repro.training import checkpoint
from resnet_repro.training.records import METRICS, read_metrics

pytestmark = pytest.mark.slow


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """A test that fails while its run trains (a timeout) ends that run: left behind, it would
    train on beside the rest of the suite."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(*args, gpu=False, **kwargs) -> subprocess.Popen:
    env = {**(with_gpus() if gpu else os.environ), "PYTHONUNBUFFERED": "1"}
    pipe = subprocess.PIPE
    proc = subprocess.Popen([*TRAIN, *args], stdout=pipe, stderr=pipe, text=True, env=env, **kwargs)
    STARTED.append(proc)
    return proc


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def iteration_of(path) -> int:
    return checkpoint.load_checkpoint(path)["iteration"]


def flip_a_weight_byte(path) -> None:
    """Change one byte inside a tensor's stored data, where torch.load does not look."""
    state = torch.load(path, weights_only=True)
    stored = bytes(state["model"]["conv1.weight"].untyped_storage())  # as laid out on disk
    raw = path.read_bytes()
    at = raw.index(stored[:64]) + 17
    path.write_bytes(raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :])


def test_killed_twice_at_any_moment_then_resumed_ends_bit_identical(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    args = [*RESUME, f"hydra.run.dir={run_dir}"]
    ckpts = run_dir / "checkpoints"
    moments = random.Random(os.getpid())
    for _ in range(2):
        before = iteration_of(ckpts / "last.pt") if (ckpts / "last.pt").exists() else 0
        proc = start(*args)
        wait_for(lambda b=before: iteration_of_safe(ckpts) > b, proc)
        time.sleep(moments.uniform(0, 0.3))  # mid-step, mid-evaluation or mid-save
        assert proc.poll() is None  # still training
        proc.kill()
        proc.communicate(timeout=60)
    # What a kill inside a save can leave: a half-written temporary file, and last.pt already
    # moved to previous.pt with the new one not yet in its place.
    (ckpts / "last.pt.4242.tmp").write_bytes(os.urandom(1000))
    os.replace(ckpts / "last.pt", ckpts / "previous.pt")
    stopped_at = iteration_of(ckpts / "previous.pt")

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"resuming from iteration {stopped_at}" in r.stdout + r.stderr
    assert_same_end(uninterrupted, run_dir)
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.pt", "previous.pt"]


def iteration_of_safe(ckpts) -> int:
    try:
        return iteration_of(ckpts / "last.pt")
    except checkpoint.Damaged:
        return 0  # not there yet, or being replaced just now


@pytest.mark.parametrize(
    ("sig", "setting"),
    [(signal.SIGINT, []), (signal.SIGHUP, ["trainer.stop_signals=[SIGHUP]"])],
    ids=["SIGINT", "configured-SIGHUP"],  # SIGTERM: test_cli.py; SIGUSR1/2: test_runtime.py
)
def test_a_stop_signal_saves_and_exits_130(tmp_path, sig, setting):
    run_dir = tmp_path / "run"
    proc = start(*RESUME, *setting, f"hydra.run.dir={run_dir}")
    wait_for((run_dir / "checkpoints" / "last.pt").exists, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = int(err.split("stopped after iteration ")[1].split(";")[0])
    assert iteration_of(run_dir / "checkpoints" / "last.pt") == stopped
    assert "Traceback" not in err


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    args = [*RESUME, f"hydra.run.dir={run_dir}"]
    proc = start(*args)
    last = run_dir / "checkpoints" / "last.pt"
    wait_for(last.exists, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    saved = iteration_of(last)

    # No file may grow past half a checkpoint: the next save fails as on a full disk (EFBIG
    # rather than ENOSPC; Python ignores SIGXFSZ, so the write returns the error).
    limit = last.stat().st_size // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = start(*args, preexec_fn=small_files)
    _, err = full.communicate(timeout=300)
    assert full.returncode == 1, err
    assert "could not be written (File too large)" in err and "Traceback" not in err
    assert "is intact" in err
    assert iteration_of(last) == saved  # the previous checkpoint, whole and loadable
    assert not list(last.parent.glob("*.tmp"))
    assert not (run_dir / "summary.json").exists()

    r = run_cli(*args)  # with space again, the same command goes on
    assert r.returncode == 0, r.stderr
    assert_same_end(uninterrupted, run_dir)


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    args = [*RESUME, f"hydra.run.dir={run_dir}"]
    ckpts = run_dir / "checkpoints"
    proc = start(*args)
    wait_for((ckpts / "previous.pt").exists, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    flip_a_weight_byte(ckpts / "last.pt")
    previous = iteration_of(ckpts / "previous.pt")

    r = run_cli(*args)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "last.pt does not match its checksum" in out
    assert f"Resuming from {ckpts / 'previous.pt'} (iteration {previous}) instead" in out
    assert f"resuming from iteration {previous}" in out
    assert (ckpts / "last.pt.damaged").exists()
    assert_same_end(uninterrupted, run_dir)


def test_no_good_checkpoint_left_stops_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.pt").write_bytes(b"")
    (ckpts / "previous.pt").write_bytes(os.urandom(5000))
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    r = run_cli(*TINY, f"hydra.run.dir={run_dir}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "last.pt is empty" in r.stderr and "previous.pt is not a whole PyTorch" in r.stderr
    assert "no good checkpoint left" in r.stderr and "weights_only" not in r.stderr
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before  # never started over
    assert not (run_dir / METRICS).exists()


def test_a_diverging_run_stops_with_finite_checkpoints_and_no_summary(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli(
        *TINY,
        "optim.lr=1e6",
        "schedule.iterations=60",
        "trainer.log_every=30",
        "trainer.ckpt_every=2",
        f"hydra.run.dir={run_dir}",
    )
    assert r.returncode == 1, r.stderr
    # The loss, or the weights a step left behind (BatchNorm can keep the loss finite a while)
    found = re.search(
        r"the (training loss is|weights are) not finite at iteration (\d+):", r.stderr
    )
    assert found, r.stderr
    at = int(found[2])
    assert at < 30  # the iteration it happened, not the next record's
    assert "No summary.json was written" in r.stderr and "Traceback" not in r.stderr
    assert not (run_dir / "summary.json").exists()
    saved = list((run_dir / "checkpoints").glob("*.pt"))
    assert saved  # the checkpoints of the iterations before, each finite
    for path in saved:
        ckpt = checkpoint.load_checkpoint(path)
        assert ckpt["iteration"] < at
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())

    def refuse(constant):
        raise ValueError(constant)

    for line in (run_dir / METRICS).read_text().splitlines():
        json.loads(line, parse_constant=refuse)  # strict JSON: no NaN or Infinity


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    args = [*RESUME, "schedule.iterations=5000", f"hydra.run.dir={run_dir}"]  # minutes long
    first = start(*args)
    wait_for((run_dir / "checkpoints" / "last.pt").exists, first)
    hydra_files = {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()}

    second = run_cli(*args, "trainer.log_every=5")
    assert second.returncode == 2 and "is in use by another resnet-train" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()} == hydra_files
    assert first.poll() is None  # the first goes on, undisturbed

    first.kill()  # a killed process leaves no lock held
    first.communicate(timeout=60)
    stopped_at = iteration_of(run_dir / "checkpoints" / "last.pt")
    third = start(*args)
    wait_for(lambda: iteration_of_safe(run_dir / "checkpoints") > stopped_at, third)
    third.send_signal(signal.SIGTERM)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 130, err
    lines = [m["iteration"] for m in read_metrics(run_dir)]
    assert lines == sorted(set(lines))  # one writer at a time: no line twice, none interleaved


@pytest.mark.parametrize("after", [0.3, 2.5])  # while torch imports; while the run is set up
def test_ctrl_c_while_starting_ends_with_a_true_sentence(tmp_path, after):
    proc = start(*TINY, "data.train_size=20000", f"hydra.run.dir={tmp_path / 'run'}")
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped" in err and "Traceback" not in err and "is intact" not in err


def test_a_ctrl_c_while_modules_load_waits_for_them_then_stops():
    """Raised inside an extension module's initialisation, a KeyboardInterrupt can leave it half
    made: the test above once failed under load with numpy's "cannot load module more than once
    per process" and a traceback. The commands hold a Ctrl-C until their imports end."""
    code = (
        "import time\nfrom resnet_repro.entry import loading\n"
        "with loading('resnet-train', 'before any training'):\n"
        "    print('loading', flush=True)\n    time.sleep(1.5)\n    print('loaded', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "loading\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (130, "loaded\n"), err
    assert err == "resnet-train: stopped (Ctrl-C) while starting, before any training.\n"


def test_what_an_ending_says_of_the_checkpoint_is_true(tmp_path):
    """A Ctrl-C before the first save, a lost rank or a disk error before it: no checkpoint is
    said to be intact when there is none (before: "a second Ctrl-C; last.pt is intact")."""
    faults = [KeyboardInterrupt(), RuntimeError("Connection reset by peer"), OSError(5, "I/O")]
    for e in faults:
        code, message = ending(e, tmp_path)
        assert "no checkpoint had been saved yet" in message and "intact" not in message
        assert "start it again" in message and code == (
            130 if isinstance(e, KeyboardInterrupt) else 1
        )
    checkpoint.save_checkpoint(
        tmp_path / "checkpoints", {"model": {}, "optimizer": {}, "iteration": 3}
    )
    for e in faults:
        _, message = ending(e, tmp_path)
        assert f"{tmp_path}/checkpoints/last.pt, is intact" in message and "resume" in message


# A run whose evaluation is slow (6000 test images one at a time) while its steps are fast: a
# stop sent during the evaluation at iteration 10. The resumed run evaluates in batches of 1000
# (trainer settings may change on resumption), so it is quick.
SLOW_EVAL = [
    *TINY,
    "data.test_size=6000",
    "schedule.iterations=12",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.ckpt_every=10",
]


def stop_during_evaluation(cmd: list[str], run_dir, sig=signal.SIGTERM) -> tuple[str, float]:
    """Start cmd, send sig once it trains past iteration 5 (in the evaluation at 10, which takes
    10 s or more), and return its output and how long it took to end after the signal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    out = []
    for line in proc.stdout:
        out.append(line)
        if "it 5 |" in line:
            break
    time.sleep(1.5)  # iterations 6-10 take a few hundredths of a second
    assert proc.poll() is None and not (run_dir / "checkpoints" / "last.pt").exists()
    proc.send_signal(sig)
    sent = time.monotonic()
    rest, _ = proc.communicate(timeout=120)
    return "".join(out) + rest, time.monotonic() - sent


def assert_resumes_with_the_evaluation(run_dir, *resume) -> None:
    ckpt = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 10 and ckpt["pending_record"]["iteration"] == 10
    assert "test_error" not in ckpt["pending_record"]
    r = resume[0](*SLOW_EVAL, "trainer.eval_batch_size=1000", f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    records = read_metrics(run_dir)
    assert [m["iteration"] for m in records] == [5, 10, 12]
    assert "test_error" in records[1] and "test_error" in records[2]


def test_a_stop_during_evaluation_saves_at_once_and_the_resumed_run_evaluates(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [*TRAIN, *SLOW_EVAL, "trainer.eval_batch_size=1", f"hydra.run.dir={run_dir}"]
    out, took = stop_during_evaluation(cmd, run_dir)
    assert "stopped after iteration 10" in out and "Traceback" not in out
    assert took < 8, out  # before: the whole evaluation first (here 10-20 s; ImageNet: minutes)
    assert_resumes_with_the_evaluation(run_dir, run_cli)


def test_under_torchrun_a_stop_during_evaluation_saves_before_the_agent_gives_up(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [*TORCHRUN, "--standalone", *TRAIN, *SLOW_EVAL, "trainer.eval_batch_size=1"]
    out, took = stop_during_evaluation([*cmd, f"hydra.run.dir={run_dir}"], run_dir)
    assert "stopped after iteration 10" in out and "forcefully exiting via 9" not in out
    assert took < 15, out  # torchrun's agent waits 30 s for its workers, then kills them
    assert_resumes_with_the_evaluation(run_dir, launch)
