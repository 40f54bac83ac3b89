"""Every setting a user can get wrong, checked in one place before anything is written.

`from_config` checks the composed config (as plain values: cli.py reads Hydra's config, nothing
else does), value by value, against RULES and turns it into Settings: the groups as constructor
arguments and the trainer's values. What can only be checked against the data (a validation
split as large as the training set) or the model's arithmetic (depth 6n+2) is checked there,
with messages of the same form. commandline.py checks the command line before Hydra reads it.
"""

import math
import signal
from dataclasses import dataclass, fields

import torch

from .commandline import close_to
from .data.folders import LOADERS
from .errors import UserError, check_keys
from .nets.models import MODEL_KEYS
from .training.runtime import PRECISIONS
from .training.schedule import StepSchedule


@dataclass(frozen=True)
class Trainer:
    """config.yaml's trainer section: how a run trains, not what it trains."""

    device: str
    precision: str
    channels_last: bool
    compile: bool | str
    sync_bn: bool
    seed: int
    threads: int | None
    log_every: int
    eval_every: int
    ckpt_every: int
    eval_batch_size: int
    stop_signals: tuple  # of signal.Signals


@dataclass(frozen=True)
class Settings:
    """A run's settings, checked: the groups as constructor arguments (build_model,
    load_dataset, torch.optim.SGD, StepSchedule) and the trainer's values."""

    model: dict
    data: dict  # without batch_size, which is the schedule's and the sampler's
    optim: dict
    schedule: dict  # warmup_iterations resolved
    batch_size: int  # the global batch, over all ranks
    trainer: Trainer
    config: dict  # the whole config, resolved, as config.yaml records it
    model_name: str | None = None  # the model preset chosen (resnet56), if any

    @property
    def groups(self) -> dict:
        """The groups as given: what the run trains, for its identity and summary.json."""
        return {g: self.config[g] for g in GROUPS}

    @property
    def tags(self) -> list:
        return list(self.config.get("tags") or [])

    def make_schedule(self, steps_per_epoch: int) -> StepSchedule:
        """The lr schedule; an ImageNet schedule in epochs needs the data's steps per epoch."""
        if "epochs" in self.schedule:
            return StepSchedule.from_epochs(
                self.optim["lr"],
                steps_per_epoch=steps_per_epoch,
                batch_size=self.batch_size,
                **self.schedule,
            )
        return StepSchedule(lr=self.optim["lr"], **self.schedule)


@dataclass(frozen=True)
class Rule:
    """What a value may be: a whole number or a number in a range, true/false, or one of some
    words; `words` are accepted besides (auto), and `null` allows an unset value."""

    kind: str  # whole | number | bool | words
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed
    high_open: bool = False
    words: tuple = ()
    null: bool = False

    def allows(self, value) -> bool:
        if value is None:
            return self.null
        if isinstance(value, str):
            return value in self.words
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "whole" and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        low, high = self.low, self.high
        if low is not None and (value < low or (self.low_open and value == low)):
            return False
        return high is None or not (value > high or (self.high_open and value == high))

    def describe(self) -> str:
        if self.kind == "bool":
            text = f"{', '.join(self.words + ('true',))} or false"
        elif self.kind == "words":
            text = ", ".join(self.words)
        else:
            text = "a whole number" if self.kind == "whole" else "a finite number"
            low, high = (f"{v:g}" if isinstance(v, float) else v for v in (self.low, self.high))
            if self.low is not None and self.high is not None:
                text += (
                    f" in {'(' if self.low_open else '['}{low}, {high}"
                    f"{')' if self.high_open else ']'}"
                )
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {low}"
            if self.words:
                text = f"{' or '.join(self.words)}, or {text}"
        return f"{text}, or null" if self.null else text


def whole(low=None, high=None, **kw) -> Rule:
    return Rule("whole", low, high, **kw)


def number(low=None, high=None, **kw) -> Rule:
    return Rule("number", low, high, **kw)


BOOL = Rule("bool")
POSITIVE = number(0, low_open=True)
# Each key with a type or a range; a key of a group that a config does not have is skipped
# (data.crop_size is ImageNet's). Choices of the model (block, shortcut, ...) are checked where
# they are defined (nets/units.py), with the same kind of message.
RULES = {
    "model.depth": whole(1),
    "model.shortcut_scale": POSITIVE,
    "model.residual_scale": POSITIVE,
    "model.gate_bias": number(),
    "model.dropout_rate": number(0, 1, high_open=True),
    "model.checkpointing": BOOL,
    "data.batch_size": whole(1),
    "data.val_split": whole(0),
    "data.augment": BOOL,
    "data.download": BOOL,
    "data.num_classes": whole(2),
    "data.train_size": whole(1),
    "data.test_size": whole(1),
    "data.image_size": whole(8),
    "data.crop_size": whole(8),
    "data.resize_size": whole(8),
    "data.workers": whole(0),
    "data.scale_aug": BOOL,
    "data.ten_crop": BOOL,
    "data.loader": Rule("words", words=LOADERS),
    "optim.lr": POSITIVE,
    "optim.momentum": number(0, 1, high_open=True),
    "optim.weight_decay": number(0),
    "optim.dampening": number(0, 1),
    "optim.nesterov": BOOL,
    "schedule.iterations": whole(1),
    "schedule.epochs": whole(1),
    "schedule.gamma": number(0, 1, low_open=True),
    "schedule.warmup_iterations": whole(0, words=("auto",)),
    "schedule.warmup_lr": POSITIVE,
    "schedule.reference_batch": whole(1, null=True),
    "trainer.device": Rule("words", words=("auto", "cpu", "cuda")),  # or cuda:N, see below
    "trainer.precision": Rule("words", words=PRECISIONS),
    "trainer.compile": Rule("bool", words=("auto",)),
    "trainer.channels_last": BOOL,
    "trainer.sync_bn": BOOL,
    "trainer.seed": whole(0, 2**32 - 1),
    "trainer.threads": whole(1, null=True),
    "trainer.log_every": whole(1),
    "trainer.eval_every": whole(1),
    "trainer.ckpt_every": whole(1),
    "trainer.eval_batch_size": whole(1),
}
EXAMPLES = {
    "model.depth": "such as 20, 56 or 110",
    "data.batch_size": "[R1] uses 128 on CIFAR, 256 on ImageNet",
    "optim.lr": "[R1] uses 0.1",
    "optim.momentum": "[R1] uses 0.9",
    "optim.weight_decay": "[R1] uses 0.0001",
    "schedule.gamma": "the lr is multiplied by it at each milestone; [R1] uses 0.1",
    "schedule.warmup_iterations": "the papers use 400 for deep nets",
    "trainer.threads": "null leaves PyTorch's default",
    "model.shortcut_scale": "[R2] table 1 uses 0.5",
}
SIGNALS = {s.name for s in signal.Signals} - {"SIGKILL", "SIGSTOP"}
GROUPS = ("model", "data", "optim", "schedule")  # what a run trains, as config groups


