"""Checkpoints as plain dicts: everything a run needs to go on exactly where it stopped.

The data order needs no state of its own: it is a function of the seed and the iteration
(data/sampling.py), so model, optimizer, scaler, iteration and RNG state are enough.

A run keeps two, checkpoints/last.pt and previous.pt. A save writes a temporary file, syncs it,
then moves last.pt to previous.pt and the new file to last.pt: a crash at any moment leaves at
least one whole checkpoint. Each holds a checksum of its contents, since torch.load does not
notice a changed byte inside a tensor; files are read with weights_only=True, so that loading
one never runs code.
"""

import hashlib
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import UserError, first_line
from .files import atomic_save

log = logging.getLogger("resnet_repro")
LAST, PREVIOUS = "last.pt", "previous.pt"
REQUIRED = {"model", "optimizer", "iteration"}


class Damaged(Exception):
    """A checkpoint file that cannot be trusted; the message names it and says why."""


class SaveFailed(Exception):
    """A checkpoint could not be written (disk full, I/O error); the previous ones are intact."""

    def __init__(self, path: Path, reason: str):
        super().__init__(path, reason)  # both in args: it is pickled to the other ranks
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def rng_state(device: torch.device) -> dict:
    """This process's random state: the CPU's, and its own GPU's (not every visible GPU's: a
    run may resume where another number of GPUs is visible)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(rng: dict, device: torch.device, rank: int = 0, fold: bool = False) -> None:
    """Take a saved random state. fold: the state is another rank's (the world size changed),
    so ranks other than 0 derive streams of their own from it, as a fresh run's ranks have."""
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda")
    if isinstance(cuda, list):  # earlier versions saved one state per visible GPU
        cuda = cuda[device.index or 0] if len(cuda) > (device.index or 0) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    if fold and rank:
        h = hashlib.blake2b(rng["torch"].numpy().tobytes() + rank.to_bytes(4, "little"))
        seed = int.from_bytes(h.digest()[:8], "little")
        torch.manual_seed(seed)  # the CPU's and every GPU's generator


def digest(obj) -> str:
    """A checksum of a checkpoint's contents as loaded: tensors' bytes, and every plain value."""
    h = hashlib.blake2b(digest_size=16)

    def walk(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(o, dict):
            h.update(f"D{len(o)}".encode())
            for k, v in o.items():
                walk(k)
                walk(v)
        elif isinstance(o, list | tuple):
            h.update(f"L{len(o)}".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"{type(o).__name__}:{o!r};".encode())

    walk(obj)
    return h.hexdigest()


def save(
    folder: Path,
    iteration: int,
    model,
    optimizer,
    scaler,
    identity: dict,
    wall_time: float,
    world,
    device: torch.device,
    pending: dict | None = None,
) -> None:
    """A run's checkpoint of `iteration`: one file for the whole run, written by rank 0: the
    bare model's state (torchvision's names, no DDP `module.` prefix), every rank's RNG state,
    rank 0's first, and a record whose evaluation a stop cut short (`pending`). Every rank
    calls it; a failed write raises SaveFailed on every rank."""
    rng = world.gather_objects(rng_state(device))  # every rank takes part
    failed = None
    if world.is_main:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "iteration": iteration,
            "config": identity,
            "wall_time": wall_time,
            "rng": rng[0],
            "rng_ranks": rng,
            "pending_record": pending,
        }
        try:
            save_checkpoint(folder, state)
        except SaveFailed as e:
            failed = e
    failed = world.broadcast_object(failed)
    if failed is not None:
        raise failed


def save_checkpoint(folder: Path, state: dict) -> Path:
    """Write state as folder/last.pt, keeping the one before as previous.pt. Called by rank 0
    alone; raises SaveFailed (and leaves no temporary file) when the file cannot be written."""
    state = {**state, "checksum": digest(state)}
    last = folder / LAST
    try:
        atomic_save(state, last, previous=folder / PREVIOUS)
    except OSError as e:
        raise SaveFailed(last, e.strerror or first_line(e)) from None
    return last


