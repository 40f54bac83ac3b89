"""The uint8 cache of a decoded CIFAR copy: made once beside the data (or in the user's cache
folder), checked against the source on every run, rebuilt when damaged or stale."""

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..training.files import atomic_save, printable

CACHE_VERSION = 1
log = logging.getLogger("resnet_repro")


def read_cache(cache: Path, fingerprint: str, check: Callable[[dict, Path], None]) -> dict | None:
    """The decoded tensors, if the cache is whole and made from the source as it is now; a cache
    that is damaged, stale or of another version is rebuilt (it is only a copy)."""
    if not cache.exists():
        return None
    try:
        cached = torch.load(cache, map_location="cpu", weights_only=True)
        tensors = cached["tensors"]
        fresh = cached.get("fingerprint") == fingerprint and cached.get("version") == CACHE_VERSION
        if fresh:
            check(tensors, cache)  # raises UserError: a cache of other data
            return tensors
        log.info(f"The data set changed since {printable(cache)} was made: decoding it again.")
    except Exception as e:  # a damaged file shows up as any of several errors
        log.warning(
            f"The data cache {printable(cache)} is damaged ({type(e).__name__}); rebuilding it."
        )
    return None


def write_cache(cache: Path, content: dict) -> None:
    """Keep the decoded data set for the next run, where it can be written; where it cannot
    (a read-only data folder and cache folder), every run decodes it again."""
    try:
        atomic_save(content, cache)
    except OSError as e:
        log.warning(
            f"Cannot write the data cache {printable(cache)} ({e.strerror}); going on without "
            "one (each run decodes the data again). Set XDG_CACHE_HOME to a writable folder to "
            "keep it."
        )


def cache_path(source: Path, name: str) -> Path:
    # Beside the data when we may write there, else in the user's cache folder.
    if os.access(source, os.W_OK):
        return source / f".resnet_repro_{name}.pt"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet_repro"
    key = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    return base / f"{name}_{key}.pt"
