"""`resnet-train`: the command line, Hydra's app, and how a run ends. The only module that
reads the Hydra config: it becomes Settings once (arguments), and run.py takes it from there."""

import logging
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import settings
from .commandline import CONF_DIR, check_overrides
from .errors import DONE, FAULT, MISTAKE, STOPPED, HandedOn, UserError
from .run import run
from .settings import Settings, stop_signals
from .training import checkpoint, distributed, runtime
from .training.files import (
    RunLock,
    claim,
    made_here,
    note_before,
    remove_if_empty,
    remove_if_untouched,
    run_name,
    staging_dir,
)
from .training.loop import Diverged, Interrupted
from .usage import usage

log = logging.getLogger("resnet_repro")
# conf/config.yaml: `${rank_zero:A,B}` is A on rank 0 (or without a launcher) and B elsewhere, so
# that Hydra writes the log file from rank 0 alone, before any code of ours runs; `${staging:}`
# is where rank 0's Hydra writes .hydra/ (files.staging_dir), and nowhere on other ranks.
OmegaConf.register_new_resolver(
    "rank_zero",
    lambda value, other=None: value if distributed.world_from_env().is_main else other,
    replace=True,
)
OmegaConf.register_new_resolver(
    "staging",
    lambda: staging_dir(Path()).name if distributed.world_from_env().is_main else None,
    replace=True,
)
# `${run_dir:FOLDER,CLOCK,OVERRIDES}`: FOLDER/the run's name, the same again when a launcher
# restarts the job (torchrun --max-restarts, a SLURM requeue), so that the restart resumes;
# what was there before is noted, so that a clean-up removes only what this process made.
# Cached, as Hydra's `${now:}` is, so that every reading of hydra.run.dir agrees.
OmegaConf.register_new_resolver(
    "run_dir", lambda *args: noted(run_dir(*args)), use_cache=True, replace=True
)


def run_dir(folder: str, clock: str, overrides: str | None = None) -> str:
    return f"{folder}/{run_name(clock, overrides)}"


def noted(path: str) -> str:
    note_before(path)
    return path


# Hydra's modes, of which a command line may give one
MODES = {
    "--run": ("--run", "-r"),
    "--multirun": ("--multirun", "-m"),
    "--cfg": ("--cfg", "-c"),
    "--info": ("--info", "-i"),
    "--shell-completion": ("--shell-completion", "-sc"),
}


def main() -> None:
    """The console script: the command line is checked before Hydra reads it, and what Hydra's
    launchers need before Hydra starts them, since their own failures surface as tracebacks."""
    argv = sys.argv[1:]
    printing = {"--cfg", "-c", "--info", "-i", "--hydra-help", "--resolve"} & set(argv)
    if printing or {"--help", "-h"} & set(argv):
        # A command that only prints ends quietly when its reader leaves (`| head`), as Unix
        # tools do; a training run keeps Python's way, so that a closed pipe never kills it.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if {"--help", "-h"} & set(argv):
        print(usage(CONF_DIR))
        return
    problem = None if printing else launcher_problem(argv)  # printing a config works anywhere
    for arg in argv:  # a directory given on the command line may be the user's already
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value:
            note_before(value)
    modes = [m for m in MODES if set(MODES[m]) & set(argv)]
    if len(modes) > 1:  # Hydra would say so with a traceback
        problem = (
            f"{' and '.join(modes)} cannot be combined: give one of them (--cfg job prints the "
            "config a run would use; -m runs a sweep)."
        )
    try:
        check_overrides(argv)
    except UserError as e:
        problem = problem or str(e)
    if problem:
        print(f"resnet-train: {problem}", file=sys.stderr)
        sys.exit(MISTAKE)
    train_app()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train_app(cfg: DictConfig) -> None:
    world = distributed.world_from_env()
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 alone logs; others only warn
    hydra_dir = run_dir = Path(HydraConfig.get().runtime.output_dir)
    started, lock = False, None
    # Stop signals are taken from here on: one during start-up stops the run before its first
    # step (a preempted job's SIGTERM must not kill it mid-write, nor be lost).
    config = OmegaConf.to_container(cfg, resolve=True)  # the one reading of the config
    try:
        stop = runtime.StopFlag(stop_signals(config["trainer"]["stop_signals"]))
    except UserError:  # reported with the other settings below
        stop = runtime.StopFlag()
    code, message = DONE, None
    try:
        # Everything a user can get wrong in the config is checked before anything is written.
        s = settings.from_config(config, HydraConfig.get().runtime.choices.get("model"))
        device = runtime.select_device(s.trainer.device, world)
        world, started = distributed.start(world, device), True
        run_dir, lock = take_run_dir(world, hydra_dir)
        run(s, device, world, run_dir, stop)
    except UserError as e:
        if world.is_main:
            if lock is not None:  # remove_if_untouched takes it itself
                lock.release()
                lock = None
            remove_if_untouched(run_dir)  # and this process's staged .hydra/ files in any case
        # The config is the same on every rank, and rank 0 hands on what it finds: say it once.
        said = world.is_main or (started and not isinstance(e, HandedOn))
        code, message = MISTAKE, str(e) if said else None
    except (Interrupted, KeyboardInterrupt, Diverged, checkpoint.SaveFailed, OSError) as e:
        code, message = ending(e, run_dir)
    except RuntimeError as e:
        if not (world.distributed and distributed.lost_a_rank(e)):
            raise
        code, message = ending(e, run_dir)
    finally:
        stop.restore()
        if world.is_main:  # staged .hydra/ files not committed (a finished run, an error)
            shutil.rmtree(staging_dir(run_dir), ignore_errors=True)
        if lock is not None:
            lock.release()
        if not world.is_main:
            remove_if_empty(hydra_dir)
        world.close()
    if code != DONE:
        if message and (world.is_main or code == MISTAKE):
            rank = f" (rank {world.rank})" if not world.is_main else ""
            print(f"resnet-train{rank}: {message}", file=sys.stderr)
        sys.exit(code)