def read_file(path: Path, what: str = "PyTorch file"):
    """What a file written by torch.save holds, read without running code; Damaged says what is
    wrong with it (empty, truncated, not PyTorch's, or holding objects that could run code)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise Damaged(f"{path} cannot be read ({e.strerror})") from None
    if size == 0:
        raise Damaged(f"{path} is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        raise Damaged(f"{path} is not a whole {what} (truncated, or another file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in first_line(e):  # it names a function or class to load
            raise Damaged(
                f"{path} holds objects other than tensors and plain values, which could run "
                f"code when loaded ({first_line(e)}); it was not loaded (resnet-train never "
                "writes such files)"
            ) from None
        raise Damaged(f"{path} is damaged ({first_line(e)})") from None
    except Exception as e:  # a damaged archive shows up as any of several errors
        raise Damaged(f"{path} is damaged ({first_line(e)})") from None


def load_checkpoint(path: Path) -> dict:
    """The checkpoint in path, checked; Damaged says what is wrong with it."""
    ckpt = read_file(path, "PyTorch checkpoint")
    if not is_checkpoint(ckpt):
        raise Damaged(f"{path} is not a resnet-train checkpoint (it lacks {sorted(REQUIRED)})")
    saved = ckpt.pop("checksum", None)
    if saved is not None and digest(ckpt) != saved:
        raise Damaged(
            f"{path} does not match its checksum: its contents changed after it was written "
            "(a failing disk or a copy gone wrong)"
        )
    return ckpt


def is_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and REQUIRED <= obj.keys()


def latest(folder: Path) -> dict | None:
    """The newest good checkpoint in folder, None if there is none at all. A damaged last.pt is
    set aside as last.pt.damaged (so the next save cannot push the good previous.pt out), and
    the run goes on from previous.pt, saying so; with no good one left, the run stops rather
    than start over from nothing."""
    for stale in folder.glob("*.tmp"):  # a save cut short by a kill
        stale.unlink(missing_ok=True)
    paths = [p for p in (folder / LAST, folder / PREVIOUS) if p.exists()]
    problems = []
    for path in paths:
        try:
            ckpt = load_checkpoint(path)
        except Damaged as e:
            problems.append(str(e))
            continue
        if problems:
            aside = folder / f"{LAST}.damaged"
            os.replace(folder / LAST, aside)
            log.warning(
                f"{problems[0]}. Resuming from {path} (iteration {ckpt['iteration']}) instead; "
                f"the damaged file is kept as {aside}."
            )
        return ckpt
    if problems:
        raise UserError(
            f"Cannot resume: {'; '.join(problems)}. There is no good checkpoint left to resume "
            f"from. Move {folder} away to start this run over, or choose a new run directory "
            "(hydra.run.dir=...)."
        )
    return None


def restore(ckpt: dict, model, optimizer, scaler, world, device: torch.device) -> int:
    """Load the state into the given objects; return the iteration to continue from. Each rank
    takes its own RNG state when the world size is the one the checkpoint was saved with."""
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    try:
        model.load_state_dict(ckpt["model"])
        # The saved param groups bring the implementation they ran with (fused on a GPU); this
        # device's choice, made when the optimizer was built, stays.
        chosen = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
        optimizer.load_state_dict(ckpt["optimizer"])
        for group, impl in zip(optimizer.param_groups, chosen, strict=True):
            group.update(impl)
            for param in group["params"]:  # each buffer in its parameter's layout (below)
                state = optimizer.state.get(param, {})
                state |= {k: like(param, v) for k, v in state.items() if torch.is_tensor(v)}
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        same_world = len(ranks) == world.size
        rng = ranks[world.rank] if same_world else ranks[0]
        set_rng_state(rng, device, world.rank, fold=not same_world)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserError(
            "Cannot resume: the checkpoint does not fit the model and optimizer built from these "
            f"settings ({first_line(e)}). It may come from another version of this "
            "code; choose a new run directory (hydra.run.dir=...) to start over."
        ) from None
    return ckpt["iteration"]


def like(param: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """A saved momentum buffer in its parameter's memory layout: a run may resume with the other
    trainer.channels_last, and CUDA's fused SGD refuses a buffer whose strides differ."""
    if saved.shape == param.shape and saved.stride() != param.stride():
        return torch.empty_like(param, dtype=saved.dtype).copy_(saved)
    return saved


def longer_schedule(saved: dict, current: dict) -> bool:
    """The same schedule, but more iterations."""
    more = current.get("iterations", 0) > saved.get("iterations", 0)
    return more and {**saved, "iterations": current["iterations"]} == current


def check_same_experiment(saved: dict | None, current: dict, run_dir: Path) -> None:
    """A run directory resumes only the experiment it was started with."""
    saved, current = (json.loads(json.dumps(c)) for c in (saved, current))  # tuples as lists
    if saved is not None and "data_fingerprint" not in saved:  # written by an earlier version
        current.pop("data_fingerprint", None)
    if saved and longer_schedule(saved.get("schedule") or {}, current.get("schedule") or {}):
        # A longer run of the same schedule: its milestones are absolute, so what was trained
        # is what the longer run trains up to there.
        log.info(
            f"{run_dir}: extending the run from {saved['schedule']['iterations']} to "
            f"{current['schedule']['iterations']} iterations."
        )
        saved = {**saved, "schedule": current["schedule"]}
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
    if saved and saved.get("data_fingerprint") != current.get("data_fingerprint"):
        diffs.append("the data: data.root holds other images than the run was trained on")
    raise UserError(
        f"{run_dir} holds a checkpoint of a different experiment ({'; '.join(diffs) or 'unknown'})"
        ". Re-run with the settings it was started with (a longer schedule.iterations may extend "
        "it), or choose a new run directory (hydra.run.dir=...)."
    )
