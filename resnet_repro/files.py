import os
from pathlib import Path

import torch


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file beside path, then rename: a crash never leaves half a file.
    The temporary name is the process's own, so that processes writing the same file (the
    ranks of several nodes building one data cache) never write into each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
