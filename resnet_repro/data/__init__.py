"""The data a run trains on, of three kinds behind one interface (DataKind): CIFAR-10/100
(cifar.py: tensors on the device), image folders such as ImageNet (folders.py: DataLoader
workers) and synthetic images (synthetic.py). Each kind reads its images and builds this rank's
batch sources itself; what both pipelines share is in images.py, the epoch plan in sampling.py.
"""

import dataclasses
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Protocol

from ..errors import UserError, check_keys
from ..training.distributed import World
from .cifar import CIFAR, load_cifar
from .folders import class_folders, load_folder
from .sampling import Batches
from .synthetic import synthetic
from .tensors import split_validation


class DataKind(Protocol):
    """A loaded data set: what a run needs of it, whatever its kind."""

    num_classes: int
    image_size: int

    def fingerprint(self) -> str:
        """What tells this data set from another (not where it is)."""

    def sources(
        self, batch_size: int, seed: int, eval_batch_size: int, device, world: World, memory_format
    ) -> tuple[Batches, dict[str, Iterable]]:
        """This rank's training batches (of a global batch_size) and evaluation batches."""


FOLDERS = ("imagenet", "imagefolder")


def load_dataset(name: str, val_split: int = 0, augment: bool = True, **kwargs):
    """CIFAR and synthetic data as uint8 tensors (ImageData); image folders as FolderData,
    whose training transforms include the augmentation (`augment`)."""
    if name in FOLDERS:
        check_keys(load_folder, "data", kwargs)
        if val_split:
            raise UserError(f"data.val_split is for CIFAR; {name} has its own val/ folder.")
        return load_folder(augment=augment, **kwargs)
    class_count(name, **kwargs)  # rejects an unknown name
    reader = synthetic if name == "synthetic" else partial(load_cifar, name)
    check_keys(reader, "data", kwargs)
    return dataclasses.replace(split_validation(reader(**kwargs), val_split), augment=augment)


def class_count(name: str, num_classes: int | None = None, root: str | None = None, **_) -> int:
    """The number of classes, known before the images are read (to check the model first)."""
    if name == "synthetic":
        return num_classes
    if name in CIFAR:
        return CIFAR[name].num_classes
    if name in FOLDERS:
        return len(class_folders(Path(root).expanduser()))
    raise UserError(
        f"data.name={name!r} is unknown; use data=cifar10, cifar100, imagenet, "
        "imagefolder or synthetic."
    )
