"""`resnet-train`: the only module that reads the Hydra config."""

import importlib.util
import logging
import shutil
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .data import class_count, load_dataset
from .data.folders import MEAN, STD, FolderBatches, FolderData, FolderEval
from .data.sampling import EpochPlan
from .data.tensors import EvalBatches, Normalize, TrainBatches, channel_stats
from .errors import UserError
from .nets.models import build_model, count_flops, count_parameters
from .reproduction.runs import what_it_trains
from .settings import CONF_DIR, Settings, arguments, check_overrides, make_schedule, stop_signals
from .training import checkpoint, distributed, runtime
from .training.distributed import World
from .training.files import RunLock, claim, made_here, note_before
from .training.loop import Diverged, Interrupted, Training, evaluate_all, train
from .training.records import (
    NullRecord,
    RunRecord,
    code_version,
    commit_hydra_files,
    remove_if_empty,
    remove_if_untouched,
    staging_dir,
    write_summary,
)
from .training.schedule import StepSchedule
from .usage import usage

log = logging.getLogger("resnet_repro")
# conf/config.yaml: `${rank_zero:A,B}` is A on rank 0 (or without a launcher) and B elsewhere, so
# that Hydra writes the log file from rank 0 alone, before any code of ours runs; `${staging:}`
# is where rank 0's Hydra writes .hydra/ (records.staging_dir), and nowhere on other ranks.
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
    return f"{folder}/{distributed.run_name(clock, overrides)}"


def noted(path: str) -> str:
    note_before(path)
    return path


# How a run ends (documented in the README): 0 done, or finished before; 1 stopped by a fault
# (a loss that is not finite, a checkpoint that could not be written, a rank that was lost);
# 2 a mistake in the settings, the data or the run directory, found before training; 130
# stopped by a signal (Ctrl-C, SIGTERM, preemption) with a checkpoint saved: run the same
# command to resume.
DONE, FAULT, MISTAKE, STOPPED = 0, 1, 2, 130
GROUPS = ("model", "data", "optim", "schedule")  # what a run trains, as config groups
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
    if {"--help", "-h"} & set(argv):
        print(usage(CONF_DIR))
        return
    problem = None
    printing = {"--cfg", "-c", "--info", "-i", "--hydra-help", "--resolve"} & set(argv)
    if "hydra/launcher=slurm" in argv and not printing:  # printing a config works anywhere
        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            problem = (
                "hydra/launcher=slurm needs the SLURM extra: .venv/bin/pip install -e '.[slurm]'"
            )
        elif shutil.which("sbatch") is None:
            problem = (
                "hydra/launcher=slurm submits to SLURM, but this machine has no sbatch: run it "
                "on a SLURM login node, or drop hydra/launcher=slurm to run the sweep here."
            )
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
    try:
        stop = runtime.StopFlag(stop_signals(cfg.trainer.stop_signals))
    except UserError:  # reported with the other settings below
        stop = runtime.StopFlag()
    code, message = DONE, None
    try:
        # Everything a user can get wrong in the config is checked before anything is written.
        settings = arguments(cfg)
        device = runtime.select_device(cfg.trainer.device, world)
        world, started = distributed.start(world, device), True
        # Hydra made a run directory in every process, named by each one's own clock: rank 0's
        # is the run's; another rank's is empty (conf/config.yaml writes nothing there off
        # rank 0) and goes.
        run_dir = Path(world.broadcast_object(str(hydra_dir)))
        # The job made it if any rank saw it absent (rank 0 may have noted it after another
        # rank's Hydra made it): then a mistake leaves it behind no more than on one process.
        if world.any(made_here(run_dir)) and world.is_main and not made_here(run_dir):
            claim(run_dir)
        with world.main_first():  # rank 0 locks the run directory; its refusal stops all
            lock = lock_run_dir(run_dir) if world.is_main else None
        run(cfg, settings, device, world, run_dir, stop)
    except UserError as e:
        if world.is_main:
            if lock is not None:  # remove_if_untouched takes it itself
                lock.release()
                lock = None
            remove_if_untouched(run_dir)  # and this process's staged .hydra/ files in any case
        # The config is the same on every rank, and rank 0 hands on what it finds: say it once.
        said = world.is_main or (started and not getattr(e, "handed_on", False))
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


