"""Run directories as the figure and table scripts read them.

A run directory holds what resnet-train wrote: config.yaml (the resolved config), metrics.jsonl
and, once the run has finished, summary.json. Nothing else is read (not TensorBoard's files).
Runs that differ only in their seed form one group: one line of a figure, one row of a table.
"""

import dataclasses
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import UserError
from ..nets.models import model_defaults
from ..nets.units import UnitOptions, usual_shortcut
from ..training.records import METRICS, read_metrics

# The metric names of metrics.jsonl and summary.json that the figures and tables use.
TRAIN_ERROR, TRAIN_LOSS, TEST_ERROR = "train_error", "train_loss", "test_error"
# Keys that say where the data is or how memory is spent, not what a run trains: a run may
# resume with them changed (cli.experiment_identity), and runs that differ in them are alike.
NOT_THE_EXPERIMENT = {
    "data": ("root", "download", "workers", "loader"),
    "model": ("checkpointing",),
}


def what_it_trains(group: str, values: dict) -> dict:
    """A config group without the keys of NOT_THE_EXPERIMENT."""
    return {k: v for k, v in values.items() if k not in NOT_THE_EXPERIMENT.get(group, ())}


# The original unit and identity shortcut: UnitOptions' defaults for what a variant changes.
ORIGINAL_UNIT = {
    f.name: f.default
    for f in dataclasses.fields(UnitOptions)
    if f.name not in ("block", "shortcut", "stride_on")
}

ACTIVATION_NAMES = {
    "original": "original",
    "bn_after_add": "BN after addition",
    "relu_before_add": "ReLU before addition",
    "relu_preact": "ReLU-only pre-activation",
    "full_preact": "full pre-activation",
}


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]
    summary: dict | None  # None until the run has finished

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def data(self) -> str:
        return self.config["data"]["name"]

    @property
    def model(self) -> dict:
        return self.config["model"]

    @property
    def last_iteration(self) -> int:
        return self.metrics[-1]["iteration"] if self.metrics else 0

    @property
    def planned_iterations(self) -> int | None:
        schedule = self.config["schedule"]
        if "iterations" in schedule:
            return schedule["iterations"]
        epoch = next((r for r in reversed(self.metrics) if r.get("epoch")), None)
        if epoch is None:
            return None  # an epoch schedule whose epoch length no record tells yet
        return round(schedule["epochs"] * epoch["iteration"] / epoch["epoch"])

    @property
    def progress(self) -> str:
        return f"iteration {self.last_iteration} of {self.planned_iterations or '?'}"

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        points = [(r["iteration"], r[key]) for r in self.metrics if key in r]
        return [p[0] for p in points], [p[1] for p in points]

    def experiment(self) -> str:
        """The configuration without the seed and the run's place: what groups runs."""
        c = {k: what_it_trains(k, self.config[k]) for k in ("model", "data", "optim", "schedule")}
        return json.dumps(c, sort_keys=True)


@dataclass
class Group:
    """Runs of one configuration over seeds. Only finished runs enter the statistics."""

    runs: list[Run]

    @property
    def config(self) -> dict:
        return self.runs[0].config

    @property
    def label(self) -> str:
        return model_label(self.config["model"])

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def unfinished(self) -> list[Run]:
        return [r for r in self.runs if not r.finished]

    @property
    def iterations(self) -> int | None:
        return self.runs[0].planned_iterations

    @property
    def key(self) -> str:
        return self.runs[0].experiment()

    @property
    def original(self) -> str:
        """The key of the same net with the original unit and the identity shortcut: the
        group a shortcut type or unit is compared with ([R2] figures 3 and 6)."""
        c = json.loads(self.key)
        c["model"] |= {k: v for k, v in ORIGINAL_UNIT.items() if k in c["model"]}
        return json.dumps(c, sort_keys=True)

    def stats(self, key: str = TEST_ERROR) -> "Stats | None":
        values = [r.summary[key] for r in self.finished if key in r.summary]
        return Stats.of(values) if values else None

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """The mean over the group's finished runs (all its runs while none has finished) at
        the iterations they all recorded."""
        common, curves = self.curves(key)
        return common, [statistics.fmean(values) for values in zip(*curves, strict=True)]

    def curves(self, key: str) -> tuple[list[int], list[list[float]]]:
        """Each of those runs' values at the iterations they all recorded: the spread between
        seeds."""
        runs = self.finished or self.runs
        points = [dict(zip(*r.curve(key), strict=True)) for r in runs]
        common = sorted(set.intersection(*(set(p) for p in points)))
        return common, [[p[i] for i in common] for p in points]


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    mean: float
    std: float  # the sample standard deviation; 0 for a single run
    best: float

    @staticmethod
    def of(values: list[float]) -> "Stats":
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return Stats(
            len(values), statistics.median(values), statistics.fmean(values), std, min(values)
        )


