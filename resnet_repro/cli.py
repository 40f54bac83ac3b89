"""`resnet-train`: the only module that reads the Hydra config."""

import logging
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, runtime
from .batches import EvalBatches, Normalize, TrainBatches, channel_stats
from .data import class_count, load_dataset
from .engine import Interrupted, Training, evaluate, train
from .errors import UserError, check_keys
from .folders import FolderBatches, FolderData, FolderEval
from .models import build_model, count_flops, count_parameters
from .records import RunRecord, remove_if_untouched, write_summary
from .schedule import StepSchedule

log = logging.getLogger("resnet_repro")
# conf/ sits at the top of the checkout (installed editable, see the Makefile). Hydra would read a
# relative path as a Python package here, so give it the absolute folder.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, run_dir)
    except UserError as e:
        remove_if_untouched(run_dir)
        print(f"resnet-train: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(
            f"resnet-train: stopped after iteration {e.iteration}; checkpoint saved in "
            f"{run_dir}/checkpoints/last.pt. To resume, run the same command with "
            f"hydra.run.dir={run_dir}",
            file=sys.stderr,
        )
        sys.exit(130)


def run(cfg: DictConfig, run_dir: Path) -> None:
    # Everything a user can get wrong is checked before anything is written.
    tr = cfg.trainer
    data_args, model_args, optim_args, schedule_kwargs = arguments(cfg)
    device = runtime.select_device(tr.device)
    runtime.configure(device, tr.threads)
    autocast = runtime.autocast(device, tr.precision)
    torch.manual_seed(tr.seed)
    model = build_model(**model_args, num_classes=class_count(**data_args))
    data = load_dataset(**data_args)
    batches, eval_sets = batch_sources(
        data, cfg.data.batch_size, cfg.data.augment, tr.seed, tr.eval_batch_size, device
    )
    schedule = make_schedule(cfg, schedule_kwargs, batches.steps_per_epoch)

    identity = experiment_identity(cfg, schedule)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    ckpt = checkpoint.load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None:
        checkpoint.check_same_experiment(ckpt.get("config"), identity, run_dir)
        if ckpt["iteration"] >= schedule.iterations and (run_dir / "summary.json").exists():
            log.info(
                f"{run_dir} finished all {schedule.iterations} iterations already; "
                f"see {run_dir}/summary.json"
            )
            return

    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), **optim_args)
    scaler = runtime.grad_scaler(device, tr.precision)
    start = checkpoint.restore(ckpt, model, optimizer, scaler) if ckpt else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    facts = describe(cfg, model, data, device)
    log.info(
        f"{facts['model']}: {facts['block']} {facts['activation']} units, shortcut "
        f"{facts['shortcut']}, {facts['parameters'] / 1e6:.3f}M parameters, on "
        f"{facts['data']}, {device}; run directory {run_dir}"
        + (f"; resuming from iteration {start}" if start else "")
    )
    wall_before, t0 = (ckpt or {}).get("wall_time", 0.0), time.time()

    def save(iteration: int) -> None:
        checkpoint.save_checkpoint(
            ckpt_path, model, optimizer, scaler, iteration, identity, wall_before + time.time() - t0
        )

    record, stop = RunRecord(run_dir, start, schedule.iterations), runtime.StopFlag()
    try:
        last = train(
            Training(
                model,
                optimizer,
                scaler,
                autocast,
                schedule,
                batches,
                eval_sets,
                record,
                save,
                stop,
                tr.log_every,
                tr.eval_every,
                tr.ckpt_every,
            ),
            start,
        )
    finally:
        stop.restore()
        record.close()
    if not any(f"{name}_error" in last for name in eval_sets):  # finished, summary unwritten
        for name, split in eval_sets.items():
            last |= evaluate(model, split, autocast, prefix=name)
    write_summary(run_dir, facts, last, wall_before + time.time() - t0)


def arguments(cfg: DictConfig) -> tuple[dict, dict, dict, dict]:
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
    return data_args, model_args, optim_args, schedule_kwargs


def make_schedule(cfg: DictConfig, kwargs: dict, steps_per_epoch: int) -> StepSchedule:
    if "epochs" in kwargs:
        return StepSchedule.from_epochs(
            cfg.optim.lr, steps_per_epoch=steps_per_epoch, batch_size=cfg.data.batch_size, **kwargs
        )
    return StepSchedule(lr=cfg.optim.lr, **kwargs)


def batch_sources(
    data, batch_size: int, augment: bool, seed: int, eval_batch_size: int, device: torch.device
):
    """Training batches and the evaluation splits, for tensor data (CIFAR) or image folders."""
    if isinstance(data, FolderData):
        return (
            FolderBatches(data, batch_size, seed, device),
            {"val": FolderEval(data, eval_batch_size, device)},
        )
    normalize = Normalize(*channel_stats(data.train_images), device)
    batches = TrainBatches(
        data.train_images, data.train_labels, batch_size, seed, normalize, device, augment
    )
    splits = {
        "val": (data.val_images, data.val_labels),
        "test": (data.test_images, data.test_labels),
    }
    return batches, {
        name: EvalBatches(x, y, eval_batch_size, normalize, device)
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


def experiment_identity(cfg: DictConfig, schedule: StepSchedule) -> dict:
    """What must not change between a run and its resumption (data.root may move)."""
    data = {
        k: v
        for k, v in OmegaConf.to_container(cfg.data).items()
        if k not in ("root", "download", "workers")
    }
    return {
        "model": OmegaConf.to_container(cfg.model),
        "data": data,
        "optim": OmegaConf.to_container(cfg.optim),
        "schedule": vars(schedule),
        "seed": cfg.trainer.seed,
    }


def describe(cfg: DictConfig, model: torch.nn.Module, data, device) -> dict:
    """What was trained, for the log and summary.json."""
    image_size = data.image_size
    return {
        "model": HydraConfig.get().runtime.choices.get("model"),
        **OmegaConf.to_container(cfg.model),
        "data": cfg.data.name,
        "parameters": count_parameters(model),
        "flops": count_flops(model, image_size),  # multiply-adds per image, as [R1] counts
        "image_size": image_size,
        "device": str(device),
    }
