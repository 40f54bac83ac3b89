"""`resnet-train`: the only module that reads the Hydra config."""

import importlib.util
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, distributed, runtime
from .batches import EvalBatches, Normalize, TrainBatches, channel_stats
from .data import class_count, load_dataset
from .distributed import World
from .engine import Diverged, Interrupted, Training, evaluate_all, train
from .errors import UserError, check_keys
from .folders import MEAN, STD, FolderBatches, FolderData, FolderEval
from .models import build_model, count_flops, count_parameters
from .records import NullRecord, RunRecord, remove_if_empty, remove_if_untouched, write_summary
from .runs import what_it_trains
from .sampling import EpochPlan
from .schedule import StepSchedule
from .usage import usage

log = logging.getLogger("resnet_repro")
# conf/ sits at the top of the checkout (installed editable, see the Makefile). Hydra would read a
# relative path as a Python package here, so give it the absolute folder.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# conf/config.yaml: `${rank_zero:A,B}` is A on rank 0 (or without a launcher) and B elsewhere, so
# that Hydra writes .hydra/ and the log file from rank 0 alone, before any code of ours runs.
OmegaConf.register_new_resolver(
    "rank_zero",
    lambda value, other=None: value if distributed.world_from_env().is_main else other,
    replace=True,
)


def main() -> None:
    """The console script: what Hydra's launchers need is checked before Hydra starts them,
    since their own failures surface as tracebacks."""
    if {"--help", "-h"} & set(sys.argv[1:]):
        print(usage(CONF_DIR))
        return
    if "hydra/launcher=slurm" in sys.argv[1:]:
        problem = None
        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            problem = "needs the SLURM extra: .venv/bin/pip install -e '.[slurm]'"
        elif shutil.which("sbatch") is None:
            problem = (
                "submits to SLURM, but this machine has no sbatch: run it on a SLURM login "
                "node, or drop hydra/launcher=slurm to run the sweep here"
            )
        if problem:
            print(f"resnet-train: hydra/launcher=slurm {problem}.", file=sys.stderr)
            sys.exit(2)
    train_app()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train_app(cfg: DictConfig) -> None:
    world = distributed.world_from_env()
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 alone logs; others only warn
    hydra_dir = run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = False
    try:
        # Everything a user can get wrong in the config is checked before anything is written.
        settings = arguments(cfg)
        device = runtime.select_device(cfg.trainer.device, world.local_rank)
        world, started = distributed.start(world, device), True
        # Hydra made a run directory in every process, named by each one's own clock: rank 0's
        # is the run's; another rank's is empty (conf/config.yaml writes nothing there off
        # rank 0) and goes.
        run_dir = Path(world.broadcast_object(str(hydra_dir)))
        run(cfg, settings, device, world, run_dir)
    except UserError as e:
        if world.is_main:
            remove_if_untouched(run_dir)
        # The config is the same on every rank, and rank 0 hands on what it finds: say it once.
        if world.is_main or (started and not getattr(e, "handed_on", False)):
            rank = f" (rank {world.rank})" if not world.is_main else ""
            print(f"resnet-train{rank}: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        if world.is_main:
            print(
                f"resnet-train: stopped after iteration {e.iteration}; checkpoint saved in "
                f"{run_dir}/checkpoints/last.pt. To resume, run the same command with "
                f"hydra.run.dir={run_dir}",
                file=sys.stderr,
            )
        sys.exit(130)
    except Diverged as e:
        if world.is_main:
            print(
                f"resnet-train: the training loss is not finite at iteration {e.iteration}: the "
                "run diverged (too large an lr, or fp16 without loss scaling?). Nothing was saved "
                f"after it; the last checkpoint in {run_dir}/checkpoints is from before.",
                file=sys.stderr,
            )
        sys.exit(1)
    finally:
        if not world.is_main:
            remove_if_empty(hydra_dir)
        world.close()


@dataclass(frozen=True)
class Settings:
    """The config groups as constructor arguments, checked."""

    data: dict
    model: dict
    optim: dict
    schedule: dict


def run(cfg: DictConfig, s: Settings, device: torch.device, world: World, run_dir: Path) -> None:
    tr = cfg.trainer
    runtime.configure(device, tr.threads)
    precision = runtime.choose_precision(device, tr.precision)
    model, data, batches, eval_sets, schedule = build(cfg, s, device, world)
    identity = experiment_identity(cfg, schedule)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    # Rank 0 reads the checkpoint and hands it on: the other ranks (other nodes) need not see
    # the run directory, and all agree on whether there is anything left to do.
    ckpt = world.share_from_main(lambda: resume_point(ckpt_path, identity, schedule.iterations))
    if ckpt == "finished":
        log.info(
            f"{run_dir} finished all {schedule.iterations} iterations already; see "
            f"{run_dir}/summary.json"
        )
        return

    train_model = world.wrap(model, device, tr.sync_bn)
    optimizer = torch.optim.SGD(model.parameters(), **s.optim)
    scaler = runtime.grad_scaler(device, precision)
    start = checkpoint.restore(ckpt, model, optimizer, scaler, world) if ckpt else 0
    if world.rank and not ckpt:  # each rank its own stream for dropout shortcuts
        torch.manual_seed(tr.seed * 1_000_003 + world.rank)
    compiled = runtime.choose_compile(
        tr.compile,
        device,
        schedule.iterations - start,
        s.model.get("checkpointing", False),
        s.model["depth"],
    )
    facts = describe(cfg, model, data, device) | {
        "precision": precision,
        "channels_last": tr.channels_last,
        "compile": compiled,
        "world_size": world.size,
        "launcher": world.launcher,
        "hardware": runtime.hardware(device),
    }
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    announce(facts, world, run_dir, start)
    wall_before, t0 = (ckpt or {}).get("wall_time", 0.0), time.time()

    def save(iteration: int) -> None:
        rng = world.gather_objects(checkpoint.rng_state())  # every rank takes part
        if world.is_main:
            wall = wall_before + time.time() - t0
            checkpoint.save_checkpoint(
                ckpt_path, model, optimizer, scaler, iteration, identity, wall, rng
            )

    autocast = runtime.autocast(device, precision)
    stop = runtime.StopFlag()
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
    )
    try:
        last = train(training, start)
    except Interrupted:
        stop.forward()  # after the checkpoint: submitit's handler requeues the job
        raise
    finally:
        stop.restore()
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


