"""Checkpoints as plain dicts: everything a run needs to go on exactly where it stopped.

The data order needs no state of its own: it is a function of the seed and the iteration
(see batches.py), so model, optimizer, scaler, iteration and RNG state are enough.
"""

import json
from pathlib import Path

import torch

from .errors import UserError
from .files import atomic_save


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def save_checkpoint(
    path: Path,
    model,
    optimizer,
    scaler,
    iteration: int,
    config: dict,
    wall_time: float,
    rng: list[dict],
) -> None:
    """One file for the whole run, written by rank 0: the bare model's state (torchvision's
    names, no DDP `module.` prefix) and every rank's RNG state, rank 0's first."""
    atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "iteration": iteration,
            "config": config,
            "wall_time": wall_time,
            "rng": rng[0],
            "rng_ranks": rng,
        },
        path,
    )


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "iteration"} <= ckpt.keys():
            raise ValueError("it is not a resnet-repro checkpoint")
    except Exception as e:  # any unreadable file is the same user-facing problem
        raise UserError(
            f"Cannot resume: the checkpoint {path} cannot be read ({str(e).splitlines()[0]}). "
            "Move it away to start this run over, or choose a new run directory "
            "(hydra.run.dir=...)."
        ) from None
    return ckpt


def restore(ckpt: dict, model, optimizer, scaler, world) -> int:
    """Load the state into the given objects; return the iteration to continue from. Each rank
    takes its own RNG state when the world size is the one the checkpoint was saved with."""
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        rng = ranks[world.rank] if len(ranks) == world.size else ranks[0]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(
            "Cannot resume: the checkpoint does not fit the model and optimizer built from these "
            f"settings ({str(e).splitlines()[0]}). It may come from another version of this "
            "code; choose a new run directory (hydra.run.dir=...) to start over."
        ) from None
    return ckpt["iteration"]


def check_same_experiment(saved: dict | None, current: dict, run_dir: Path) -> None:
    """A run directory resumes only the experiment it was started with."""
    saved, current = (json.loads(json.dumps(c)) for c in (saved, current))  # tuples as lists
    if saved == current:
        return
    diffs = [
        f"{group}.{key}: {value!r} in the checkpoint, {current.get(group, {}).get(key)!r} now"
        for group, values in (saved or {}).items()
        if isinstance(values, dict)
        for key, value in values.items()
        if current.get(group, {}).get(key) != value
    ]
    if saved and saved.get("seed") != current["seed"]:
        diffs.append(f"trainer.seed: {saved.get('seed')} in the checkpoint, {current['seed']} now")
    raise UserError(
        f"{run_dir} holds a checkpoint of a different experiment ({'; '.join(diffs) or 'unknown'})"
        ". Re-run with the settings it was started with to resume it, or choose a new run "
        "directory (hydra.run.dir=...)."
    )
