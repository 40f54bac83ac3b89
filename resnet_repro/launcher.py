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

        n = self.n_jobs
        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"])
        executor.update_parameters(timeout_min=self.params["timeout_min"], tasks_per_node=1)
        on = f"{len(self.gpus)} GPU(s), {self.runs_per_gpu} per GPU" if self.gpus else "the CPU"
        log.info(
            f"{len(job_overrides)} runs, {n} at a time on {on}, in {self.config.hydra.sweep.dir}"
        )
        todo = list(enumerate(job_overrides, initial_job_idx))
        what = {idx: " ".join(filter_overrides(overrides)) for idx, overrides in todo}
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
                        ended[idx] = outcome(job)
                        log.info(f"#{idx} {ended[idx][1]}")
                        if ended[idx][0] == MISTAKE:  # the runs not started would make it too
                            stop.starting = False
                time.sleep(0.2)
        finally:
            stop.restore()
        return self.report(ended, what, [idx for idx, _ in todo], stop.received)

    def submit(self, executor, idx: int, overrides):
        """One run as a submitit job. Its controller ignores SIGINT (inherited): a Ctrl-C in the
        terminal reaches the run itself, which saves and stops, rather than the controller,
        which would kill it a second later; the controller forwards SIGTERM (SweepStop)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            state = Singleton.get_state()
            return executor.submit(self, list(overrides), "hydra.sweep.dir", idx, str(idx), state)
        finally:
            signal.signal(signal.SIGINT, previous)

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state):
        """In the run's own process: take a slot, then run the job as the plugin does."""
        import torch

        from .training import slots

        # submitit's job bypasses SIGTERM; before the run takes the stop signals, let it end us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        threading.Thread(target=stop_when_gone, args=self.sweep, daemon=True).start()
        slot = slots.take(Path(self.slots_dir), self.n_jobs, self.gpus, self.cpus)
        if slot.gpu is not None:  # set before CUDA starts: the run sees its GPU as cuda:0
            os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
        torch.set_num_threads(slot.threads)  # trainer.threads, if given, takes precedence
        print(f"#{job_num} in {slot}", file=sys.stderr, flush=True)
        try:
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        except SystemExit as e:  # cli.train_app's ending of a run that did not finish
            return JobReturn(overrides=sweep_overrides, status=JobStatus.FAILED, _return_value=e)
        finally:
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
        print(
            f"resnet-train: {len(ended) - len(failed)} of {len(ended) + len(not_started)} runs "
            f"finished, {len(failed)} did not, {len(not_started)} did not start. Run the same "
            f"command with hydra.sweep.dir={self.config.hydra.sweep.dir} to go on: finished "
            "runs are skipped, stopped ones resume from their checkpoints.",
            file=sys.stderr,
        )
        sys.exit(code)


def outcome(job) -> tuple[int, str, JobReturn | None]:
    """How a run ended: its exit code, a line saying so, and Hydra's JobReturn."""
    try:
        ret = job.result()
    except Exception:  # no result: the process was killed (SIGKILL, out of memory)
        return FAULT, f"ended without a result: killed? See {job.paths.stderr}", None
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


def runs_at_a_time(n_jobs, runs_per_gpu, gpus: int) -> int:
    """n_jobs, checked (null: one run per slot of every GPU, or 1 on a CPU)."""
    k = runs_per_gpu
    if not (isinstance(k, int) and k >= 1):
        refuse(f"hydra.launcher.runs_per_gpu={k} must be a whole number, 1 or more.")
    n = n_jobs if n_jobs is not None else max(1, gpus * k)
    if not (isinstance(n, int) and n >= 1):
        refuse(f"hydra.launcher.n_jobs={n} must be a whole number, 1 or more (or null).")
    if gpus and n > gpus * k:
        refuse(
            f"hydra.launcher.n_jobs={n} runs at a time would put more than runs_per_gpu={k} "
            f"on a GPU of the {gpus} visible: raise hydra.launcher.runs_per_gpu to "
            f"{-(-n // gpus)}, or lower n_jobs."
        )
    return n


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [g.strip() for g in listed.split(",") if g.strip()][:count]


def refuse(message: str) -> None:
    print(f"resnet-train: {message}", file=sys.stderr)
    sys.exit(MISTAKE)