def run(
    cfg: DictConfig,
    s: Settings,
    device: torch.device,
    world: World,
    run_dir: Path,
    stop: runtime.StopFlag,
) -> None:
    tr = cfg.trainer
    runtime.configure(device, tr.threads)
    precision = runtime.choose_precision(device, tr.precision)
    model, data, batches, eval_sets, schedule = build(cfg, s, device, world)
    identity = experiment_identity(cfg, schedule, data)
    ckpt_dir = run_dir / "checkpoints"
    # Rank 0 reads the checkpoint and hands it on: the other ranks (other nodes) need not see
    # the run directory, and all agree on whether there is anything left to do.
    ckpt = world.share_from_main(lambda: resume_point(ckpt_dir, identity, schedule.iterations))
    if ckpt == "finished":
        if world.is_main:  # what it trained is the checkpoint's: an edit of config.yaml goes
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info(
            f"{run_dir} finished all {schedule.iterations} iterations already; see "
            f"{run_dir}/summary.json"
        )
        return
    train_model = world.wrap(model, device, tr.sync_bn)
    optimizer = runtime.sgd(model.parameters(), device, **s.optim)
    scaler = runtime.grad_scaler(device, precision)
    start = checkpoint.restore(ckpt, model, optimizer, scaler, world, device) if ckpt else 0
    if world.rank and not ckpt:  # each rank its own stream for dropout shortcuts
        torch.manual_seed(tr.seed * 1_000_003 + world.rank)
    compiled = runtime.choose_compile(
        tr.compile,
        device,
        schedule.iterations - start,
        s.model.get("checkpointing", False),
        s.model["depth"],
        tr.sync_bn,
    )
    facts = describe(cfg, model, data, device) | {
        "precision": precision,
        "channels_last": tr.channels_last,
        "compile": compiled,
        "world_size": world.size,
        "launcher": world.launcher,
        "hardware": runtime.hardware(device),
        "code_version": code_version(),  # the code this leg of the run started with
        # the groups as trained: the figure and table scripts trust these over config.yaml
        "settings": {g: OmegaConf.to_container(cfg[g], resolve=True) for g in GROUPS},
    }
    if world.is_main:  # the settings are accepted: the run directory describes them now
        commit_hydra_files(run_dir)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    announce(facts, world, run_dir, start)
    wall_before, t0 = (ckpt or {}).get("wall_time", 0.0), time.time()

    def save(iteration: int, pending: dict | None = None) -> None:
        """One file for the whole run, written by rank 0: the bare model's state (torchvision's
        names, no DDP `module.` prefix) and every rank's RNG state, rank 0's first, and a
        record whose evaluation a stop cut short. A failed write stops every rank."""
        rng = world.gather_objects(checkpoint.rng_state(device))  # every rank takes part
        failed = None
        if world.is_main:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "iteration": iteration,
                "config": identity,
                "wall_time": wall_before + time.time() - t0,
                "rng": rng[0],
                "rng_ranks": rng,
                "pending_record": pending,
            }
            try:
                checkpoint.save_checkpoint(ckpt_dir, state)
            except checkpoint.SaveFailed as e:
                failed = e
        failed = world.broadcast_object(failed)
        if failed is not None:
            raise failed

    autocast = runtime.autocast(device, precision)
    record = RunRecord(run_dir, start, schedule.iterations) if world.is_main else NullRecord()
    training = Training(
        model=model,
        train_model=train_model,
        compiled=runtime.compile_model(train_model, s.model["depth"]) if compiled else None,
        world=world,
        optimizer=optimizer,
        scaler=scaler,
        autocast=autocast,
        schedule=schedule,
        batches=batches,
        eval_sets=eval_sets,
        record=record,
        save=save,
        stop_requested=stop,
        log_every=tr.log_every,
        eval_every=tr.eval_every,
        ckpt_every=tr.ckpt_every,
        pending=(ckpt or {}).get("pending_record"),
    )
    try:
        last = train(training, start)
    except Interrupted:
        stop.forward()  # after the checkpoint: submitit's handler requeues the job
        raise
    finally:
        record.close()
    if not any(f"{name}_error" in last for name in eval_sets):  # finished, summary unwritten
        last |= evaluate_all(model, eval_sets, autocast, world)
    if world.distributed:
        facts["replicas_identical"] = world.replicas_identical(model)
    if world.is_main:
        write_summary(run_dir, facts, last, wall_before + time.time() - t0)


