"""An image folder that decodes like ImageNet, for the input-pipeline benchmark and tests:

    python scripts/photo_folder.py OUT [--train 2400 --val 600 --seed 0 --links 1]

No ImageNet is at hand, and what a pipeline costs depends on what it decodes: the pixel count,
the bytes of entropy-coded data, the chroma subsampling. So this writes real photographs (the
colour ones scikit-image ships in its wheel, read from the wheel: nothing is installed), cut and
scaled to ImageNet's sizes, as JPEG at quality 90 with 4:2:0 chroma:

- sizes: 3 in 4 files have a long side of 500 px (ImageNet's most common: 500x375, 500x333,
  375x500, 500x500), 1 in 7 a smaller one (250-500 px), 1 in 10 a long side of 800-1600 px
  (ImageNet's tail); landscape 85 times in 100; mean about 525x425, 80 KB a file (ImageNet's
  JPEGs average 110 KB at about 400x350: these photographs are smoother than Flickr's, so a
  pixel here decodes a little faster than one of ImageNet's);
- content: a crop of one photograph at the target's aspect, scaled down to the target size
  (or up, for the tail: the photographs are at most 1411 px), flipped or not, its colour and
  brightness jittered, with a little sensor-like noise (scaled-down photographs are smoother
  than a camera's, and would compress and decode faster than ImageNet's);
- 1 file in 50 is greyscale, as about 2% of ImageNet's are;
- classes: one a photograph (two for the stereo pair of motorcycles, three for the scientific
  images), so a short run can learn something.

OUT/train/<class>/<n>.JPEG and OUT/val/<class>/<n>.JPEG; the same seed writes the same files.
A summary (files, mean size in pixels and bytes) ends the output. With --links K each training
file is there K times (hard links: no more disk), for a GPU benchmark: a GPU trains on 2,400
files in a second, and the start of each epoch (the DataLoader workers' first batches) would
weigh as it never does on ImageNet's 1.28 million.
"""

import argparse
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE = "scikit-image==0.26.0"
CACHE = Path.home() / ".cache" / "resnet-repro"
CLASSES = {  # class: the photographs of scikit-image's data folder it is cut from
    "astronaut": ["astronaut.png"],
    "cat": ["chelsea.png"],
    "coffee": ["coffee.png"],
    "motorcycle": ["motorcycle_left.png", "motorcycle_right.png"],
    "rocket": ["rocket.jpg"],
    "science": ["hubble_deep_field.jpg", "retina.jpg", "ihc.png"],
}
ASPECTS = [(4 / 3, 0.5), (3 / 2, 0.3), (1.0, 0.1), (5 / 4, 0.05), (16 / 9, 0.05)]


def skimage_wheel() -> Path:
    """scikit-image's wheel in the cache, fetched by pip from the package index if missing."""
    found = sorted(CACHE.glob("scikit_image-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd = [*pip, "--only-binary=:all:", "--dest", str(CACHE), SKIMAGE]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(
                f"photo_folder.py: could not fetch {SKIMAGE} with pip; put its wheel in {CACHE}"
            )
        found = sorted(CACHE.glob("scikit_image-*.whl"))
    return found[-1]


def photographs() -> dict[str, list[Image.Image]]:
    with zipfile.ZipFile(skimage_wheel()) as wheel:

        def read(name: str) -> Image.Image:
            return Image.open(io.BytesIO(wheel.read(f"skimage/data/{name}"))).convert("RGB")

        return {cls: [read(name) for name in names] for cls, names in CLASSES.items()}


def target_size(rng: np.random.Generator) -> tuple[int, int]:
    kind = rng.random()
    if kind < 0.75:
        long = 500
    elif kind < 0.9:
        long = int(rng.integers(250, 500))
    else:
        long = int(rng.integers(800, 1601))
    aspects, weights = zip(*ASPECTS, strict=True)
    aspect = aspects[rng.choice(len(aspects), p=weights)]
    short = round(long / aspect)
    return (long, short) if rng.random() < 0.85 else (short, long)


def cut(photo: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A crop of photo at size's aspect, between the largest that fits and half of it (never
    less than size itself where the photograph allows), scaled to size."""
    w, h = size
    fit = min(photo.width / w, photo.height / h)  # the largest crop is w*fit x h*fit
    zoom = rng.uniform(max(min(1.0, fit), fit / 2), fit)
    cw, ch = min(w * zoom, photo.width), min(h * zoom, photo.height)
    left, top = rng.uniform(0, photo.width - cw), rng.uniform(0, photo.height - ch)
    return photo.resize(size, Image.BICUBIC, box=(left, top, left + cw, top + ch))


def finish(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(im, dtype=np.float32)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    x = x * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)  # colour and brightness
    x = x + rng.normal(0, 6.0, size=x.shape)  # the noise of a camera's sensor
    out = Image.fromarray(np.clip(x, 0, 255).round().astype(np.uint8))
    return out.convert("L") if rng.random() < 0.02 else out


def write(out: Path, counts: dict[str, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    photos = photographs()
    classes = sorted(photos)
    files = []
    for split, n in counts.items():
        for i in range(n):
            cls = classes[i % len(classes)]
            photo = photos[cls][rng.integers(len(photos[cls]))]
            im = finish(cut(photo, target_size(rng), rng), rng)
            path = out / split / cls / f"{split}_{i:05d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path, quality=90, subsampling="4:2:0")
            files.append(path)
    return files


def describe(files: list[Path]) -> str:
    sizes = []
    for path in files:
        with Image.open(path) as im:
            sizes.append(im.size)
    w, h = np.array(sizes, dtype=float).T
    kb = np.array([p.stat().st_size for p in files]) / 1000
    return (
        f"{len(files)} files: mean {w.mean():.0f}x{h.mean():.0f} px, "
        f"{(np.maximum(w, h) > 1000).mean():.0%} past 1000 px; "
        f"mean {kb.mean():.0f} KB (median {np.median(kb):.0f}), {kb.sum() / 1000:.0f} MB in all"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=2400, help="training files (all classes)")
    p.add_argument("--val", type=int, default=600, help="validation files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--links", type=int, default=1, help="times each training file is listed")
    args = p.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"photo_folder.py: {args.out} is not empty; give a new folder")
    files = write(args.out, {"train": args.train, "val": args.val}, args.seed)
    print(f"{args.out}: {describe(files)}")
    for path in (f for f in files if f.parent.parent.name == "train"):
        for k in range(1, args.links):
            path.with_name(f"{path.stem}-{k}{path.suffix}").hardlink_to(path)
    if args.links > 1:
        print(f"each training file listed {args.links} times (hard links)")


if __name__ == "__main__":
    main()
