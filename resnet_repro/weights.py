"""Trained weights as files: what a run directory, a checkpoint or a weights file holds, and the
export of a run's weights as a plain state_dict file.

A weights file is what `torch.load(path, weights_only=True)` turns into a state_dict and nothing
else, so it loads anywhere: into build_model's net, and for the ImageNet nets with shortcut B
into torchvision's (`torchvision.models.resnet50().load_state_dict(...)`, strict). What the net
is and where it came from go beside it, in `<name>.json`: the model's and the data's settings,
the run, and the file's sha256. Without that file the command line names the model.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError
from .nets.models import model_defaults
from .reproduction.runs import model_label, read_run, what_it_trains
from .training import checkpoint
from .training.files import atomic_save, printable, sync_folder
from .training.records import strict_json

FORMAT = "resnet-repro weights 1"  # the "format" of a weights file's JSON


@dataclass
class Weights:
    """A net's trained state, and what is known of it."""

    state: dict  # the model's state_dict
    path: Path  # where it was read: a run directory, a checkpoint or a weights file
    kind: str  # run | checkpoint | weights
    sha256: str  # of the file the state was read from
    model: dict | None = None  # the model's settings (None: a weights file without its JSON)
    data: dict | None = None  # the data's settings it trained on, without where the data was
    data_root: str | None = None  # where its run read the data
    trained: dict = field(default_factory=dict)  # iteration, final test error, code, hardware
    notes: list[str] = field(default_factory=list)  # what a user should know (a damaged file)

    @property
    def label(self) -> str:
        return model_label(model_defaults() | self.model) if self.model else "weights"


def read(path) -> Weights:
    """The weights in a run directory (its newest good checkpoint), a checkpoint or a weights
    file; UserError says why a path holds none. Nothing in a run directory is changed: it may
    be training."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_run_dir(path)
    if not path.exists():
        raise UserError(f"{printable(path)}: there is no such file or run directory.")
    try:
        obj = checkpoint.read_file(path)
    except checkpoint.Damaged as e:
        raise UserError(f"{e}. Give a run directory, a checkpoint or a weights file.") from None
    if checkpoint.is_checkpoint(obj):
        try:
            ckpt = checkpoint.load_checkpoint(path)
        except checkpoint.Damaged as e:
            raise UserError(f"{e}.") from None
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        has_run = run_dir is not None and (run_dir / "config.yaml").exists()
        return from_checkpoint(ckpt, path, "checkpoint", run_dir if has_run else None)
    if not is_state_dict(obj):
        raise UserError(
            f"{printable(path)} holds {what_it_holds(obj)}, not weights: resnet-eval reads a "
            "run directory, a resnet-train checkpoint, or a state_dict file (tensors by name, "
            "as resnet-export writes)."
        )
    return from_weights_file(obj, path)


def read_run_dir(run_dir: Path) -> Weights:
    folder = run_dir / "checkpoints"
    paths = [p for p in (folder / checkpoint.LAST, folder / checkpoint.PREVIOUS) if p.exists()]
    if not paths:
        raise UserError(
            f"{printable(run_dir)} holds no checkpoint (checkpoints/last.pt): it is not a "
            "resnet-train run directory, or its run has not saved one yet."
        )
    problems = []
    for path in paths:
        try:
            ckpt = checkpoint.load_checkpoint(path)
        except checkpoint.Damaged as e:
            problems.append(str(e))
            continue
        w = from_checkpoint(ckpt, run_dir, "run", run_dir)
        w.sha256, w.trained["checkpoint"] = file_sha256(path), str(path)
        w.notes += [f"{p}; {path.name} (iteration {ckpt['iteration']}) was read." for p in problems]
        return w
    raise UserError(f"{'; '.join(problems)}. The run directory holds no good checkpoint.")


def from_checkpoint(ckpt: dict, path: Path, kind: str, run_dir: Path | None) -> Weights:
    identity = ckpt.get("config") or {}
    schedule = identity.get("schedule") or {}
    trained = {"iteration": ckpt["iteration"], "iterations": schedule.get("iterations")}
    digest = file_sha256(path) if path.is_file() else ""
    w = Weights(ckpt["model"], path, kind, digest, identity.get("model"))
    w.data = identity.get("data")
    if run_dir is not None:
        run = read_run(run_dir)
        w.model = w.model or run.model
        w.data = w.data or what_it_trains("data", run.config["data"])
        w.data_root = run.config["data"].get("root")
        trained |= {"run": str(run_dir)} | summary_facts(run.summary or {}, ckpt["iteration"])
    w.trained = trained | {"seed": identity.get("seed")}
    return w


def summary_facts(summary: dict, iteration: int) -> dict:
    """What a finished run's summary.json says of how it trained, for the weights' JSON; its
    errors only if they are of the checkpoint's iteration."""
    keys = ("command", "wall_time_s", "precision", "hardware", "code_version", "world_size")
    facts = {k: summary[k] for k in keys if k in summary}
    if summary.get("iteration") == iteration:
        facts |= {k: v for k, v in summary.items() if k.endswith(("_error", "_loss"))}
    return facts


