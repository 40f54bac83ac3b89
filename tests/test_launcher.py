"""hydra/launcher=local: a sweep's runs side by side on one machine, each in a device slot."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY, TINY_MODEL, TRAIN, assert_same_end, image_folder_run, run_cli
from fixtures import write_jpeg_folder
from hydra.core.utils import JobReturn, JobStatus

from hydra_plugins.resnet_repro import LocalLauncher
from resnet_repro import cli, launcher
from resnet_repro.commandline import check_overrides
from resnet_repro.errors import UserError
from resnet_repro.reproduction.runs import find_runs
from resnet_repro.training import slots
from resnet_repro.training.files import RunLock
from resnet_repro.training.records import read_metrics

# A sweep of 4 runs long enough to be killed after a checkpoint; the threads are the slots'.
SWEEP = [
    *[a for a in TINY if not a.startswith("trainer.threads")],
    "trainer.seed=0,1,2,3",
    "schedule.iterations=40",
    "trainer.ckpt_every=10",
    "trainer.log_every=10",
    "trainer.eval_every=20",
]
LOCAL = ["hydra/launcher=local", "hydra.launcher.n_jobs=2"]
CPUS = len(os.sched_getaffinity(0))


def hold_a_slot(folder, events, hold_s):
    slot = slots.take(Path(folder), n=4, gpus=["0", "1"], cpus=8, poll_s=0.05)
    events.put(("start", slot.gpu, slot.threads, time.monotonic()))
    time.sleep(hold_s)
    events.put(("end", slot.gpu, slot.threads, time.monotonic()))


def test_eight_runs_on_two_gpus_two_per_gpu_never_put_three_on_one(tmp_path):
    # 8 processes ask for 4 slots over 2 (faked) GPUs, at once: 4 wait for a free slot.
    fork = multiprocessing.get_context("fork")
    events = fork.Queue()
    procs = [fork.Process(target=hold_a_slot, args=(tmp_path, events, 1.0)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    log = sorted((events.get(timeout=5) for _ in range(16)), key=lambda e: (e[3], e[0] == "start"))
    on_gpu, most = {"0": 0, "1": 0}, {"0": 0, "1": 0}
    for kind, gpu, threads, _ in log:
        on_gpu[gpu] += 1 if kind == "start" else -1
        most[gpu] = max(most[gpu], on_gpu[gpu])
        assert threads == 2  # 8 CPU threads divided between 4 slots
    assert most == {"0": 2, "1": 2}
    assert sum(kind == "start" for kind, *_ in log) == 8


@pytest.mark.slow  # it starts processes
def test_a_killed_run_frees_its_slot(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from resnet_repro.training import slots; "
            "s = slots.take(Path(sys.argv[1]), 1, [], 2); print(s.index, flush=True); "
            "time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "0"
    with pytest.raises(slots.FileLock.Busy, match=f"pid {holder.pid}"):
        slots.FileLock(tmp_path / "slot-0")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    slot = slots.take(tmp_path, 1, [], 2, poll_s=0.05)
    assert (slot.index, slot.gpu, slot.threads) == (0, None, 2)


@pytest.mark.parametrize(
    "n_jobs, per_gpu, gpus, said",
    [
        (None, 1, ["0", "1"], 2),
        (None, 4, ["0"], 4),
        (None, 1, [], 1),
        (3, 1, [], 3),
        (4, 1, ["0", "1"], "more than runs_per_gpu=1 on a GPU of the 2 visible: raise"),
        (None, 0, ["0"], "runs_per_gpu=0 must be a whole number, 1 or more"),
        (0, 1, [], "n_jobs=0 must be a whole number"),
    ],
)
def test_runs_at_a_time(n_jobs, per_gpu, gpus, said, capsys, monkeypatch):
    monkeypatch.setattr(launcher, "visible_gpus", lambda: gpus)
    if isinstance(said, int):
        built = LocalLauncher(n_jobs=n_jobs, runs_per_gpu=per_gpu, timeout_min=1)
        assert (built.n_jobs, built.gpus) == (said, gpus)
        return
    with pytest.raises(SystemExit) as e:
        LocalLauncher(n_jobs=n_jobs, runs_per_gpu=per_gpu, timeout_min=1)
    assert e.value.code == 2 and said in capsys.readouterr().err


def test_no_parallel_sweep_under_torchrun(tmp_path, monkeypatch, capsys):
    # refused by the console script before Hydra starts: in this process
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resnet-train", "-m", *LOCAL, "trainer.seed=0,1"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert (
        e.value.code == 2 and "start the sweep once, not under torchrun" in capsys.readouterr().err
    )
    assert not (tmp_path / "outputs").exists()


def test_an_install_hydra_cannot_scan_is_named(tmp_path, monkeypatch, capsys):
    # setuptools' default editable install hides hydra_plugins/resnet_repro from Hydra's scan
    from hydra.core.plugins import Plugins

    found = dict(Plugins.instance().class_name_to_class)
    del found["hydra_plugins.resnet_repro.LocalLauncher"]
    monkeypatch.setattr(Plugins.instance(), "class_name_to_class", found)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resnet-train", "-m", *LOCAL, "trainer.seed=0,1"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2 and "editable_mode=compat" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_a_misspelt_launcher_setting_is_named():
    with pytest.raises(UserError, match="has no setting runs_per_gpus; did you mean runs_per_gpu"):
        check_overrides(["-m", "hydra/launcher=local", "hydra.launcher.runs_per_gpus=4"])


@pytest.mark.slow  # it starts processes
def test_a_launcher_mistake_writes_nothing(tmp_path):
    r = run_cli(
        "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=two", "trainer.seed=0,1", cwd=tmp_path
    )
    assert r.returncode == 2 and "n_jobs=two must be a whole number" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "outputs").exists()


def sweep_processes(sweep: Path, kind: bytes = b"submitit.") -> int:
    """The sweep's processes alive now whose command line names kind: submitit.core._submit
    for its runs, submitit. for the runs and their controllers (submitit.local._local). A
    process forked by one of them (a run starting `git describe`) carries its command line
    until it execs: not counted."""
    parents = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if any(kind in a for a in args) and any(str(sweep).encode() in a for a in args):
            parents[int(proc.name)] = ppid
    return sum(ppid not in parents for ppid in parents.values())


def sweep_killing_a_run(sweep: Path) -> tuple[subprocess.CompletedProcess, Path, list[int]]:
    """Runs the sweep 2 at a time, counting its live runs, and SIGKILLs the first run that has
    saved a checkpoint (its pid is in its run directory's lock)."""
    args = [*TRAIN, "-m", *LOCAL, *SWEEP, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = threading.Thread(target=lambda: setattr(proc, "output", proc.communicate()))
    out.start()
    killed, counts = None, []
    while proc.poll() is None:
        counts.append(sweep_processes(sweep, b"submitit.core._submit"))
        for lock in [] if killed else sweep.glob("*/.lock"):
            holder = lock.read_text().split()
            if (lock.parent / "checkpoints" / "last.pt").exists() and holder:
                killed = lock.parent
                os.kill(int(holder[1]), signal.SIGKILL)
                break  # one run only
        time.sleep(0.05)
    out.join()
    return subprocess.CompletedProcess(args, proc.returncode, *proc.output), killed, counts


@pytest.mark.slow
def test_a_sweep_two_at_a_time_resumes_and_matches_the_sequential_sweep(tmp_path):
    threads = max(1, CPUS // 2)  # what each of 2 slots gets
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    r = run_cli("-m", *SWEEP, f"trainer.threads={threads}", f"hydra.sweep.dir={sequential}")
    assert r.returncode == 0, r.stderr

    r, killed, counts = sweep_killing_a_run(parallel)
    assert killed is not None and max(counts) == 2  # never more than 2 at a time
    # the killed run ends alone: the others finish, and the sweep says what to do
    assert r.returncode == 1, r.stderr
    assert "ended without a result: killed (SIGKILL, out of memory)?" in r.stderr
    assert "3 of 4 runs finished, 1 did not" in r.stderr
    assert f"hydra.sweep.dir={parallel}" in r.stderr
    assert not (killed / "summary.json").exists()

    r = run_cli("-m", *LOCAL, *SWEEP, f"hydra.sweep.dir={parallel}")  # the same command
    assert r.returncode == 0, r.stderr
    logs = {d.name: (d / "train.log").read_text() for d in parallel.glob("[0-9]*")}
    assert sum("finished all 40 iterations already" in log for log in logs.values()) == 3
    assert "resuming from iteration" in logs[killed.name]

    # one directory a run, the same names and the same ends as one after the other
    names, sweeps = sorted(d.name for d in sequential.glob("[0-9]*")), (parallel, sequential)
    assert sorted(logs) == names and len(names) == 4
    for name in names:
        assert_same_end(sequential / name, parallel / name)
        summary, alone = (json.loads((d / name / "summary.json").read_text()) for d in sweeps)
        assert summary["hardware"]["threads"] == threads, summary["hardware"]
        assert summary["test_error"] == alone["test_error"]
    # the figure and table scripts read it as the sequential sweep
    runs = {r.path.name: r for r in find_runs([parallel])}
    assert sorted(runs) == names
    assert [m["iteration"] for m in read_metrics(parallel / names[0])] == [
        m["iteration"] for m in read_metrics(sequential / names[0])
    ]


def trained(run_dir: Path) -> bool:
    return (run_dir / "metrics.jsonl").exists() and bool(read_metrics(run_dir))


@pytest.mark.slow
def test_ctrl_c_stops_every_running_run_with_a_checkpoint(tmp_path):
    # on the image-folder pipeline: each run's DataLoader workers get the Ctrl-C too
    root, sweep = write_jpeg_folder(tmp_path / "jpegs"), tmp_path / "sweep"
    data = image_folder_run(root, None, batch=6, workers=1, eval_every=1000)
    args = [*LOCAL, *data, *TINY_MODEL[:2], "schedule.epochs=500", "trainer.seed=0,1,2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*TRAIN, "-m", *args, f"hydra.sweep.dir={sweep}"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(trained(d) for d in sweep.glob("[0-9]*")) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C in the terminal: every process of the group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "0 of 3 runs finished, 2 did not, 1 did not start" in err
    assert "Traceback" not in err
    stopped = [d for d in sweep.glob("[0-9]*") if (d / "checkpoints" / "last.pt").exists()]
    assert len(stopped) == 2 and len(list(sweep.glob("[0-9]*"))) == 2
    assert err.count("stopped after iteration") == 2
    for output in sweep.glob(".submitit/*/*/*_log.*"):  # the runs' and their workers' output
        assert "Traceback" not in output.read_text(), output


@pytest.mark.slow
def test_runs_whose_sweep_was_killed_stop_with_a_checkpoint(tmp_path):
    """A SIGKILL of the sweep's own process (kill -9): its runs would go on unseen, and the
    sweep's rerun would find their directories taken. They stop as at a Ctrl-C, with a
    checkpoint, and leave their directories free for the rerun."""
    sweep, long = tmp_path / "sweep", ["schedule.iterations=100000", "trainer.ckpt_every=100000"]
    args = [*LOCAL, *TINY[:-1], *long, "trainer.seed=0,1", "trainer.log_every=5"]
    proc = subprocess.Popen(
        [*TRAIN, "-m", *args, f"hydra.sweep.dir={sweep}"], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(trained(d) for d in sweep.glob("[0-9]*")) < 2:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sweep_processes(sweep):
        time.sleep(0.1)
    assert sweep_processes(sweep) == 0
    runs = sorted(sweep.glob("[0-9]*"))
    assert len(runs) == 2
    for run in runs:  # a checkpoint at the stop, though none was due; the directory is free
        assert (run / "checkpoints" / "last.pt").exists()
        RunLock(run).release()
    said = [f.read_text() for f in sweep.glob(".submitit/*/*/*_log.err")]
    assert len(said) == 2 and all("sweep's process is gone" in err for err in said)
    assert all("stopped after iteration" in err and "Traceback" not in err for err in said)


class Submitting:
    """An executor whose submission takes a Ctrl-C meanwhile (the terminal's, at the sweep's
    start), and starts a process that reports how it received SIGINT."""

    def submit(self, *args):
        os.kill(os.getpid(), signal.SIGINT)
        status = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True)
        fields = dict(line.split(":\t") for line in status.stdout.splitlines() if ":\t" in line)
        return {k: int(fields[k], 16) & (1 << (signal.SIGINT - 1)) for k in ("SigBlk", "SigIgn")}


def test_a_ctrl_c_while_a_run_is_submitted_is_not_lost():
    """SIGINT was ignored around each submission (so that the run's controller ignores it), and
    a Ctrl-C then was lost: the sweep went on to the end. Now it is blocked: it arrives as soon
    as the submission is done; the controller inherits the block (it never takes SIGINT), and
    the run unblocks it for itself (LocalLauncher.__call__)."""
    stop = launcher.SweepStop()
    try:
        child = launcher.LocalLauncher.submit(None, Submitting(), 0, [])
        for _ in range(100):  # Python runs the handler at its next chance
            if stop.received:
                break
            time.sleep(0.01)
    finally:
        stop.restore()
    assert stop.received == signal.SIGINT and not stop.starting
    assert child["SigBlk"] and not child["SigIgn"]


class Ended:
    """A submitit job whose process has ended, with or without a result file."""

    def __init__(self, tmp_path, result=None, error=None):
        pickle = tmp_path / "result.pkl"
        if result or error:
            pickle.write_bytes(b"x")
        self.paths = type("Paths", (), {"result_pickle": pickle, "stderr": tmp_path / "err"})
        self.result_, self.error = result, error

    def result(self):
        if not self.paths.result_pickle.exists():
            time.sleep(15)  # submitit waits this long for a result file that never comes
            raise RuntimeError("has not produced any output")
        if self.error:
            raise self.error
        return self.result_


def test_a_killed_run_is_reported_at_once(tmp_path):
    """submitit's result() waits 15 s for a killed run's result file, and the sweep's loop with
    it: no SIGTERM passed on, no run started meanwhile."""
    t0 = time.monotonic()
    code, said, _ = launcher.outcome(Ended(tmp_path))
    assert time.monotonic() - t0 < 2
    assert code == 1 and "killed (SIGKILL, out of memory)?" in said


def test_a_run_stopped_or_failed_is_not_called_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "RESULT_WAIT_S", 0.2)
    code, said, _ = launcher.outcome(Ended(tmp_path), told_to_stop=True)
    assert code == 130 and said == "stopped (SIGTERM) before training"
    error = RuntimeError("Traceback...\nValueError: the slot folder is gone")
    code, said, _ = launcher.outcome(Ended(tmp_path, error=error))
    assert code == 1 and said.startswith("failed: ValueError: the slot folder is gone")


def test_a_run_told_to_stop_is_waited_for_after_its_controller_ended(tmp_path):
    """submitit's controller forwards the SIGTERM and may end first: the run's result file comes
    after (seen under load), and the run saved; it is not 'stopped before training'."""
    job = Ended(tmp_path)
    job.result = lambda: JobReturn(status=JobStatus.FAILED, _return_value=SystemExit(130))
    (tmp_path / "err").write_text("resnet-train: stopped after iteration 15; checkpoint saved\n")
    threading.Timer(0.5, lambda: job.paths.result_pickle.write_bytes(b"x")).start()
    code, said, _ = launcher.outcome(job, told_to_stop=True)
    assert code == 130 and said == "exit code 130: stopped after iteration 15; checkpoint saved"


@pytest.mark.slow  # it starts processes
def test_a_sweep_with_a_mistake_in_one_run_starts_none(tmp_path):
    """model.depth=8,9,14: 9 is no CIFAR depth. The mistake was found when #1 ran: #0 had
    trained, #2 never started, an empty run folder stayed, and the rerun met it again."""
    sweep = tmp_path / "sweep"
    r = run_cli("-m", *LOCAL, *TINY, "model.depth=8,9,14", "schedule.iterations=2",
                f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "resnet-train: #1 (" in r.stderr and "#0" not in r.stderr and "#2" not in r.stderr
    assert "model.depth=9 is not a valid CIFAR ResNet depth" in r.stderr
    assert "1 of the 3 runs would stop at once" in r.stderr and "no run was started" in r.stderr
    assert not list(sweep.glob("[0-9]*"))  # no run folder, no checkpoint


@pytest.mark.slow  # it starts processes
@pytest.mark.parametrize("key", ["slots_dir", "submitit_folder"])
def test_a_launcher_folder_that_cannot_be_used_is_named(key, tmp_path):
    (tmp_path / "a-file").write_text("")
    where = f"hydra.launcher.{key}={tmp_path}/a-file/x"
    r = run_cli("-m", *LOCAL, *TINY, "trainer.seed=0,1", where, f"hydra.sweep.dir={tmp_path}/s")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"hydra.launcher.{key}: {tmp_path}/a-file/x cannot be made" in r.stderr


@pytest.mark.slow  # it starts processes
def test_a_sweep_rerun_with_other_trainer_settings_finds_its_runs(tmp_path):
    """A run may resume with other trainer settings; its sweep's rerun must find it, not start
    every run over in folders named by the new values."""
    sweep = tmp_path / "sweep"
    args = ["-m", *LOCAL, *TINY, "trainer.seed=0,1", "schedule.iterations=2"]
    first = run_cli(*args, "trainer.log_every=2", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-3000:]
    folders = sorted(p.name for p in sweep.glob("[0-9]*"))
    again = run_cli(*args, "trainer.log_every=1", "trainer.eval_every=2",
                    f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in sweep.glob("[0-9]*")) == folders
    assert len(folders) == 2 and all("log_every" not in f for f in folders)


def test_a_config_dir_file_named_like_the_packages_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "resnet20.yaml").write_text("depth: 20\nblock: bottleneck\n")
    with pytest.raises(UserError, match="model/resnet20.yaml has the name of one of the package"):
        check_overrides(["--config-dir", str(tmp_path), "model=resnet20"])


def test_a_broken_yaml_file_of_a_config_dir_is_named(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("depth: [20\n")
    with pytest.raises(UserError, match="mine.yaml is not a config file Hydra can read"):
        check_overrides(["--config-dir", str(tmp_path), "model=mine"])


@pytest.mark.slow  # it starts processes
def test_a_run_stopped_by_a_data_mistake_leaves_no_run_folder(tmp_path):
    """A mistake only the run can see (no data at data.root): the run removes the folder it
    made, as a single run does, and the sweep says to correct it before going on."""
    sweep = tmp_path / "sweep"
    r = run_cli("-m", *LOCAL, "hydra.launcher.n_jobs=1", *TINY_MODEL, "data.root=/nonexistent",
                "data.download=false", "trainer.seed=0,1", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert r.returncode == 2 and "No cifar10 data at data.root=/nonexistent" in r.stderr
    assert "1 did not, 1 did not start. Correct what it says, then run the same" in r.stderr
    assert not list(sweep.glob("[0-9]*"))