def resume_point(ckpt_path: Path, identity: dict, iterations: int) -> dict | str | None:
    """The checkpoint to resume from, None to start, or "finished"."""
    if not ckpt_path.exists():
        return None
    ckpt = checkpoint.load_checkpoint(ckpt_path)
    run_dir = ckpt_path.parents[1]
    checkpoint.check_same_experiment(ckpt.get("config"), identity, run_dir)
    if ckpt["iteration"] >= iterations and (run_dir / "summary.json").exists():
        return "finished"
    return ckpt


def arguments(cfg: DictConfig) -> Settings:
    """The groups as constructor arguments, checked: unknown keys and bad values stop here."""
    check_settings(cfg)
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    data_args.pop("batch_size")
    model_args = OmegaConf.to_container(cfg.model, resolve=True)
    check_keys(build_model, "model", model_args)
    optim_args = OmegaConf.to_container(cfg.optim, resolve=True)
    check_keys(torch.optim.SGD, "optim", optim_args)
    schedule_kwargs = OmegaConf.to_container(cfg.schedule, resolve=True)
    if schedule_kwargs["warmup_iterations"] == "auto":
        # [R1] 4.2 warms up ResNet-110 (lr 0.01 until train error < 80%, ~400 iterations), and
        # notes that 0.1 is too large for it to start converging; deeper CIFAR nets likewise.
        deep = model_args.get("arch", "cifar") == "cifar" and model_args["depth"] >= 110
        schedule_kwargs["warmup_iterations"] = 400 if deep else 0
    schedule_kwargs["milestones"] = tuple(schedule_kwargs["milestones"])
    by_epochs = "epochs" in schedule_kwargs
    check_keys(StepSchedule.from_epochs if by_epochs else StepSchedule, "schedule", schedule_kwargs)
    return Settings(data_args, model_args, optim_args, schedule_kwargs)


def make_schedule(cfg: DictConfig, kwargs: dict, steps_per_epoch: int) -> StepSchedule:
    if "epochs" in kwargs:
        return StepSchedule.from_epochs(
            cfg.optim.lr, steps_per_epoch=steps_per_epoch, batch_size=cfg.data.batch_size, **kwargs
        )
    return StepSchedule(lr=cfg.optim.lr, **kwargs)


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


def check_settings(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        example = {"data.root": "data.root=/data/imagenet", "model.depth": "model.depth=56"}
        raise UserError(
            f"{', '.join(missing)} must be given (the config leaves it unset): add "
            f"{example.get(missing[0], missing[0] + '=...')} to the command."
        )
    length = "epochs" if "epochs" in cfg.schedule else "iterations"
    positive = {
        "data.batch_size": cfg.data.batch_size,
        "optim.lr": cfg.optim.lr,
        f"schedule.{length}": cfg.schedule[length],
        "trainer.log_every": cfg.trainer.log_every,
        "trainer.eval_every": cfg.trainer.eval_every,
        "trainer.ckpt_every": cfg.trainer.ckpt_every,
        "trainer.eval_batch_size": cfg.trainer.eval_batch_size,
    }
    for key, value in positive.items():
        whole = key != "optim.lr"
        wrong_type = isinstance(value, bool) or not isinstance(value, int if whole else int | float)
        if wrong_type or value <= 0:
            kind = "a positive whole number" if whole else "a positive number"
            raise UserError(
                f"{key}={value!r} must be {kind}. [R1]'s CIFAR recipe uses batch "
                "128, lr 0.1 and 64000 iterations."
            )
    warmup = cfg.schedule.warmup_iterations
    if warmup != "auto" and (not isinstance(warmup, int) or warmup < 0):
        raise UserError(
            f"schedule.warmup_iterations={warmup!r} must be auto or a whole "
            "number >= 0 (the papers use 400 for deep nets)."
        )
    depth = cfg.model.depth
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise UserError(f"model.depth={depth!r} must be a whole number, such as 20 or 110.")
    for key in ("channels_last", "sync_bn"):
        if not isinstance(cfg.trainer[key], bool):
            raise UserError(f"trainer.{key}={cfg.trainer[key]!r} must be true or false.")


def experiment_identity(cfg: DictConfig, schedule: StepSchedule) -> dict:
    """What must not change between a run and its resumption (data.root may move)."""
    return {
        "model": what_it_trains("model", OmegaConf.to_container(cfg.model)),
        "data": what_it_trains("data", OmegaConf.to_container(cfg.data)),
        "optim": OmegaConf.to_container(cfg.optim),
        "schedule": vars(schedule),
        "seed": cfg.trainer.seed,
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
