"""CIFAR-10/100 from disk: find it, download it if asked (download.py), decode it once into a
uint8 cache (cache.py).

Two layouts are read:
- the official "python version": cifar-10-batches-py/ or cifar-100-python/ (pickled batches),
  through an unpickler that runs no code;
- an image folder: train/<class>/* and test/<class>/* (the layout ImageNet uses).
"""

import hashlib
import io
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..training.files import printable, remove_stale_writes
from .cache import CACHE_VERSION, cache_path, read_cache, write_cache
from .download import download_cifar
from .images import class_names, image_files, open_rgb
from .tensors import ImageData


@dataclass(frozen=True)
class Cifar:
    num_classes: int
    folder: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str


CIFAR = {
    "cifar10": Cifar(
        10,
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
    ),
    "cifar100": Cifar(
        100,
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",),
        ("test",),
        "fine_labels",
    ),
}


def load_cifar(name: str, root: str, download: bool = True) -> ImageData:
    spec, root = CIFAR[name], Path(root).expanduser()
    source = find_source(spec, root)
    if source is None and download:
        download_cifar(spec.url, spec.md5, root)
        source = find_source(spec, root)
    if source is None:
        raise UserError(
            f"No {name} data at data.root={root}. Expected either the official python version "
            f"({root}/{spec.folder}/) or an image folder ({root}/train/<class>/*, "
            f"{root}/test/<class>/*). Point data.root at a copy (make train DATA=/path/to/{name}), "
            "or set data.download=true on a machine with internet."
        )
    layout, path = source
    fingerprint = source_fingerprint(layout, path, spec)
    cache = cache_path(path, name)
    remove_stale_writes(cache)
    tensors = read_cache(cache, fingerprint, lambda t, source: check_labels(t, spec, source))
    if tensors is None:
        reader = read_python_version if layout == "python" else read_image_folder
        tensors = reader(path, spec)
        check_labels(tensors, spec, path)
        write_cache(
            cache, {"fingerprint": fingerprint, "version": CACHE_VERSION, "tensors": tensors}
        )
    return ImageData(**tensors, num_classes=spec.num_classes)


def check_labels(tensors: dict, spec: "Cifar", source: Path) -> None:
    """Every label a class of the data set, every image 3 x 32 x 32: found here, before a run
    starts, not by a traceback mid-training."""
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        if (
            images.dim() != 4
            or tuple(images.shape[1:]) != (3, 32, 32)
            or len(images) != len(labels)
        ):
            raise UserError(
                f"{printable(source)}: the {split} images have shape {tuple(images.shape)} for "
                f"{len(labels)} labels; CIFAR images are 3 x 32 x 32, one label each."
            )
        bad = (labels < 0) | (labels >= spec.num_classes)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise UserError(
                f"{printable(source)}: {int(bad.sum())} {split} labels are outside 0..."
                f"{spec.num_classes - 1} (the first, image {i}, has label {int(labels[i])}); "
                f"this is not {spec.folder} data, or the file is damaged."
            )


def find_source(spec: Cifar, root: Path) -> tuple[str, Path] | None:
    for folder in (root / spec.folder, root):
        if all((folder / f).is_file() for f in spec.train_files + spec.test_files):
            return "python", folder
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder", root
    if (root / "train").is_dir() or (root / "test").is_dir():
        have, lack = ("train", "test") if (root / "train").is_dir() else ("test", "train")
        raise UserError(
            f"data.root={printable(root)} has {have}/ but no {lack}/: an image folder needs "
            f"both, {root}/train/<class>/* and {root}/test/<class>/*."
        )
    return None


