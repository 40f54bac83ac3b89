"""What a run does, top to bottom: set up, resume, train, finish. It gets Settings and plain
values; cli.py alone reads the config."""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .data import class_count, load_dataset
from .data.sampling import mix_seed
from .errors import UserError
from .nets.models import build_model, count_flops, count_parameters
from .reproduction.runs import what_it_trains
from .settings import Settings
from .training import checkpoint, runtime
from .training.distributed import World
from .training.files import commit_hydra_files
from .training.loop import Interrupted, Training, evaluate_all, train
from .training.records import NullRecord, RunRecord, code_version, write_summary
from .training.schedule import StepSchedule

log = logging.getLogger("resnet_repro")


@dataclass
class Setup:
    """What a run trains, built from its settings: the same whether it starts or resumes."""

    model: torch.nn.Module
    data: object  # the data kind's loaded images (data.load_dataset)
    batches: object  # this rank's training batches
    eval_sets: dict  # "val"/"test" -> this rank's evaluation batches
    schedule: StepSchedule
    identity: dict  # what must not change between a run and its resumption
    precision: str


def run(s: Settings, device: torch.device, world: World, run_dir: Path, stop) -> None:
    runtime.configure(device, s.trainer.threads)
    setup = set_up(s, device, world)
    ckpt_dir = run_dir / "checkpoints"
    # Rank 0 reads the checkpoint and hands it on: the other ranks (other nodes) need not see
    # the run directory, and all agree on whether there is anything left to do.
    ckpt = world.share_from_main(
        lambda: resume_point(ckpt_dir, setup.identity, setup.schedule.iterations)
    )
    if ckpt == "finished":
        if world.is_main:  # what it trained is the checkpoint's: an edit of config.yaml goes
            write_config(run_dir, s)
        log.info(
            f"{run_dir} finished all {setup.schedule.iterations} iterations already; see "
            f"{run_dir}/summary.json"
        )
        return
    training, facts = resume(s, setup, ckpt, device, world, run_dir, stop)
    try:
        last = train(training, training.start)
    except Interrupted:
        stop.forward()  # after the checkpoint: submitit's handler requeues the job
        raise
    finally:
        training.record.close()
    finish(training, facts, last, run_dir)


def set_up(s: Settings, device: torch.device, world: World) -> Setup:
    """The model on its device, the data, this rank's batches and the schedule."""
    precision = runtime.choose_precision(device, s.trainer.precision)
    if s.trainer.sync_bn and device.type != "cuda":
        raise UserError(
            "trainer.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU implementation); "
            "leave it false for per-rank BatchNorm statistics, as [R1] trained."
        )
    torch.manual_seed(s.trainer.seed)  # the same initial weights on every rank
    model = build_model(**s.model, num_classes=class_count(**s.data))
    with world.main_first():  # one rank downloads or decodes, the others read its cache
        data = load_dataset(**s.data)
    memory_format = torch.channels_last if s.trainer.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    batches, eval_sets = data.sources(
        s.batch_size, s.trainer.seed, s.trainer.eval_batch_size, device, world, memory_format
    )
    schedule = s.make_schedule(batches.steps_per_epoch)
    identity = {  # data.root may move, but the data it holds must be the same
        "model": what_it_trains("model", s.groups["model"]),
        "data": what_it_trains("data", s.groups["data"]),
        "optim": s.groups["optim"],
        "schedule": vars(schedule),
        "seed": s.trainer.seed,
        "data_fingerprint": data.fingerprint(),
    }
    return Setup(model, data, batches, eval_sets, schedule, identity, precision)


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