def model_label(m: dict) -> str:
    """The papers' name for a network: plain-20, ResNet-110, ResNet-34 B, ResNet-164
    (full pre-activation), ResNet-110 (exclusive gating, b_g -6), ..."""
    name = f"{'plain' if m['shortcut'] == 'none' else 'ResNet'}-{m['depth']}"
    if (
        m["shortcut"] not in ("none", usual_shortcut(m["arch"], m["block"]))
        or m["arch"] == "imagenet"
    ):
        name += f" {m['shortcut']}" if m["shortcut"] != "none" else ""
    notes = []
    if m["activation"] != "original":
        notes.append(ACTIVATION_NAMES.get(m["activation"], m["activation"]))
    variant = m["shortcut_variant"]
    scales = (m["shortcut_scale"], m["residual_scale"])
    if variant == "identity" and scales != (1, 1):
        notes.append(f"scaling {scales[0]:g}/{scales[1]:g}")
    elif variant.endswith("gating"):
        kind = "exclusive gating" if variant == "exclusive_gating" else "shortcut-only gating"
        notes.append(f"{kind}, b_g {m['gate_bias']:g}")
    elif variant == "conv1x1":
        notes.append("1x1 conv shortcut")
    elif variant == "dropout":
        notes.append(f"dropout {m['dropout_rate']:g} shortcut")
    return name + (f" ({', '.join(notes)})" if notes else "")


def read_run(path: Path) -> Run:
    try:
        config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=True)
        if not isinstance(config, dict) or not {"model", "data", "schedule"} <= config.keys():
            raise ValueError("no model, data or schedule in it")
        metrics = read_metrics(path) if (path / METRICS).exists() else []
        summary_path = path / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path} is not a readable resnet-train run directory ({e}); leave it out."
        ) from None
    trained = (summary or {}).get("settings", {})
    changed = sorted(
        g for g in trained if what_it_trains(g, trained[g]) != what_it_trains(g, config.get(g, {}))
    )
    if changed:  # config.yaml edited after the run: what it trained is what its summary says
        print(
            f"note: {path}/config.yaml differs from what the run trained ({', '.join(changed)}; "
            "summary.json); the summary's settings are used.",
            file=sys.stderr,
        )
    config |= trained
    config["model"] = model_defaults() | config["model"]  # a run from before a setting existed
    return Run(path, config, metrics, summary)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """The runs in these folders: each one a run directory, or a folder with runs below it (a
    sweep directory, an outputs/ folder). A path that is missing or holds no run is an error."""
    if not paths:
        raise UserError("give one or more run directories, or folders that hold runs.")
    runs = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError(f"{p} is not a folder: give run directories or sweep directories.")
        found = sorted(
            c.parent for c in p.rglob("config.yaml") if ".hydra" not in c.relative_to(p).parts
        )
        if not found:
            started = any(p.rglob(".hydra"))
            why = (
                "Hydra made it, but training never started (it stopped before its first iteration?)"
                if started
                else "no config.yaml of a resnet-train run below it"
            )
            raise UserError(f"{p} holds no runs: {why}.")
        runs += [read_run(d) for d in found]
    unique = {r.path.resolve(): r for r in runs}  # a folder given twice, or a run and its sweep
    return list(unique.values())


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with the same configuration (all but the seed) as one group, in the order found."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.experiment(), []).append(run)
    return [Group(sorted(g, key=lambda r: r.config["trainer"]["seed"])) for g in groups.values()]


def one_data_set(runs: list[Run], what: str) -> str:
    """A figure compares runs on one data set; say which runs differ."""
    names = sorted({r.data for r in runs})
    if len(names) > 1:
        example = {n: next(r.path for r in runs if r.data == n) for n in names}
        listed = "; ".join(f"{n} (e.g. {p})" for n, p in example.items())
        raise UserError(
            f"{what} compares runs on one data set, and these runs are on {len(names)}: "
            f"{listed}. Give the runs of one data set at a time."
        )
    return names[0]


def unfinished_note(runs: list[Run]) -> list[str]:
    """A line for each run not finished: they are shown as such, never averaged in."""
    return [f"{r.path}: not finished ({r.progress})" for r in runs if not r.finished]
