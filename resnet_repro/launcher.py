"""`hydra/launcher=local`: the runs of a sweep side by side on this machine, up to n_jobs at a
time, each in a process of its own and a device slot of its own (training/slots.py).

Built on submitit's local executor, through the Hydra plugin that hydra/launcher=slurm uses
(hydra-submitit-launcher): every run is a process that nothing else shares, so a run that
dies (killed, out of memory) ends alone and the others go on; joblib's process pool, the other
local launcher, ends them all with it. What this module adds to the plugin: the number of runs
at a time (submitit's local executor starts every job at once), the slots, and stopping: a
Ctrl-C or SIGTERM starts no more runs, and each running run saves a checkpoint and stops, as a
single run does; so does each run of a sweep whose own process was killed. Run the same
command with hydra.sweep.dir=<the sweep> to go on: finished runs say so and are skipped,
stopped ones resume."""

import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from .errors import DONE, FAULT, MISTAKE, STOPPED
from .sweep_checks import mistake_in, refuse, runs_at_a_time, unusable_folder, visible_gpus

# Hydra imports every plugin when it starts (any Hydra app, in this environment): what the
# launcher needs of torch and of this package is imported when it runs.

log = logging.getLogger("resnet_repro")


class LocalLauncher(BaseSubmititLauncher):
    """Runs a sweep's jobs n_jobs at a time on this machine, each in a device slot."""

    _EXECUTOR = "local"

    def __init__(self, n_jobs=None, runs_per_gpu=1, slots_dir=".slots", **submitit) -> None:
        super().__init__(**submitit)
        # read in the sweep's process, before anything is written; the runs get them pickled
        self.gpus, self.cpus = visible_gpus(), len(os.sched_getaffinity(0))
        self.n_jobs = runs_at_a_time(n_jobs, runs_per_gpu, len(self.gpus))
        self.runs_per_gpu, self.slots_dir = runs_per_gpu, slots_dir
        self.sweep = os.getpid(), started(os.getpid())  # watched by each run

    def launch(self, job_overrides, initial_job_idx) -> list[JobReturn]:
        import submitit

        todo = list(enumerate(job_overrides, initial_job_idx))
        what = {idx: " ".join(filter_overrides(overrides)) for idx, overrides in todo}
        self.check(todo, what)  # before anything is written
        from .training import files

        # What was where before the sweep (files.BEFORE, noted in this process): the runs take
        # it along, so that a run stopped by a mistake removes the folder it made, as alone.
        self.before = dict(files.BEFORE)
        n = self.n_jobs
        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"])
        executor.update_parameters(timeout_min=self.params["timeout_min"], tasks_per_node=1)
        on = f"{len(self.gpus)} GPU(s), {self.runs_per_gpu} per GPU" if self.gpus else "the CPU"
        log.info(
            f"{len(job_overrides)} runs, {n} at a time on {on}, in {self.config.hydra.sweep.dir}"
        )
        running, ended = {}, {}
        stop = SweepStop()
        try:
            while running or (todo and stop.starting):
                while todo and len(running) < n and stop.starting:
                    idx, overrides = todo.pop(0)
                    running[idx] = self.submit(executor, idx, overrides)
                    log.info(f"#{idx} started: {what[idx]}")
                stop.forward_to(running.values())
                for idx, job in list(running.items()):
                    if job.done():
                        del running[idx]
                        ended[idx] = outcome(job, job.job_id in stop.told)
                        log.info(f"#{idx} {ended[idx][1]}")
                        if ended[idx][0] == MISTAKE:  # the runs not started would make it too
                            stop.starting = False
                time.sleep(0.2)
        finally:
            stop.restore()
        return self.report(ended, what, [idx for idx, _ in todo], stop.received)

    def check(self, todo: list, what: dict) -> None:
        """Before anything starts: every run's settings (a run with a mistake would stop the
        sweep halfway, and the rerun would meet it again), and the folders the sweep needs."""
        mistakes = [(idx, mistake_in(self.settings_of(overrides))) for idx, overrides in todo]
        mistakes = [(idx, m) for idx, m in mistakes if m]
        for idx, mistake in mistakes:
            print(f"resnet-train: #{idx} ({what[idx]}): {mistake}", file=sys.stderr)
        if mistakes:
            refuse(f"{len(mistakes)} of the {len(todo)} runs would stop at once: correct or leave "
                   "them out of the sweep; no run was started.")  # fmt: skip
        folder = Path(self.params["submitit_folder"].replace("%j", "job"))
        for key, path in (("submitit_folder", folder), ("slots_dir", Path(self.slots_dir))):
            problem = unusable_folder(path)
            if problem:
                refuse(
                    f"hydra.launcher.{key}: {path} {problem}; give a folder this user may write."
                )

    def settings_of(self, overrides) -> dict:
        """A run's config as it will compose it, as plain values, without Hydra's own node."""
        from omegaconf import OmegaConf

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items()
            if k != "hydra"
        }

    def submit(self, executor, idx: int, overrides):
        """One run as a submitit job. Its controller never takes SIGINT: a Ctrl-C in the
        terminal reaches the run itself, which saves and stops, rather than the controller,
        which would kill it a second later; the controller forwards SIGTERM (SweepStop). So
        SIGINT is blocked while the controller starts, and it inherits the block; the run
        unblocks it in its own process (__call__). Blocked, not ignored: a Ctrl-C meanwhile
        waits, and this process takes it as soon as the submission is done."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            state = Singleton.get_state()
            return executor.submit(self, list(overrides), "hydra.sweep.dir", idx, str(idx), state)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state):
        """In the run's own process: take a slot, then run the job as the plugin does."""
        import torch

        from .training import files, slots

        # submitit's job bypasses SIGTERM; before the run takes the stop signals, let it end us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ended = lambda e: JobReturn(sweep_overrides, status=JobStatus.FAILED, _return_value=e)  # noqa: E731
        slot = None
        files.BEFORE.update(getattr(self, "before", {}))
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # see submit()
            threading.Thread(target=stop_when_gone, args=self.sweep, daemon=True).start()
            slot = slots.take(Path(self.slots_dir), self.n_jobs, self.gpus, self.cpus)
            if slot.gpu is not None:  # set before CUDA starts: the run sees its GPU as cuda:0
                os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
            torch.set_num_threads(slot.threads)  # trainer.threads, if given, takes precedence
            print(f"#{job_num} in {slot}", file=sys.stderr, flush=True)
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        except SystemExit as e:  # cli.train_app's ending of a run that did not finish
            return ended(e)
        except KeyboardInterrupt:  # a Ctrl-C before the run took its stop signals
            print("resnet-train: stopped (Ctrl-C) before training.", file=sys.stderr, flush=True)
            return ended(SystemExit(STOPPED))
        finally:
            if slot is not None:
                slot.lock.release()
        if ret.status == JobStatus.FAILED:  # Hydra kept the exception: show where it came from
            traceback.print_exception(ret._return_value, file=sys.stderr)
        return ret

    def report(self, ended: dict, what: dict, not_started: list, signalled) -> list[JobReturn]:
        """The sweep's end: Hydra's results if every run finished; else what each run that
        did not said, and how to go on, with cli.py's exit code (a mistake first, then a
        stop, then a fault)."""
        failed = {idx: end for idx, end in ended.items() if end[0] != DONE}
        if not failed and not not_started:
            return [ended[idx][2] for idx in sorted(ended)]
        for idx, (_, how, _) in sorted(failed.items()):
            print(f"resnet-train: #{idx} ({what[idx]}) {how}", file=sys.stderr)
        codes = {code for code, _, _ in failed.values()} | ({STOPPED} if signalled else set())
        code = MISTAKE if MISTAKE in codes else STOPPED if STOPPED in codes else FAULT
        first = "Correct what it says, then run" if code == MISTAKE else "Run"
        print(
            f"resnet-train: {len(ended) - len(failed)} of {len(ended) + len(not_started)} runs "
            f"finished, {len(failed)} did not, {len(not_started)} did not start. {first} the "
            f"same command with hydra.sweep.dir={self.config.hydra.sweep.dir} to go on: "
            "finished runs are skipped, stopped ones resume from their checkpoints.",
            file=sys.stderr,
        )
        sys.exit(code)