def resume(s: Settings, setup: Setup, ckpt, device, world: World, run_dir: Path, stop):
    """The training state, from the checkpoint if there is one, and the run's facts."""
    tr, model = s.trainer, setup.model
    train_model = world.wrap(model, device, tr.sync_bn)
    optimizer = runtime.sgd(model.parameters(), device, **s.optim)
    scaler = runtime.grad_scaler(device, setup.precision)
    start = checkpoint.restore(ckpt, model, optimizer, scaler, world, device) if ckpt else 0
    if world.rank and not ckpt:  # each rank its own stream for dropout shortcuts
        torch.manual_seed(mix_seed(tr.seed, world.rank))
    iterations, depth = setup.schedule.iterations, s.model["depth"]
    checkpointing = s.model.get("checkpointing", False)
    compiled = runtime.choose_compile(
        tr.compile, device, iterations - start, checkpointing, depth, tr.sync_bn
    )
    facts = describe(s, setup, device, world, compiled)
    if world.is_main:  # the settings are accepted: the run directory describes them now
        commit_hydra_files(run_dir)
        write_config(run_dir, s)
    announce(facts, world, run_dir, start)
    record = RunRecord(run_dir, start, iterations) if world.is_main else NullRecord()
    training = Training(
        model=model,
        train_model=train_model,
        compiled=runtime.compile_model(train_model, depth) if compiled else None,
        world=world,
        device=device,
        optimizer=optimizer,
        scaler=scaler,
        autocast=runtime.autocast(device, setup.precision),
        schedule=setup.schedule,
        batches=setup.batches,
        eval_sets=setup.eval_sets,
        record=record,
        ckpt_dir=run_dir / "checkpoints",
        identity=setup.identity,
        stop_requested=stop,
        log_every=tr.log_every,
        eval_every=tr.eval_every,
        ckpt_every=tr.ckpt_every,
        start=start,
        wall_before=(ckpt or {}).get("wall_time", 0.0),
        pending=(ckpt or {}).get("pending_record"),
    )
    return training, facts


def finish(t: Training, facts: dict, last: dict, run_dir: Path) -> None:
    """The final evaluation, if the last record has none, and summary.json."""
    if not any(f"{name}_error" in last for name in t.eval_sets):  # finished, summary unwritten
        last |= evaluate_all(t.model, t.eval_sets, t.autocast, t.world)
    if t.world.distributed:
        facts["replicas_identical"] = t.world.replicas_identical(t.model)
    if t.world.is_main:
        write_summary(run_dir, facts, last, t.wall_time())


def write_config(run_dir: Path, s: Settings) -> None:
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(s.config))


def describe(s: Settings, setup: Setup, device, world: World, compiled: bool) -> dict:
    """What was trained, and how, for the log and summary.json."""
    image_size = setup.data.image_size
    loader = getattr(setup.data, "chosen_loader", None)  # image folders' pipeline
    return {
        "model": s.model_name,
        "tags": list(s.tags),
        **s.groups["model"],
        "data": s.data["name"],
        **(
            {"data_loader": loader(device), "jpeg_decoder": setup.data.decoder(device)}
            if loader
            else {}
        ),
        "parameters": count_parameters(setup.model),
        "flops": count_flops(setup.model, image_size),  # multiply-adds per image, as [R1]
        "image_size": image_size,
        "device": str(device),
        "precision": setup.precision,
        "channels_last": s.trainer.channels_last,
        "compile": compiled,
        "world_size": world.size,
        "launcher": world.launcher,
        "hardware": runtime.hardware(device),
        "code_version": code_version(),  # the code this leg of the run started with
        # the groups as trained: the figure and table scripts trust these over config.yaml
        "settings": s.groups,
    }


def announce(facts: dict, world: World, run_dir: Path, start: int) -> None:
    log.info(
        f"{facts['model']}: {facts['block']} {facts['activation']} units, shortcut "
        f"{facts['shortcut']}, {facts['parameters'] / 1e6:.3f}M parameters, on {facts['data']}"
        + (
            f" (data.loader={facts['data_loader']}, JPEGs decoded by {facts['jpeg_decoder']})"
            if "data_loader" in facts
            else ""
        )
        + f", {world.size} x {facts['device']}, {facts['precision']}"
        f"{', compiled' if facts['compile'] else ''}; run directory {run_dir}"
        + (f"; resuming from iteration {start}" if start else "")
    )
    cpu = facts["device"] == "cpu"
    if cpu and facts["precision"] == "fp32" and facts["hardware"]["cpu_bf16"]:
        log.info(
            "This CPU computes bf16 natively: trainer.precision=bf16 may train much faster "
            "here (see docs/speed.md)."
        )
    if cpu and facts["precision"] == "bf16" and not facts["hardware"]["cpu_bf16"]:
        log.info(
            "This CPU has no native bf16, so bf16 autocast is emulated: ResNet-20 trained 10-15x "
            "slower than in fp32 on such a CPU. trainer.precision=fp32 trains faster here."
        )