def from_weights_file(state: dict, path: Path) -> Weights:
    w = Weights(state, path, "weights", file_sha256(path))
    about = path.with_suffix(".json")
    if not about.exists():
        return w
    try:
        meta = json.loads(about.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"its format is {meta.get('format')!r}, not {FORMAT!r}")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(
            f"{printable(about)} (beside the weights) is not a weights description ({e}). Move it "
            "away to evaluate the file alone, naming its model (model=...)."
        ) from None
    if meta.get("sha256") != w.sha256:
        raise UserError(
            f"{printable(path)} does not match the sha256 that {about.name} gives for it "
            f"({str(meta.get('sha256'))[:12]}..., the file's is {w.sha256[:12]}...): the file "
            "changed after it was exported, or the description is another file's."
        )
    w.model, w.data, w.trained = meta.get("model"), meta.get("data"), meta.get("trained") or {}
    return w


def is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def what_it_holds(obj) -> str:
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        return f"a dict of {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
    return f"a {type(obj).__name__}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(state: dict) -> str:
    """The net a state_dict is of, read off its keys and shapes: 'a 20-layer CIFAR net (basic
    units, 3 3 3 per stage), 10 classes'."""
    stages = sorted({k.split(".")[0] for k in state if k.startswith("layer")})
    units = [len({k.split(".")[1] for k in state if k.startswith(f"{s}.")}) for s in stages]
    bottleneck = any(".conv3." in k for k in state)
    fc = state.get("fc.weight")
    classes = f"{fc.shape[0]} classes" if fc is not None and fc.dim() == 2 else "no fc layer"
    if not units:
        return f"no residual stages ({classes})"
    arch = "ImageNet" if len(stages) == 4 else "CIFAR"
    depth = (3 if bottleneck else 2) * sum(units) + 2
    kind = "bottleneck" if bottleneck else "basic"
    article = "an" if str(depth).startswith("8") or depth in (11, 18) else "a"
    per_stage = " ".join(map(str, units))
    return f"{article} {depth}-layer {arch} net ({kind} units, {per_stage} per stage), {classes}"


def export(w: Weights, out: Path) -> Path:
    """The weights as a plain state_dict file (contiguous tensors), and its description beside
    it; returns the description's path."""
    about = out.with_suffix(".json")
    atomic_save({k: v.contiguous() for k, v in w.state.items()}, out)
    meta = {
        "format": FORMAT,
        "file": out.name,
        "sha256": file_sha256(out),
        "model": w.model,
        "data": w.data,
        "trained": w.trained,
    }
    tmp = about.with_name(f"{about.name}.{os.getpid()}.tmp")
    tmp.write_text(strict_json(meta, indent=2) + "\n")
    os.replace(tmp, about)
    sync_folder(about.parent)
    return about
