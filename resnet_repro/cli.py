"""`resnet-train`: the only module that reads the Hydra config."""

import json
import logging
import shutil
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
from .models import build_model, count_parameters
from .records import RunRecord, code_version, read_metrics
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
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    batch_size, augment = data_args.pop("batch_size"), data_args.pop("augment")
    check_settings(cfg, batch_size)
    device = runtime.select_device(tr.device)
    runtime.configure(device, tr.threads)
    autocast = runtime.autocast(device, tr.precision)
    torch.manual_seed(tr.seed)
    model_args = OmegaConf.to_container(cfg.model, resolve=True)
    check_keys(build_model, "model", model_args)
    model = build_model(**model_args, num_classes=class_count(**data_args))
    schedule_kwargs = schedule_args(cfg)
    check_keys(StepSchedule, "schedule", schedule_kwargs)
    schedule = StepSchedule(lr=cfg.optim.lr, **schedule_kwargs)
    optim_args = OmegaConf.to_container(cfg.optim, resolve=True)
    check_keys(torch.optim.SGD, "optim", optim_args)
    data = load_dataset(**data_args)

    identity = experiment_identity(cfg, schedule)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    ckpt = checkpoint.load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None:
        check_same_experiment(ckpt.get("config"), identity, run_dir)
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
    normalize = Normalize(*channel_stats(data.train_images), device)
    batches = TrainBatches(
        data.train_images, data.train_labels, batch_size, tr.seed, normalize, device, augment
    )
    eval_sets = evaluation_splits(data, tr.eval_batch_size, normalize, device)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log.info(
        f"{describe(cfg, model)} on {device}; run directory {run_dir}"
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
    if "test_error" not in last:  # it had finished, but the summary was not written
        for name, split in eval_sets.items():
            last |= evaluate(model, split, autocast, prefix=name)
    write_summary(cfg, run_dir, model, last, wall_before + time.time() - t0, device)


def evaluation_splits(data, batch_size: int, normalize, device) -> dict[str, EvalBatches]:
    splits = {
        "val": (data.val_images, data.val_labels),
        "test": (data.test_images, data.test_labels),
    }
    return {
        name: EvalBatches(x, y, batch_size, normalize, device)
        for name, (x, y) in splits.items()
        if x is not None
    }


def schedule_args(cfg: DictConfig) -> dict:
    args = OmegaConf.to_container(cfg.schedule, resolve=True)
    if args["warmup_iterations"] == "auto":
        # [R1] 4.2 warms up ResNet-110 (lr 0.01 until train error < 80%, ~400 iterations), and
        # notes that a 0.1 start is too large for it to begin converging; deeper nets likewise.
        deep = cfg.model.arch == "cifar" and cfg.model.depth >= 110
        args["warmup_iterations"] = 400 if deep else 0
    args["milestones"] = tuple(args["milestones"])
    return args


def check_settings(cfg: DictConfig, batch_size) -> None:
    positive = {
        "data.batch_size": batch_size,
        "optim.lr": cfg.optim.lr,
        "schedule.iterations": cfg.schedule.iterations,
        "trainer.log_every": cfg.trainer.log_every,
        "trainer.eval_every": cfg.trainer.eval_every,
        "trainer.ckpt_every": cfg.trainer.ckpt_every,
        "trainer.eval_batch_size": cfg.trainer.eval_batch_size,
    }
    for key, value in positive.items():
        whole = key != "optim.lr"
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value <= 0
            or (whole and not isinstance(value, int))
        ):
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


def experiment_identity(cfg: DictConfig, schedule: StepSchedule) -> dict:
    """What must not change between a run and its resumption (data.root may move)."""
    data = {
        k: v for k, v in OmegaConf.to_container(cfg.data).items() if k not in ("root", "download")
    }
    return {
        "model": OmegaConf.to_container(cfg.model),
        "data": data,
        "optim": OmegaConf.to_container(cfg.optim),
        "schedule": vars(schedule),
        "seed": cfg.trainer.seed,
    }


def check_same_experiment(saved: dict | None, current: dict, run_dir: Path) -> None:
    saved, current = (json.loads(json.dumps(c)) for c in (saved, current))  # tuples as lists
    if saved == current:
        return
    diffs = [
        f"{group}.{key}: {saved_v!r} in the checkpoint, {current[group].get(key)!r} now"
        for group, values in (saved or {}).items()
        if isinstance(values, dict)
        for key, saved_v in values.items()
        if current.get(group, {}).get(key) != saved_v
    ]
    if saved and saved.get("seed") != current["seed"]:
        diffs.append(f"trainer.seed: {saved.get('seed')} in the checkpoint, {current['seed']} now")
    raise UserError(
        f"{run_dir} holds a checkpoint of a different experiment ({'; '.join(diffs) or 'unknown'})"
        ". Re-run with the settings it was started with to resume it, or choose a new run "
        "directory (hydra.run.dir=...)."
    )


def describe(cfg: DictConfig, model: torch.nn.Module) -> str:
    m = cfg.model
    choice = HydraConfig.get().runtime.choices.get("model", "model")
    return (
        f"{choice} ({m.arch} depth {m.depth}, {m.block} {m.activation} units, shortcut "
        f"{m.shortcut}, {count_parameters(model) / 1e6:.3f}M parameters) on {cfg.data.name}"
    )


def write_summary(cfg, run_dir: Path, model, last: dict, wall_time: float, device) -> None:
    speeds = sorted(
        r["images_per_sec"]
        for r in read_metrics(run_dir / "metrics.jsonl")
        if "images_per_sec" in r
    )
    summary = {
        "model": HydraConfig.get().runtime.choices.get("model"),
        **OmegaConf.to_container(cfg.model),
        "data": cfg.data.name,
        "parameters": count_parameters(model),
        **{k: v for k, v in last.items() if k != "images_per_sec"},
        "images_per_sec_median": speeds[len(speeds) // 2] if speeds else None,
        "wall_time_s": round(wall_time, 1),
        "device": str(device),
        "code_version": code_version(),
        "command": sys.argv,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    errors = ", ".join(
        f"{s} error {last[s + '_error']:.2f}%"
        for s in ("train", "val", "test")
        if s + "_error" in last
    )
    log.info(f"done: {errors}; {wall_time / 60:.1f} min; summary in {run_dir}/summary.json")


def remove_if_untouched(run_dir: Path) -> None:
    """A run stopped by a user mistake leaves nothing behind: Hydra has already made its run
    directory with .hydra/ and the log; remove them unless the run directory holds more."""
    if Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        return
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in list(run_dir.parents)[:2]:  # the date folder, outputs/multirun/...
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break