def source_fingerprint(layout: str, path: Path, spec: Cifar) -> str:
    """Names, sizes and modification times of every source file: a changed source is re-read."""
    if layout == "python":
        files = [path / f for f in spec.train_files + spec.test_files]
    else:
        files = sorted(p for split in ("train", "test") for p in (path / split).glob("*/*"))
    h = hashlib.sha1()
    for f in files:
        try:
            st = f.stat()
        except OSError:  # a dangling link or a loop of links: named when it is decoded
            st = f.lstat()
        h.update(os.fsencode(f.relative_to(path)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class BatchUnpickler(pickle.Unpickler):
    """Reads the official CIFAR batch files without running code: a pickle may name any function
    to call, and these name only numpy's array reconstruction. Anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes, as Python 3 writes them at pickle protocol 2
    }

    class Refused(pickle.UnpicklingError):
        pass

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise self.Refused(f"it names {module}.{name}, which CIFAR files never hold")
        return super().find_class(module, name)


def read_batch(file: Path, spec: Cifar) -> tuple[np.ndarray, list]:
    """One batch file: N x 3072 uint8 pixels and N labels, checked."""
    label_key = spec.label_key.encode()
    try:
        with open(file, "rb") as fh:
            batch = BatchUnpickler(io.BufferedReader(fh), encoding="bytes").load()
        data, labels = batch[b"data"], batch[label_key]
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"its data has shape {data.shape} ({data.dtype}), not N x 3072 uint8")
        labels = [int(v) for v in labels]
        if len(labels) != len(data):
            raise ValueError(f"it has {len(data)} images but {len(labels)} labels")
    except BatchUnpickler.Refused as e:
        raise UserError(
            f"{printable(file)} is not a CIFAR batch file ({e}); it was not loaded. Replace it "
            "with the official one."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError) as e:  # fmt: skip
        truncated = isinstance(e, EOFError) or "truncated" in str(e)
        why = "it is truncated" if truncated else str(e) or type(e).__name__
        raise UserError(
            f"{printable(file)} is not a whole CIFAR batch file ({why}). Replace it with the "
            f"official {spec.folder} file."
        ) from None
    return data, labels


def read_python_version(path: Path, spec: Cifar) -> dict[str, torch.Tensor]:
    def read(files):
        images, labels = [], []
        for f in files:
            data, batch_labels = read_batch(path / f, spec)
            images.append(data.reshape(-1, 3, 32, 32))
            labels.extend(batch_labels)
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)

    train_images, train_labels = read(spec.train_files)
    test_images, test_labels = read(spec.test_files)
    return dict(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def read_image_folder(root: Path, spec: Cifar) -> dict[str, torch.Tensor]:
    classes = class_names(root / "train")
    if len(classes) != spec.num_classes:
        raise UserError(
            f"{printable(root)}/train has {len(classes)} class folders, but this data set has "
            f"{spec.num_classes}. Check data.root, or choose data=cifar10 / data=cifar100 to match."
        )
    test_classes = class_names(root / "test")
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise UserError(
            f"{printable(root)}/test has other class folders than train/ (only in train/: "
            f"{', '.join(only_train) or '-'}; only in test/: {', '.join(only_test) or '-'}). "
            "A class's folder must have the same name in both, or its test images would be "
            "counted as another class, or not at all."
        )
    tensors = {}
    for split in ("train", "test"):
        files, labels = [], []
        for label, cls in enumerate(classes):
            found = image_files(root / split / cls)
            files += found
            labels += [label] * len(found)
        if not files:
            raise UserError(
                f"{printable(root)}/{split} holds no images in its class folders "
                f"({', '.join(classes[:3])}, ...); expected {split}/<class>/*.png or *.jpg."
            )
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            images = list(pool.map(decode_rgb, files))
        unreadable = [(f, im) for f, im in zip(files, images, strict=True) if isinstance(im, str)]
        if unreadable:
            shown = "; ".join(f"{printable(f)} ({why})" for f, why in unreadable[:3])
            raise UserError(
                f"{len(unreadable)} of the {len(files)} files in {printable(root)}/{split} are not "
                f"readable images: {shown}. Remove or replace them."
            )
        odd = [f for f, im in zip(files, images, strict=True) if im.shape != (32, 32, 3)]
        if odd:
            shown = ", ".join(printable(f) for f in odd[:3])
            raise UserError(
                f"{len(odd)} images in {printable(root)}/{split} are not 32x32 (such as {shown}); "
                "CIFAR images are all 32x32. Remove them, or train on the folder with "
                "data=imagefolder."
            )
        tensors[f"{split}_images"] = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        tensors[f"{split}_labels"] = torch.tensor(labels, dtype=torch.int64)
    return {k: v.contiguous() for k, v in tensors.items()}


def decode_rgb(path: Path) -> np.ndarray | str:
    """The image's pixels, or why it cannot be read (images.open_rgb)."""
    im = open_rgb(path)
    return im if isinstance(im, str) else np.asarray(im)