def launcher_problem(argv: list[str]) -> str | None:
    """What stops the sweep launcher asked for from working here, which Hydra would report
    with a traceback."""
    if "hydra/launcher=slurm" in argv and shutil.which("sbatch") is None:
        return (
            "hydra/launcher=slurm submits to SLURM, but this machine has no sbatch: run it "
            "on a SLURM login node, or use hydra/launcher=local to run the sweep here."
        )
    if "hydra/launcher=local" not in argv:
        return None
    if distributed.world_from_env().distributed:
        return (
            "hydra/launcher=local runs each job of a sweep as one process: start the sweep "
            "once, not under torchrun or srun (a DDP run inside a parallel sweep is not "
            "supported; use hydra/launcher=slurm for sweeps of multi-GPU runs)."
        )
    from hydra.core.plugins import Plugins

    if "hydra_plugins.resnet_repro.LocalLauncher" not in Plugins.instance().class_name_to_class:
        return (
            "Hydra does not find hydra/launcher=local's class (hydra_plugins/resnet_repro): "
            "its plugin scan cannot see into setuptools' default editable install. Install "
            "with make install, or pip install -e . --config-settings editable_mode=compat, "
            "or as a wheel (pip install .)."
        )
    return None


def ending(e: BaseException, run_dir: Path) -> tuple[int, str]:
    """The exit code and the message of a run that stopped before its end; what it says of the
    checkpoint is true of the file as it is now."""
    last = run_dir / "checkpoints" / checkpoint.LAST
    if last.exists():
        kept = f"the last checkpoint, {last}, is intact"
        then = f"run the same command with hydra.run.dir={run_dir} to resume from it"
    else:
        kept = "no checkpoint had been saved yet"
        then = "run the same command to start it again"
    if isinstance(e, Interrupted) and not last.exists():
        return STOPPED, f"stopped before training started; nothing was trained: {then}."
    if isinstance(e, Interrupted):
        return (
            STOPPED,
            f"stopped after iteration {e.iteration}; checkpoint saved in {last}: {then}.",
        )
    if isinstance(e, KeyboardInterrupt):  # Ctrl-C before the stop signals were taken, or twice
        return STOPPED, f"stopped at once (Ctrl-C); {kept}: {then}."
    if isinstance(e, Diverged):
        return FAULT, (
            f"{e}: the run diverged (too large an lr, or fp16 without loss scaling?). It stopped "
            f"and saved nothing from that iteration on; {kept}. No summary.json was written."
        )
    if isinstance(e, checkpoint.SaveFailed):
        return FAULT, (
            f"the checkpoint {e.path} could not be written ({e.reason}); training stopped there "
            f"and no temporary file is left; {kept}. Free space (or fix the disk), then {then}."
        )
    if isinstance(e, OSError):  # a full disk or an I/O error while writing the run's records
        return FAULT, (
            f"{e.strerror or e} on {e.filename or run_dir}; training stopped; {kept}. Fix the "
            f"cause, then {then}."
        )
    return FAULT, (  # a lost rank
        "lost contact with another rank (it was killed or failed; see its own output), so "
        f"every rank stops; {kept}: {then}."
    )


def take_run_dir(world: distributed.World, hydra_dir: Path) -> tuple[Path, RunLock | None]:
    """The run directory, the same on every rank, and rank 0's lock on it. Hydra made one in
    every process, named by each one's own clock: rank 0's is the run's; another rank's is
    empty (conf/config.yaml writes nothing there off rank 0) and goes at the end."""
    run_dir = Path(world.broadcast_object(str(hydra_dir)))
    # The job made it if any rank saw it absent (rank 0 may have noted it after another rank's
    # Hydra made it): then a mistake leaves it behind no more than on one process.
    if world.any(made_here(run_dir)) and world.is_main and not made_here(run_dir):
        claim(run_dir)
    with world.main_first():  # rank 0 locks the run directory; its refusal stops all
        return run_dir, lock_run_dir(run_dir) if world.is_main else None


def lock_run_dir(run_dir: Path) -> RunLock:
    """Rank 0 takes the run directory's lock; another process using it is a mistake to report."""
    try:
        return RunLock(run_dir)
    except RunLock.Busy as e:
        raise UserError(
            f"{run_dir} is in use by another resnet-train ({e}). Two runs in one directory "
            "would mix their checkpoints and records: wait for it to end, or choose a new run "
            "directory (hydra.run.dir=...)."
        ) from None


def arguments(cfg: DictConfig, model_name: str | None = None) -> Settings:
    """A composed config as Settings (train_app does the same in two steps; the tests and
    scripts compose configs of their own). model_name: the model preset chosen, which Hydra
    knows and the config does not."""
    return settings.from_config(OmegaConf.to_container(cfg, resolve=True), model_name)