# How long a run told to stop may take to leave its result after its controller ended (a fresh-
# clone CI run under load called a run that had saved at iteration 15 "stopped before training").
RESULT_WAIT_S = 5.0


def outcome(job, told_to_stop: bool = False) -> tuple[int, str, JobReturn | None]:
    """How a run ended: its exit code, a line saying so, and Hydra's JobReturn. A process that
    ended with no result file will not write one: nothing to wait for (submitit's result()
    would wait 15 s, all that time holding up the sweep's loop and its signals)."""
    if told_to_stop:  # its controller forwards the SIGTERM and may end before the run saved
        waited = time.monotonic() + RESULT_WAIT_S
        while not job.paths.result_pickle.exists() and time.monotonic() < waited:
            time.sleep(0.1)
    if not job.paths.result_pickle.exists():
        if told_to_stop:  # SIGTERM before the run took its stop signals: nothing trained
            return STOPPED, "stopped (SIGTERM) before training", None
        return (
            FAULT,
            f"ended without a result: killed (SIGKILL, out of memory)? See {job.paths.stderr}",
            None,
        )
    try:
        ret = job.result()
    except Exception as e:  # the job raised outside the run (submitit kept the error)
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return FAULT, f"failed: {last}; see {job.paths.stderr}", None
    if ret.status == JobStatus.COMPLETED:
        return DONE, "finished", ret
    error = ret._return_value
    if isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else FAULT
        said = last_message(job.paths.stderr)
        return code, f"exit code {code}: {said or job.paths.stderr}", ret
    return FAULT, f"failed: {error!r}; see {job.paths.stderr}", ret


def last_message(stderr: Path) -> str | None:
    """The last thing the run said (cli.py starts it with "resnet-train: ")."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()
    except OSError:
        return None
    said = [ln for ln in lines if ln.startswith("resnet-train: ")]
    return said[-1].removeprefix("resnet-train: ") if said else None


class SweepStop:
    """Ctrl-C or SIGTERM to the sweep: no run starts after it, and each running run is sent
    SIGTERM (through its submitit controller), saves a checkpoint and stops."""

    def __init__(self):
        self.received = None
        self.starting = True  # False once a signal came, or a run found a mistake
        self.told: set[str] = set()
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame) -> None:
        if self.received is None:
            log.info("stopping: each running run saves a checkpoint; no other run starts")
        self.received, self.starting = signum, False

    def forward_to(self, jobs) -> None:
        for job in jobs if self.received else ():
            if job.job_id not in self.told:  # a local job's id is its controller's pid
                self.told.add(job.job_id)
                try:
                    os.kill(int(job.job_id), signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def stop_when_gone(sweep: int, since: str | None) -> None:
    """In a run's process: once the sweep's process is gone (SIGKILL), the run stops as at a
    Ctrl-C, with a checkpoint, rather than going on unseen, holding a run directory that the
    sweep's rerun would then find taken."""
    while since is not None and started(sweep) == since:
        time.sleep(1)
    if since is not None:
        print("resnet-train: the sweep's process is gone: stopping.", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


def started(pid: int) -> str | None:
    """When process pid started (a pid alone may be reused), None if it is gone, a zombie, or
    this is no Linux /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # state, starttime (fields 3, 22)
