"""How fast each image-folder pipeline (data.loader) feeds training, with no model: images per
second of the batches the DataLoader workers deliver, per worker. For data.loader=device that
is the workers' part only (reading files, drawing boxes): decoding is the GPU's.

    python scripts/folder_speed.py FOLDER [--workers 1 2] [--batches 12] [--repeats 3]

FOLDER is an image folder like ImageNet (scripts/photo_folder.py makes one). For each loader,
three ways of cropping: [R1]'s scale augmentation (shorter side in [256, 480], a random 224
crop), the random-resized crop of the common re-implementations, and evaluation's resize to
256 and centre crop; all at 224 px, batch 64, as uint8 ready to copy to the device. The part
`folders` of scripts/bench.py prints its table.
"""

import argparse
import time
from pathlib import Path

import torch

from resnet_repro.data import turbo
from resnet_repro.data.folders import load_folder
from resnet_repro.training.distributed import ALONE

CROPS = {  # name: load_folder's options
    "[R1] scale augmentation": dict(scale_aug=True),
    "RandomResizedCrop": dict(scale_aug=False),
    "evaluation (resize, centre crop)": dict(evaluation=True),
}
# data.loader, and for boxes whether TurboJPEG decodes the crops' regions (the jpeg extra) or
# Pillow whole rows (as without the extra)
LOADERS = {
    "transforms": ("transforms", False),
    "boxes, Pillow": ("boxes", False),
    "boxes, TurboJPEG": ("boxes", True),
    "device": ("device", False),
}


def images_per_sec(root: Path, name: str, workers: int, batches: int, crop: dict) -> float:
    """Images/s over `batches` batches of 64, after 2 batches per worker to start them."""
    loader, regions = LOADERS[name]
    find = turbo.find
    if not regions:  # the workers, forked from here, find no TurboJPEG either
        turbo.find = lambda: None
    try:
        return timed(root, loader, workers, batches, crop)
    finally:
        turbo.find = find


def timed(root: Path, loader: str, workers: int, batches: int, crop: dict) -> float:
    opts = dict(crop)
    evaluation = opts.pop("evaluation", False)
    data = load_folder(str(root), loader=loader, workers=workers, **opts)
    batch = 64
    train, evals = data.sources(batch, 0, batch, torch.device("cpu"), ALONE)
    warm = 2 * max(1, workers)
    feed = evals["val"].loader if evaluation else train.loader  # as the workers send them
    source = (b for _ in iter(int, 1) for b in feed)  # round and round
    for _ in range(warm):
        next(source)
    start = time.perf_counter()
    for _ in range(batches):
        next(source)
    seconds = time.perf_counter() - start
    del source, feed, train, evals  # the workers end
    return batches * batch / seconds


def measure(root: Path, workers: list[int], batches: int, repeats: int = 3) -> list[list]:
    """Rows of (crop, workers, img/s per worker of each loader, boxes' over transforms'). Each
    rate is the best of `repeats`, the loaders taking turns: on a shared machine a slow
    measurement is another process's doing, a fast one is not."""
    if turbo.find() is None:
        raise SystemExit(
            "folder_speed.py: no TurboJPEG to measure: pip install 'resnet-repro[jpeg]'"
        )
    rows = []
    for name, crop in CROPS.items():
        for w in workers:
            speed = dict.fromkeys(LOADERS, 0.0)
            for _ in range(repeats):
                for loader in LOADERS:
                    speed[loader] = max(
                        speed[loader], images_per_sec(root, loader, w, batches, crop)
                    )
            per = {k: v / max(1, w) for k, v in speed.items()}
            ratios = [per[k] / per["transforms"] for k in ("boxes, Pillow", "boxes, TurboJPEG")]
            rows.append(
                [name, w, *(f"{per[k]:.0f}" for k in LOADERS), *(f"{r:.2f}x" for r in ratios)]
            )
    return rows


HEADER = ["crop", "workers", "transforms, img/s per worker", "boxes, Pillow", "boxes, TurboJPEG"]
HEADER += ["device (workers' part)", "boxes, Pillow / transforms", "boxes, TurboJPEG / transforms"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batches", type=int, default=12, help="timed batches of 64")
    p.add_argument("--repeats", type=int, default=3, help="measurements of each, the best kept")
    args = p.parse_args()
    rows = measure(args.folder, args.workers, args.batches, args.repeats)
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


if __name__ == "__main__":
    main()