def check_values(config: dict) -> None:
    """Every value of RULES, the milestones, the stop signals and the keys of the config's
    own sections; the first wrong one is reported."""
    missing = sorted(missing_keys(config))
    if missing:
        example = {"data.root": "data.root=/data/imagenet", "model.depth": "model.depth=56"}
        raise UserError(
            f"{', '.join(missing)} must be given (the config leaves it unset): add "
            f"{example.get(missing[0], missing[0] + '=...')} to the command."
        )
    unknown = sorted(set(config) - {*GROUPS, "trainer", "tags"})
    trainer_keys = {f.name for f in fields(Trainer)}  # +trainer.x= is refused
    unknown += sorted(f"trainer.{k}" for k in set(config["trainer"]) - trainer_keys)
    if unknown:
        hint = close_to(unknown[0])
        raise UserError(f"{unknown[0]} is not a setting of resnet-train{hint or '.'}")
    for key, rule in RULES.items():
        group, name = key.split(".")
        if name not in config[group]:
            continue
        value = config[group][name]
        if key == "trainer.device" and isinstance(value, str) and value.startswith("cuda:"):
            continue  # checked with the GPUs it names (runtime.select_device)
        if not rule.allows(value):
            hint = f" ({EXAMPLES[key]})" if key in EXAMPLES else ""
            raise UserError(f"{key}={value!r} must be {rule.describe()}{hint}.")
    check_milestones(config["schedule"])


def missing_keys(config: dict, prefix: str = "") -> list[str]:
    """The keys a config leaves unset (Hydra's ???)."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += missing_keys(value, f"{prefix}{key}.")
        elif value == "???":
            out.append(f"{prefix}{key}")
    return out


def check_milestones(schedule: dict) -> None:
    unit = "epochs" if "epochs" in schedule else "iterations"
    m = schedule["milestones"]
    ok = isinstance(m, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in m
    )
    if not ok or m != sorted(set(m)):
        raise UserError(
            f"schedule.milestones={m!r} must be a list of {unit}, whole numbers >= 1 in "
            f"increasing order, at which the lr is multiplied by gamma ([R1]: [32000,48000])."
        )


def stop_signals(names) -> tuple[signal.Signals, ...]:
    """trainer.stop_signals as signals: names such as SIGTERM (or TERM)."""
    if not isinstance(names, list | tuple):
        names = [names]
    out = []
    for name in names:
        full = name if not isinstance(name, str) or name.startswith("SIG") else f"SIG{name}"
        if full not in SIGNALS:
            raise UserError(
                f"trainer.stop_signals: {name!r} is not a signal that can be caught; give "
                "names such as [SIGINT,SIGTERM,SIGUSR1] (SLURM's --signal, submitit's default)."
            )
        out.append(signal.Signals[full])
    return tuple(out)


def from_config(config: dict, model_name: str | None = None) -> Settings:
    """The composed config (resolved, as plain values) as Settings: unknown keys and bad values
    stop here."""
    check_values(config)
    trainer = Trainer(
        **config["trainer"] | {"stop_signals": stop_signals(config["trainer"]["stop_signals"])}
    )
    data_args = dict(config["data"])
    batch_size = data_args.pop("batch_size")
    model_args = dict(config["model"])
    check_keys(MODEL_KEYS, "model", model_args)
    optim_args = dict(config["optim"])
    check_keys(torch.optim.SGD, "optim", optim_args)
    schedule_kwargs = dict(config["schedule"])
    if schedule_kwargs["warmup_iterations"] == "auto":
        # [R1] 4.2 warms up ResNet-110 (lr 0.01 until train error < 80%, ~400 iterations), and
        # notes that 0.1 is too large for it to start converging; deeper CIFAR nets likewise.
        deep = model_args.get("arch", "cifar") == "cifar" and model_args["depth"] >= 110
        schedule_kwargs["warmup_iterations"] = 400 if deep else 0
    schedule_kwargs["milestones"] = tuple(schedule_kwargs["milestones"])
    by_epochs = "epochs" in schedule_kwargs
    check_keys(StepSchedule.from_epochs if by_epochs else StepSchedule, "schedule", schedule_kwargs)
    return Settings(
        model=model_args,
        data=data_args,
        optim=optim_args,
        schedule=schedule_kwargs,
        batch_size=batch_size,
        trainer=trainer,
        config=config,
        model_name=model_name,
    )
