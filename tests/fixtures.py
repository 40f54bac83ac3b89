"""Tiny data sets in both on-disk layouts, written the way the real ones are."""

import os
import pickle
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_python_version(root: Path, name: str = "cifar10", per_file: int = 4) -> dict:
    """The official "python version": pickled dicts of N x 3072 uint8 rows and label lists."""
    folder, label_key, num_classes = {
        "cifar10": ("cifar-10-batches-py", b"labels", 10),
        "cifar100": ("cifar-100-python", b"fine_labels", 100),
    }[name]
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    test_files = ["test_batch"] if name == "cifar10" else ["test"]
    out = {}
    for split, files in (("train", train_files), ("test", test_files)):
        xs, ys = [], []
        for i, f in enumerate(files):
            x = images(per_file, seed=i + (100 if split == "test" else 0))
            y = [(j * 7 + i) % num_classes for j in range(per_file)]
            (root / folder).mkdir(parents=True, exist_ok=True)
            with open(root / folder / f, "wb") as fh:
                # protocol 2, as the official files (written by Python 2) are
                pickle.dump({b"data": x.reshape(per_file, -1), label_key: y}, fh, protocol=2)
            xs.append(x)
            ys += y
        out[split] = (np.concatenate(xs), ys)
    return out


def write_image_folder(root: Path, per_class: dict[str, int], classes=CLASSES) -> dict:
    """train/<class>/*.png and test/<class>/*.png (PNG, so pixels survive exactly)."""
    out = {}
    for split, n in per_class.items():
        xs, ys = [], []
        for label, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for j, x in enumerate(images(n, seed=label * 100 + len(split))):
                Image.fromarray(x.transpose(1, 2, 0)).save(root / split / cls / f"{j:04d}.png")
                xs.append(x)
                ys.append(label)
        out[split] = (np.stack(xs), ys)
    return out


UNREADABLE = {  # how an image file is damaged -> what the message says of it
    "not-an-image": "not an image",
    "truncated": "image file is truncated",
    "fifo": "not a regular file but a named pipe",
    "dangling-link": "No such file or directory",
    "link-loop": "Too many levels of symbolic links",
    "bomb": "too many pixels to decode safely",
}


def damage(path: Path, how: str) -> None:
    """Make an image file unreadable in one of the ways a data folder can be."""
    raw = path.read_bytes()
    path.unlink()
    if how == "not-an-image":
        path.write_bytes(b"hello, not pixels")
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "fifo":  # opening it would wait for a writer for ever
        os.mkfifo(path)
        unblock_later(path)
    elif how == "dangling-link":
        path.symlink_to(path.with_name("gone.png"))
    elif how == "link-loop":
        path.symlink_to(path.name)
    else:
        raise ValueError(how)


def unblock_later(fifo: Path, after: float = 20) -> None:
    """If a reader is stuck on the pipe (the bug the test is after), let it go after a while, so
    that the test fails rather than hangs."""

    def open_for_writing():
        end = time.monotonic() + after + 30
        time.sleep(after)
        while time.monotonic() < end:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader (none stuck: the fix works), or the file is gone
                time.sleep(1)

    threading.Thread(target=open_for_writing, daemon=True).start()


def make_archive(src: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for child in src.iterdir():
            tar.add(child, arcname=child.name)
    return archive


def write_jpeg_folder(
    root: Path, classes: int = 3, train: int = 6, val: int = 3, size: tuple[int, int] = (40, 48)
) -> Path:
    """train/<class>/*.jpg and val/<class>/*.jpg, as ImageNet is laid out (any image size)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    return root
