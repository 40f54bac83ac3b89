"""Device slots for the runs of a sweep that run side by side on one machine (launcher.py).

A sweep of n runs at a time has n slots: slot s is on GPU s mod G of the G GPUs given, so at
most ceil(n / G) runs share a GPU and the first G runs take one GPU each; on a machine without
GPUs each slot is a share of the CPU. The CPU's threads are divided between the n slots in
both cases. A run holds its slot by a lock on the slot's file, which the kernel releases when
the run's process ends however it ends: a killed run frees its slot, and no count of started
and finished jobs can go wrong."""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .files import FileLock

log = logging.getLogger("resnet_repro")


@dataclass
class Slot:
    index: int
    gpu: str | None  # as CUDA_VISIBLE_DEVICES names it (an index or a UUID); None: the CPU
    threads: int
    lock: FileLock

    def __str__(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "the CPU"
        return f"slot {self.index}: {where}, {self.threads} CPU thread(s)"


def take(folder: Path, n: int, gpus: list[str], cpus: int, poll_s: float = 1.0) -> Slot:
    """The first free of n slots in folder, waiting for one if all are held (by the runs of
    another sweep given the same folder, say)."""
    folder.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for index in range(n):
            try:
                lock = FileLock(folder / f"slot-{index}")
            except FileLock.Busy:
                continue
            gpu = gpus[index % len(gpus)] if gpus else None
            return Slot(index, gpu, max(1, cpus // n), lock)
        if not waiting:
            log.info(f"all {n} slots in {folder} are taken: waiting for one to be free")
            waiting = True
        time.sleep(poll_s)
