"""Every setting a user can get wrong, checked in one place before anything is written.

`check_overrides` reads the command line before Hydra does, to name the setting a typo was
meant to be; `arguments` checks the composed config, value by value, against RULES and turns
the groups into constructor arguments. What can only be checked against the data (a validation
split as large as the training set) or the model's arithmetic (depth 6n+2) is checked there,
with messages of the same form.
"""

import difflib
import math
import signal
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import UserError, check_keys
from .nets.models import build_model
from .training.runtime import PRECISIONS
from .training.schedule import StepSchedule

# The configs: resnet_repro/conf in an installed wheel (pyproject.toml puts them there), else
# conf/ at the top of the checkout (an editable install, as the Makefile makes). Hydra would read
# a relative path as a Python package, so it is given the absolute folder.
_PACKAGED = Path(__file__).resolve().parent / "conf"
CONF_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Settings:
    """The config groups as constructor arguments, checked."""

    data: dict
    model: dict
    optim: dict
    schedule: dict


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
# they are defined (units.py), with the same kind of message.
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


def check_values(cfg: DictConfig) -> None:
    """Every value of RULES, the milestones, the stop signals and the keys of the config's
    own sections; the first wrong one is reported."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        example = {"data.root": "data.root=/data/imagenet", "model.depth": "model.depth=56"}
        raise UserError(
            f"{', '.join(missing)} must be given (the config leaves it unset): add "
            f"{example.get(missing[0], missing[0] + '=...')} to the command."
        )
    unknown = sorted(set(cfg) - {"model", "data", "optim", "schedule", "trainer", "tags"})
    trainer_keys = set(OmegaConf.load(CONF_DIR / "config.yaml").trainer)  # +trainer.x= is refused
    unknown += sorted(f"trainer.{k}" for k in set(cfg.trainer) - trainer_keys)
    if unknown:
        hint = close_to(unknown[0])
        raise UserError(f"{unknown[0]} is not a setting of resnet-train{hint or '.'}")
    for key, rule in RULES.items():
        group, name = key.split(".")
        if name not in cfg[group]:
            continue
        value = cfg[group][name]
        if key == "trainer.device" and isinstance(value, str) and value.startswith("cuda:"):
            continue  # checked with the GPUs it names (runtime.select_device)
        if not rule.allows(value):
            hint = f" ({EXAMPLES[key]})" if key in EXAMPLES else ""
            raise UserError(f"{key}={value!r} must be {rule.describe()}{hint}.")
    check_milestones(cfg.schedule)
    stop_signals(cfg.trainer.stop_signals)


def check_milestones(schedule: DictConfig) -> None:
    unit = "epochs" if "epochs" in schedule else "iterations"
    m = schedule.milestones
    ok = isinstance(m, ListConfig) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in m
    )
    if not ok or list(m) != sorted(set(m)):
        shown = OmegaConf.to_container(m) if isinstance(m, ListConfig) else m
        raise UserError(
            f"schedule.milestones={shown!r} must be a list of {unit}, whole numbers >= 1 in "
            f"increasing order, at which the lr is multiplied by gamma ([R1]: [32000,48000])."
        )


def stop_signals(names) -> tuple[signal.Signals, ...]:
    """trainer.stop_signals as signals: names such as SIGTERM (or TERM)."""
    if not isinstance(names, ListConfig | list | tuple):
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


def arguments(cfg: DictConfig) -> Settings:
    """The groups as constructor arguments, checked: unknown keys and bad values stop here."""
    check_values(cfg)
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


# --- the command line, before Hydra reads it ---------------------------------------------------


def known_names(conf_dirs: list[Path]) -> dict[str, set[str]]:
    """Each top-level name a command line may set (config groups, sections of config.yaml), and
    the keys below it: for a group, the keys of all its options in every config folder."""
    names: dict[str, set[str]] = {}
    top = OmegaConf.load(conf_dirs[0] / "config.yaml")
    for key, value in top.items():
        if key != "defaults":
            names[str(key)] = set(value) if isinstance(value, DictConfig) else set()
    for group in groups(conf_dirs):
        keys = names.setdefault(group, set())
        for option in options(conf_dirs, group).values():
            content = OmegaConf.load(option)
            if isinstance(content, DictConfig) and group != "experiment":
                keys |= {str(k) for k in content if k != "defaults"}
    return names  # experiment's files are global (no keys below it): experiment.x is no setting


def groups(conf_dirs: list[Path]) -> list[str]:
    return sorted(
        {g.name for d in conf_dirs if d.is_dir() for g in d.iterdir() if g.is_dir()} - {"hydra"}
    )


def options(conf_dirs: list[Path], group: str) -> dict[str, Path]:
    """A group's options by name; the package's own come first, as on Hydra's search path."""
    found: dict[str, Path] = {}
    for d in conf_dirs:
        for p in sorted((d / group).glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def config_dirs(argv: list[str]) -> list[Path]:
    """The package's conf/ and the folders of a command line's --config-dir (-cd): a user's own
    experiment files, added to Hydra's search path without editing the package."""
    dirs = [CONF_DIR]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            dirs.append(Path(value).expanduser().resolve())
    return dirs


def close_to(key: str, conf_dirs: list[Path] = (CONF_DIR,)) -> str:
    """'; did you mean ...?' for a key close to one that exists (a dotted key for a dotted
    one), else ''."""
    names = known_names(list(conf_dirs))
    if "." in key:
        every = [f"{top}.{sub}" for top, subs in names.items() for sub in subs]
    else:
        every = list(names)
    return did_you_mean(key, every)


def did_you_mean(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def check_overrides(argv: list[str]) -> None:
    """A command-line key that names no group and no setting, or an option a group does not
    have: say which one it is close to. (Hydra would suggest adding the key with +, which is
    never what a typo needs, and reports an option it cannot find with its internals.)"""
    dirs = config_dirs(argv)
    for d in dirs[1:]:
        if not d.is_dir():
            raise UserError(f"--config-dir {d}: there is no such folder.")
    names = known_names(dirs)
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "+", "~", "hydra")):
            continue
        key, value = arg.split("=", 1)
        key = key.split("@", 1)[0]
        if "/" in key:
            continue
        top, _, sub = key.partition(".")
        sub = sub.split(".", 1)[0]
        if top not in names or (sub and names[top] and sub not in names[top]):
            raise UserError(
                f"{arg}: {key} is neither a setting nor a config group{close_to(key, dirs)} "
                f"(groups: {', '.join(groups(dirs))}; every setting: resnet-train --cfg job)."
            )
        if not sub and top in groups(dirs) and not any(c in value for c in "()*${"):
            known = sorted(options(dirs, top))
            for choice in value.split(","):  # a sweep: model=resnet20,resnet56
                if choice not in known and choice != "null":
                    raise UserError(
                        f"{arg}: {top} has no option {choice}{did_you_mean(choice, known)} "
                        f"(options: {', '.join(known)})."
                    )
