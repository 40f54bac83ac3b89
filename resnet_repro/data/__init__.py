"""CIFAR-10/100 from disk: find it, download it if asked, decode it once into a uint8 cache.

Two layouts are read:
- the official "python version": cifar-10-batches-py/ or cifar-100-python/ (pickled batches);
- an image folder: train/<class>/* and test/<class>/* (the layout ImageNet uses).
"""

import hashlib
import io
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, check_keys
from ..training.files import atomic_save, printable, remove_stale_writes
from .folders import class_folders, load_folder, open_rgb


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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CACHE_VERSION = 1
log = logging.getLogger("resnet_repro")


@dataclass
class ImageData:
    """Images as uint8 N x 3 x H x W tensors, labels as int64; val is empty unless split off."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def fingerprint(self) -> str:
        """What tells one data set from another, cheaply (labels, shapes, the first images);
        not where it is: a copy moved elsewhere is the same data."""
        h = hashlib.blake2b(digest_size=8)
        for t in (
            self.train_labels,
            self.test_labels,
            self.train_images[:64],
            self.test_images[:64],
        ):
            h.update(f"{tuple(t.shape)}".encode() + t.contiguous().numpy().tobytes())
        return h.hexdigest()

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]


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
    return split_validation(reader(**kwargs), val_split)


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


def synthetic(
    num_classes: int = 10,
    train_size: int = 50000,
    test_size: int = 10000,
    image_size: int = 32,
    seed: int = 0,
) -> ImageData:
    """Random images and labels of CIFAR's shapes, for tests and speed measurements."""
    g = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.randint(0, 256, (n, 3, image_size, image_size), generator=g, dtype=torch.uint8)

    def labels(n):
        return torch.randint(0, num_classes, (n,), generator=g)

    return ImageData(
        images(train_size), labels(train_size), images(test_size), labels(test_size), num_classes
    )


def load_cifar(name: str, root: str, download: bool = True) -> ImageData:
    spec, root = CIFAR[name], Path(root).expanduser()
    source = find_source(spec, root)
    if source is None and download:
        download_cifar(spec, root)
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
    tensors = read_cache(cache, fingerprint, spec)
    if tensors is None:
        reader = read_python_version if layout == "python" else read_image_folder
        tensors = reader(path, spec)
        check_labels(tensors, spec, path)
        write_cache(
            cache, {"fingerprint": fingerprint, "version": CACHE_VERSION, "tensors": tensors}
        )
    return ImageData(**tensors, num_classes=spec.num_classes)


def read_cache(cache: Path, fingerprint: str, spec: "Cifar") -> dict | None:
    """The decoded tensors, if the cache is whole and made from the source as it is now; a cache
    that is damaged, stale or of another version is rebuilt (it is only a copy)."""
    if not cache.exists():
        return None
    try:
        cached = torch.load(cache, map_location="cpu", weights_only=True)
        tensors = cached["tensors"]
        fresh = cached.get("fingerprint") == fingerprint and cached.get("version") == CACHE_VERSION
        if fresh:
            check_labels(tensors, spec, cache)
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


def cache_path(source: Path, name: str) -> Path:
    # Beside the data when we may write there, else in the user's cache folder.
    if os.access(source, os.W_OK):
        return source / f".resnet_repro_{name}.pt"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet_repro"
    key = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    return base / f"{name}_{key}.pt"


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
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) != spec.num_classes:
        raise UserError(
            f"{printable(root)}/train has {len(classes)} class folders, but this data set has "
            f"{spec.num_classes}. Check data.root, or choose data=cifar10 / data=cifar100 to match."
        )
    test_classes = sorted(d.name for d in (root / "test").iterdir() if d.is_dir())
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
            found = sorted(
                p for p in (root / split / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
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
    """The image's pixels, or why it cannot be read (folders.open_rgb)."""
    im = open_rgb(path)
    return im if isinstance(im, str) else np.asarray(im)


def download_cifar(spec: Cifar, root: Path) -> None:
    """Fetch the official archive, check its MD5, and unpack it into root."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise UserError(
                f"No data at data.root={root}, and downloading {spec.url} failed "
                f"({getattr(e, 'reason', e)}). If this machine is offline, copy the data set here "
                "by other means and point data.root at it (make train DATA=/path/to/data)."
            ) from None
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        if md5 != spec.md5:
            raise UserError(
                f"The archive downloaded from {spec.url} is corrupt (MD5 {md5}, "
                f"expected {spec.md5}). Try again."
            )
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")


def split_validation(data: ImageData, val_split: int, seed: int = 0) -> ImageData:
    """Hold out val_split training images ([R1] 4.2 used 45k/5k), the same ones for every run."""
    if not val_split:
        return data
    n = len(data.train_labels)
    if not 0 < val_split < n:
        raise UserError(f"data.val_split={val_split} must be between 0 and {n - 1} images.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:val_split], perm[val_split:]
    return ImageData(
        data.train_images[train],
        data.train_labels[train],
        data.test_images,
        data.test_labels,
        data.num_classes,
        data.train_images[val],
        data.train_labels[val],
    )
