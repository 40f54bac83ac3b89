"""What hydra/launcher=local checks before a sweep starts, in the sweep's own process: how many
runs at a time the GPUs allow, each run's settings (a mistake found by one run halfway through
the sweep would stop it there, and meet its rerun again), and the folders it writes in."""

import os
import sys
from pathlib import Path

from .errors import MISTAKE


def mistake_in(config: dict) -> str | None:
    """What a run with this config would stop at before training, as it checks (settings.py,
    and the model's arithmetic, on the meta device: no memory, no time); None if nothing."""
    import torch

    from . import settings
    from .errors import UserError
    from .nets.models import build_model

    try:
        s = settings.from_config(config)
        with torch.device("meta"):
            build_model(**s.model)
    except UserError as e:
        return str(e)
    return None


def unusable_folder(path: Path) -> str | None:
    """Why path cannot be a folder this process writes in (it need not exist yet)."""
    if path.exists() and not path.is_dir():
        return "is not a folder"
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        return f"cannot be made: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written: {existing} is not writable"
    return None


def runs_at_a_time(n_jobs, runs_per_gpu, gpus: int) -> int:
    """n_jobs, checked (null: one run per slot of every GPU, or 1 on a CPU)."""
    k = runs_per_gpu
    if not (isinstance(k, int) and k >= 1):
        refuse(f"hydra.launcher.runs_per_gpu={k} must be a whole number, 1 or more.")
    n = n_jobs if n_jobs is not None else max(1, gpus * k)
    if not (isinstance(n, int) and n >= 1):
        refuse(f"hydra.launcher.n_jobs={n} must be a whole number, 1 or more (or null).")
    if gpus and n > gpus * k:
        refuse(
            f"hydra.launcher.n_jobs={n} runs at a time would put more than runs_per_gpu={k} "
            f"on a GPU of the {gpus} visible: raise hydra.launcher.runs_per_gpu to "
            f"{-(-n // gpus)}, or lower n_jobs."
        )
    return n


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [g.strip() for g in listed.split(",") if g.strip()][:count]


def refuse(message: str) -> None:
    print(f"resnet-train: {message}", file=sys.stderr)
    sys.exit(MISTAKE)
