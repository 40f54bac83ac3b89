"""Where each crop of an image folder comes from, in the source image's own pixels.

torchvision's transforms decode the whole image, resize it, then crop: for [R1]'s scale
augmentation a 500x375 JPEG is resized to up to 640x480 to keep 224x224 of it. The same crops
can be drawn from the image's size alone (a JPEG header holds it) as a box in the source, with
the distributions of torchvision's transforms, so that a loader decodes no more than the box
needs (loaders.py: at a reduced DCT scale on the CPU, or on the GPU) and resizes only the box.

A box is (left, top, width, height) in source pixels, floats: scaled boxes need not fall on
pixel edges. Each function draws from `rng` (random.Random), so a box can be drawn again from
its seed.
"""

import math
import random
from typing import NamedTuple


class Box(NamedTuple):
    left: float
    top: float
    width: float
    height: float


def resized_crop(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """torchvision's RandomResizedCrop: a box of a random part of the area (uniform in scale)
    and a random aspect (log-uniform in ratio), at a random place; 10 tries, else the whole
    image cut to the nearest allowed aspect, centred. Integer pixels, as torchvision's."""
    area = width * height
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(lo, hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return Box(rng.randint(0, width - w), rng.randint(0, height - h), w, h)
    w, h = width, height
    if width / height < ratio[0]:
        h = round(width / ratio[0])
    elif width / height > ratio[1]:
        w = round(height * ratio[1])
    return Box((width - w) // 2, (height - h) // 2, w, h)


def shorter_side(width: int, height: int, size: int) -> tuple[int, int]:
    """The size of the image resized so that its shorter side is `size` (torchvision's Resize
    and RandomShortestSize: the longer side truncated)."""
    r = size / min(width, height)
    return (size, int(height * r)) if width <= height else (int(width * r), size)


def scale_augmentation(
    width: int, height: int, rng: random.Random, crop: int, scale_range: tuple[int, int]
) -> Box:
    """[R1] 3.4: the shorter side resized to a length uniform in scale_range (integers, both
    ends in), then a crop x crop square at a random place: torchvision's RandomShortestSize
    then RandomCrop, mapped back to the source and rounded to its whole pixels (at most half a
    pixel off). A loader cuts the box out and resizes it, as RandomResizedCrop's: the same
    pixels as torchvision's resized_crop of it, and on a CPU much faster than resizing a box
    of fractional pixels (docs/speed.md)."""
    w, h = shorter_side(width, height, rng.randint(*scale_range))
    left, top = rng.randint(0, w - crop), rng.randint(0, h - crop)
    box = scaled_back(Box(left, top, crop, crop), width / w, height / h)
    left, top = round(box.left), round(box.top)
    right = min(width, round(box.left + box.width))
    bottom = min(height, round(box.top + box.height))
    return Box(left, top, right - left, bottom - top)


def centre_crop(width: int, height: int, crop: int, resize: int) -> Box:
    """Evaluation: the shorter side resized to `resize`, the centre crop x crop square
    (torchvision's Resize then CenterCrop, whose offsets are rounded)."""
    return five_crop(width, height, crop, resize, flipped=False)[4]


def ten_crop(width: int, height: int, crop: int, resize: int) -> list[tuple[Box, bool]]:
    """[R1]'s 10-crop testing, in torchvision's TenCrop order: the five crops of the resized
    image (five_crop), then the five of its mirror image, each a box of the source and whether
    the loader flips its pixels (the mirror's top-left corner is the source's top right)."""
    plain = five_crop(width, height, crop, resize, flipped=False)
    mirror = five_crop(width, height, crop, resize, flipped=True)
    return [(box, False) for box in plain] + [(box, True) for box in mirror]


def five_crop(width: int, height: int, crop: int, resize: int, flipped: bool) -> list[Box]:
    """torchvision's FiveCrop of the image resized to `resize` (its mirror image if flipped):
    top left, top right, bottom left, bottom right, centre; as boxes of the unflipped source."""
    w, h = shorter_side(width, height, resize)
    if min(w, h) < crop:
        raise ValueError(f"a crop of {crop} px is larger than the resized image ({w}x{h})")
    right, bottom = w - crop, h - crop
    places = [(0, 0), (right, 0), (0, bottom), (right, bottom)]
    places.append((int(round(right / 2)), int(round(bottom / 2))))
    if flipped:  # a crop at x of the mirror image is the crop at right - x of the source
        places = [(right - x, y) for x, y in places]
    return [scaled_back(Box(x, y, crop, crop), width / w, height / h) for x, y in places]


def scaled_back(box: Box, sx: float, sy: float) -> Box:
    """A box of the resized image, in the source's pixels (sx, sy: source over resized)."""
    return Box(box.left * sx, box.top * sy, box.width * sx, box.height * sy)