def build(cfg: DictConfig, s: Settings, device: torch.device, world: World):
    """The model on its device, the data, this rank's batches and the schedule."""
    if cfg.trainer.sync_bn and device.type != "cuda":
        raise UserError(
            "trainer.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU implementation); "
            "leave it false for per-rank BatchNorm statistics, as [R1] trained."
        )
    torch.manual_seed(cfg.trainer.seed)  # the same initial weights on every rank
    model = build_model(**s.model, num_classes=class_count(**s.data))
    with world.main_first():  # one rank downloads or decodes, the others read its cache
        data = load_dataset(**s.data)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    batches, eval_sets = batch_sources(cfg, data, device, world, memory_format)
    schedule = make_schedule(cfg, s.schedule, batches.steps_per_epoch)
    return model, data, batches, eval_sets, schedule


def announce(facts: dict, world: World, run_dir: Path, start: int) -> None:
    log.info(
        f"{facts['model']}: {facts['block']} {facts['activation']} units, shortcut "
        f"{facts['shortcut']}, {facts['parameters'] / 1e6:.3f}M parameters, on "
        f"{facts['data']}, {world.size} x {facts['device']}, {facts['precision']}"
        f"{', compiled' if facts['compile'] else ''}; run directory {run_dir}"
        + (f"; resuming from iteration {start}" if start else "")
    )
    cpu = facts["device"] == "cpu"
    if cpu and facts["precision"] == "fp32" and facts["hardware"]["cpu_bf16"]:
        log.info(
            "This CPU computes bf16 natively: trainer.precision=bf16 may train much faster "
            "here (see docs/speed.md)."
        )


def resume_point(ckpt_dir: Path, identity: dict, iterations: int) -> dict | str | None:
    """The checkpoint to resume from, None to start, or "finished"."""
    ckpt = checkpoint.latest(ckpt_dir)
    if ckpt is None:
        return None
    run_dir = ckpt_dir.parent
    checkpoint.check_same_experiment(ckpt.get("config"), identity, run_dir)
    if ckpt["iteration"] >= iterations and (run_dir / "summary.json").exists():
        return "finished"
    return ckpt


def batch_sources(cfg: DictConfig, data, device: torch.device, world: World, memory_format):
    """This rank's training batches and evaluation shards, for tensor data (CIFAR) or image
    folders; data.batch_size is the global batch."""
    n = len(data.train) if isinstance(data, FolderData) else len(data.train_labels)
    plan = EpochPlan(n, cfg.data.batch_size, cfg.trainer.seed, world)
    eval_batch = cfg.trainer.eval_batch_size
    if isinstance(data, FolderData):
        normalize = Normalize(MEAN, STD, device, memory_format)
        return (
            FolderBatches(data, plan, normalize, device),
            {"val": FolderEval(data, eval_batch, normalize, device, world)},
        )
    normalize = Normalize(*channel_stats(data.train_images), device, memory_format)
    batches = TrainBatches(
        data.train_images, data.train_labels, plan, normalize, device, cfg.data.augment
    )
    splits = {
        "val": (data.val_images, data.val_labels),
        "test": (data.test_images, data.test_labels),
    }
    return batches, {
        name: EvalBatches(x, y, eval_batch, normalize, device, world)
        for name, (x, y) in splits.items()
        if x is not None
    }


def experiment_identity(cfg: DictConfig, schedule: StepSchedule, data) -> dict:
    """What must not change between a run and its resumption: data.root may move, but the
    data it holds must be the same (two sweeps of one second shared a folder)."""
    return {
        "model": what_it_trains("model", OmegaConf.to_container(cfg.model)),
        "data": what_it_trains("data", OmegaConf.to_container(cfg.data)),
        "optim": OmegaConf.to_container(cfg.optim),
        "schedule": vars(schedule),
        "seed": cfg.trainer.seed,
        "data_fingerprint": data.fingerprint(),
    }


def describe(cfg: DictConfig, model: torch.nn.Module, data, device) -> dict:
    """What was trained, for the log and summary.json."""
    image_size = data.image_size
    return {
        "model": HydraConfig.get().runtime.choices.get("model"),
        "tags": list(cfg.get("tags") or []),
        **OmegaConf.to_container(cfg.model),
        "data": cfg.data.name,
        "parameters": count_parameters(model),
        "flops": count_flops(model, image_size),  # multiply-adds per image, as [R1] counts
        "image_size": image_size,
        "device": str(device),
    }
