"""`resnet-eval` and `resnet-export`: the error of trained weights on a data set's test split,
and a run's weights as a plain state_dict file. They play the part of torchvision's
`train.py --test-only` and timm's `validate.py`, over the same pieces as resnet-train: the
settings are resnet-train's key=value overrides (Hydra's), the data kinds and the model are
built as a run builds them, and the error is the one the training loop evaluates.

    resnet-eval outputs/2026-12-07/10-00-00 data.root=/data/cifar10    a run directory
    resnet-eval weights/resnet20-cifar10.pt data.root=/data/cifar10    a shipped file
    resnet-eval r50.pt model=resnet50 data=imagenet data.root=/data/imagenet data.ten_crop=true
    resnet-export outputs/2026-12-07/10-00-00 resnet20.pt              a run's weights
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from . import settings
from .commandline import CONF_DIR, check_overrides
from .data import class_count, load_dataset
from .errors import MISTAKE, STOPPED, UserError
from .nets.models import build_model
from .reproduction.runs import model_label
from .training import runtime
from .training.files import printable
from .training.loop import evaluate
from .training.records import code_version, strict_json
from .weights import Weights, describe, export, read


def settings_for(w: Weights, overrides: list[str]) -> settings.Settings:
    """resnet-train's settings with these overrides, where the weights' own model and data
    settings (those the command line does not give) and their run's data.root fill in."""
    check_overrides(overrides)
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    asks_data = "data" in given
    if w.data and not asks_data:
        overrides = [f"data={w.data['name']}", *overrides]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        config = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
    if w.model:
        asked = [k for k in w.model if "model" in given or f"model.{k}" in given]
        differ = [k for k in asked if config["model"].get(k) != w.model[k]]
        if differ:
            theirs = ", ".join(f"model.{k}={w.model[k]}" for k in differ)
            ours = ", ".join(f"model.{k}={config['model'].get(k)}" for k in differ)
            raise UserError(
                f"{printable(w.path)} holds {w.label} ({theirs}), and the command line asks for "
                f"{ours}: leave the model out, the weights say what they are."
            )
        config["model"] |= w.model
    if w.data and not asks_data:
        kept = {k: v for k, v in w.data.items() if f"data.{k}" not in given}
        config["data"] |= {k: v for k, v in kept.items() if k in config["data"]}
        if w.data_root and "data.root" not in given:
            config["data"]["root"] = w.data_root
    return settings.from_config(config)


def check_fits(w: Weights, model: torch.nn.Module, s: settings.Settings) -> None:
    """The weights load into the net the settings build, or the user hears how they differ."""
    fc = w.state.get("fc.weight")
    classes = model.fc.out_features
    if fc is not None and fc.dim() == 2 and fc.shape[0] != classes:
        trained_on = f" ({w.data['name']})" if w.data else ""
        raise UserError(
            f"{printable(w.path)} is a net with {fc.shape[0]} classes, and data={s.data['name']} "
            f"has {classes}: evaluate it on the data it was trained on{trained_on}."
        )
    ours = model.state_dict()
    missing = [k for k in ours if k not in w.state]
    extra = [k for k in w.state if k not in ours]
    shapes = [k for k in ours if k in w.state and ours[k].shape != w.state[k].shape]
    if not (missing or extra or shapes):
        return
    how = "; ".join(
        f"{len(keys)} {what} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})"
        for keys, what in ((missing, "missing"), (extra, "unexpected"), (shapes, "of other shape"))
        if keys
    )
    hint = (
        "Its description disagrees with its tensors: was it exported by this code?"
        if w.model
        else "Name the net it is: model=resnet32, or model.depth=..., model.shortcut=..."
    )
    raise UserError(
        f"{printable(w.path)} does not fit {model_label(s.model)}: it holds {describe(w.state)}, "
        f"and the settings build {describe(ours)} (tensors {how}). {hint}"
    )


def evaluate_weights(w: Weights, s: settings.Settings) -> dict:
    """Each evaluation split's loss and errors (top-1; top-5 over more than 10 classes), as the
    training loop evaluates them, and the number of images."""
    device = runtime.select_device(s.trainer.device)
    runtime.configure(device, s.trainer.threads)
    precision = runtime.choose_precision(device, s.trainer.precision)
    model = build_model(**s.model, num_classes=class_count(**s.data))
    check_fits(w, model, s)
    model.load_state_dict(w.state)
    fmt = torch.channels_last if s.trainer.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    data = load_dataset(**s.data)
    _, splits = data.sources(
        s.batch_size, s.trainer.seed, s.trainer.eval_batch_size, device, memory_format=fmt
    )
    autocast = runtime.autocast(device, precision)
    results = {"device": str(device), "precision": precision}
    for name, batches in splits.items():
        results |= evaluate(model, batches, autocast, prefix=name) | {
            f"{name}_images": batches.size
        }
    return results


def report(w: Weights, s: settings.Settings, results: dict) -> dict:
    return {
        "weights": str(w.path),
        "kind": w.kind,
        "sha256": w.sha256,
        "model": w.label if w.model else model_label(s.model),
        "iteration": w.trained.get("iteration"),
        **results,
        "ten_crop": s.data.get("ten_crop", False),
        "settings": {"model": s.model, "data": s.data},
        "hardware": runtime.hardware(torch.device(results["device"])),
        "code_version": code_version(),
        "trained": w.trained,
        "notes": w.notes,
    }


def result_line(r: dict, json_path: Path) -> str:
    """One line: the model, the file, and each split's errors."""
    splits = [k.removesuffix("_images") for k in r if k.endswith("_images")]
    parts = []
    for split in splits:
        text = f"{split} top-1 error {r[f'{split}_error']:.2f}%"
        if f"{split}_top5_error" in r:
            text += f", top-5 {r[f'{split}_top5_error']:.2f}%"
        parts.append(f"{text} of {r[f'{split}_images']} images")
    crops = ", 10-crop" if r["ten_crop"] else ""
    at = f"iteration {r['iteration']}, " if r["iteration"] is not None else ""
    return (
        f"{r['model']} ({r['weights']}, {at}sha256 {r['sha256'][:12]}) on "
        f"{r['settings']['data']['name']}{crops}: {'; '.join(parts)}; details in {json_path}"
    )


def default_json(w: Weights) -> Path:
    name = w.path.name if w.kind == "run" else w.path.stem
    if w.kind == "checkpoint" and w.path.parent.name == "checkpoints":
        name = f"{w.path.parent.parent.name}-{w.path.stem}"
    return Path("outputs") / "eval" / f"{name}.json"


def eval_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="resnet-eval",
        description="The test error of trained weights: " + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="a run directory, a checkpoint (last.pt) or a weights file")
    p.add_argument("overrides", nargs="*", help="resnet-train settings: data.root=/data/cifar10")
    p.add_argument("--json", type=Path, help="where to write the result (default: outputs/eval/)")
    args = p.parse_args(argv)
    try:
        w = read(args.path)
        s = settings_for(w, args.overrides)
        r = report(w, s, evaluate_weights(w, s))
        json_path = args.json or default_json(w)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(strict_json(r, indent=2) + "\n")
    except UserError as e:
        sys.exit(say("resnet-eval", str(e), MISTAKE))
    except KeyboardInterrupt:
        sys.exit(say("resnet-eval", "stopped (Ctrl-C); nothing was written.", STOPPED))
    for note in w.notes:
        print(f"resnet-eval: note: {note}", file=sys.stderr)
    print(result_line(r, json_path))


def export_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="resnet-export",
        description="A run's weights as a plain state_dict file (torch.load(f, weights_only="
        "True) gives it back), described in a JSON file beside it.",
    )
    p.add_argument("source", help="a run directory or a checkpoint (last.pt)")
    p.add_argument("out", type=Path, help="the weights file to write, e.g. resnet20-cifar10.pt")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = p.parse_args(argv)
    try:
        check_out(args.out, args.force)
        print(export_line(read(args.source), args.out))
    except UserError as e:
        sys.exit(say("resnet-export", str(e), MISTAKE))
    except KeyboardInterrupt:
        sys.exit(say("resnet-export", "stopped (Ctrl-C).", STOPPED))


def check_out(out: Path, force: bool) -> None:
    if out.suffix == ".json":
        raise UserError(f"{out}: name the weights file (.pt); its description goes beside it.")
    if not force and (out.exists() or out.with_suffix(".json").exists()):
        raise UserError(f"{out} (or its .json) exists: give another name, or --force to replace.")


def export_line(w: Weights, out: Path) -> str:
    """Export, and say what was written."""
    if w.kind == "weights":
        raise UserError(
            f"{printable(w.path)} is a weights file already: export a run or a checkpoint."
        )
    about = export(w, out)
    meta = json.loads(about.read_text())
    t, m = w.trained, w.model
    done = "" if t.get("iteration") == t.get("iterations") else " (the run has not finished)"
    line = (
        f"{w.label}, iteration {t.get('iteration')} of {t.get('iterations')}{done}: written to "
        f"{out} (sha256 {meta['sha256']}), described in {about}"
    )
    if m["arch"] == "imagenet" and w.label == f"ResNet-{m['depth']} B":  # torchvision's net
        classes = w.state["fc.weight"].shape[0]
        line += f"; it loads into torchvision.models.resnet{m['depth']}(num_classes={classes})"
    return line


def say(command: str, message: str, code: int) -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return code
