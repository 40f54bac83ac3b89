"""The CPU pipeline of data.loader=boxes: decode no more of a JPEG than its crop needs.

torchvision's transforms (data.loader=transforms) decode every JPEG whole, at full size, then
resize the whole image (for [R1]'s scale augmentation, up to 640x480 for 224x224 of it) and
crop. Here the crop is drawn first, as a box of the source (boxes.py: the same distributions,
from the size in the file's header); the JPEG is decoded at the smallest DCT scale (1/2, 1/4,
1/8) that keeps the box at least crop-size wide and high, and only the box is resized.

Two decoders, the same crops: libjpeg-turbo 3 through turbo.py decodes only the rows and
columns around the boxes (`pip install 'resnet-repro[jpeg]'`); without it, Pillow decodes
whole rows (its `draft` gives the DCT scaling). A box on whole pixels (the random-resized
crop's; [R1]'s scale augmentation's, rounded so in boxes.py) is cut out and resized as
torchvision's RandomResizedCrop does it: by torch from TurboJPEG's pixels (the same pixels as
torchvision's transforms), by Pillow otherwise (within a grey level or two). Evaluation's boxes,
of fractional pixels, are resized by Pillow, bilinear with antialiasing, with the pixels around
the box as a resize of the whole image sees them. Other formats (PNG, CMYK JPEGs) decode with
Pillow at full size.

A batch is made whole in the worker, uint8, channels last, and travels as one tensor: no
per-image tensors to collate. Each image's crop and flip come from a seed the sampler gives
with its index, drawn from (run seed, epoch, place in the epoch): a resumed run crops exactly
as the uninterrupted one did.
"""

import io
import math
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from . import boxes, turbo
from .images import read_file
from .sampling import mix_seed


class BoxCrops(Dataset):
    """One split of an image folder (samples: (path, label) pairs, as torchvision's ImageFolder
    lists them), read in batches: __getitems__ takes (index, seed) keys (or indices, for
    evaluation) and returns (x, y), x uint8 of batch x 3 x crop x crop (batch x 10 x ... for ten
    crops)."""

    def __init__(
        self,
        folder,  # torchvision.datasets.ImageFolder: root, classes, samples
        crop_size: int,
        train: bool,
        augment: bool = True,
        scale_aug: bool = False,
        scale_range: tuple[int, int] = (256, 480),
        resize_size: int = 256,
        ten_crop: bool = False,
    ):
        self.root, self.classes, self.samples = folder.root, folder.classes, folder.samples
        self.crop, self.resize = crop_size, resize_size
        self.random = train and augment
        self.scale_range = tuple(scale_range) if scale_aug else None
        self.crops = 10 if ten_crop and not train else 1

    def __len__(self) -> int:
        return len(self.samples)

    def boxes(self, width: int, height: int, seed: int) -> list[tuple[boxes.Box, bool]]:
        """The boxes of one image and whether each is flipped."""
        if self.random:
            rng = random.Random(seed)
            if self.scale_range:
                box = boxes.scale_augmentation(width, height, rng, self.crop, self.scale_range)
            else:
                box = boxes.resized_crop(width, height, rng)
            return [(box, rng.random() < 0.5)]
        if self.crops == 10:
            return boxes.ten_crop(width, height, self.crop, self.resize)
        return [(boxes.centre_crop(width, height, self.crop, self.resize), False)]

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        n, c = len(keys), self.crop
        x = torch.empty(n, self.crops, c, c, 3, dtype=torch.uint8)  # channels last
        labels = []
        for i, key in enumerate(keys):
            index, seed = key if isinstance(key, tuple) else (key, 0)  # evaluation: no seed
            path, label = self.samples[index]
            for j, crop in enumerate(read_crops(path, c, lambda w, h, s=seed: self.boxes(w, h, s))):
                x[i, j].numpy()[:] = crop  # one copy, into the batch
            labels.append(label)
        x = x.permute(0, 1, 4, 2, 3)  # N x crops x C x H x W, its memory still channels last
        return (x if self.crops > 1 else x[:, 0]), torch.tensor(labels)

    def __getitem__(self, index: int):
        x, y = self.__getitems__([(index, 0)])
        return x[0], int(y[0])


def keep_batch(batch):
    """The DataLoader's collate_fn for BoxCrops: its batches come made."""
    return batch


def keys(indices: list[int], seed: int, epoch: int, start: int) -> list[tuple[int, int]]:
    """(index, seed of its crop) for images at places start, start + 1, ... of an epoch."""
    base = mix_seed(seed, epoch) << 32
    return [(i, base + start + k) for k, i in enumerate(indices)]


def read_crops(path: str, size: int, boxes_of) -> list[np.ndarray]:
    """size x size x 3 uint8 crops of the image at path: boxes_of(width, height) gives their
    boxes in its pixels and whether to flip each. A file that is not a readable image is named
    (as images.read_image does)."""

    def crops(f):
        decoder = turbo.find()
        if decoder:
            data = f.read()
            out = region_crops(decoder, data, size, boxes_of)
            if out is not None:
                return out
            f = io.BytesIO(data)  # not a JPEG TurboJPEG decodes (CMYK, PNG, damaged): Pillow
        with Image.open(f) as im:
            return [np.asarray(crop) for crop in cut(im, boxes_of(*im.size), size)]

    return read_file(path, crops)


def region_crops(decoder: turbo.Decoder, data: bytes, size: int, boxes_of):
    """The crops, from only the rows and columns of the JPEG that their boxes cover (and a
    margin, so that resizing sees the pixels around a box as it would in the whole image),
    decoded at the same DCT scale as `cut`'s; None if TurboJPEG cannot decode the file (or
    Pillow would refuse it: too many pixels), for Pillow to read or name.

    Boxes on whole pixels (on_whole_pixels: the random-resized crop's and [R1]'s scale
    augmentation's, at full scale) are resized by torch as torchvision's transforms resize
    them, to the same pixels, faster than Pillow; others (evaluation's, and any box decoded at
    a reduced scale) by Pillow, which takes a box of fractions of a pixel."""
    header = decoder.size(data)
    if header is None:
        return None
    width, height, _ = header
    if Image.MAX_IMAGE_PIXELS and width * height > 2 * Image.MAX_IMAGE_PIXELS:
        return None  # Pillow's guard against decompression bombs: it names the file
    chosen = boxes_of(width, height)
    denom = dct_denominator(width, height, chosen, size)
    # A pixel of the scaled image is denom x denom of the source's (the last row and column
    # partly outside: the scaled size is rounded up)
    scaled = [scaled_box(box, 1 / denom) for box, _ in chosen]
    whole = on_whole_pixels(chosen, denom)
    # A region's edge rows and columns are upsampled from its own chroma only: 2 pixels more
    # keep the box's pixels those of a full decode. Pillow also reads the pixels its filter
    # reaches, up to (box / size) pixels beyond the box.
    margin = 2 + (0 if whole else max(max(b[2] - b[0], b[3] - b[1]) / size for b in scaled))
    cover = (
        min(b[0] for b in scaled) - margin,
        min(b[1] for b in scaled) - margin,
        max(b[2] for b in scaled) + margin,
        max(b[3] for b in scaled) + margin,
    )
    decoded = decoder.region(data, header, denom, cover, channels=3 if whole else 4)
    if decoded is None:
        return None
    pixels, x, y = decoded
    if whole:
        return [
            resize_whole(pixels, b, x, y, size, flip)
            for b, (_, flip) in zip(scaled, chosen, strict=True)
        ]
    im = Image.frombuffer("RGBX", pixels.shape[1::-1], pixels, "raw", "RGBX", 0, 1)
    out = []
    for b, (_, flip) in zip(scaled, chosen, strict=True):
        crop = im.resize((size, size), Image.BILINEAR, box=(b[0] - x, b[1] - y, b[2] - x, b[3] - y))
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop
        out.append(np.asarray(crop.convert("RGB")))  # packed: a fast copy into the batch
    return out


def resize_whole(pixels: np.ndarray, box, x: int, y: int, size: int, flip: bool) -> np.ndarray:
    """A box on whole pixels of an RGB region (its corner at x, y) resized to size x size:
    bilinear with antialiasing, torchvision's resize of uint8 tensors."""
    left, top, right, bottom = (int(c) for c in box)
    hwc = torch.from_numpy(pixels)[top - y : bottom - y, left - x : right - x]
    # Torch's fast uint8 kernel needs a batch that it sees as channels last, and a box cut from
    # a wider region with a batch of one is not: it would resize channels first, then leave a
    # transpose that costs as much as the resize. A copy of the box makes it so (2.4x faster).
    nhwc = hwc.permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    crop = torch.nn.functional.interpolate(
        nhwc, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0].permute(1, 2, 0)  # channels last in, channels last out: height x width x 3 in memory
    return (crop.flip(1) if flip else crop).contiguous().numpy()


def on_whole_pixels(chosen, denom: int) -> bool:
    """Whether the boxes lie on whole pixels of a full-size decode: torchvision's random-resized
    crops, which it cuts out, then resizes (seeing no pixel beyond the box), where scaled boxes
    are resized with the pixels around them."""
    return denom == 1 and all(float(c).is_integer() for box, _ in chosen for c in box)


def dct_denominator(width: int, height: int, chosen, size: int) -> int:
    """The largest of 1, 2, 4, 8 that a JPEG can be scaled down by (the DCT scaling of
    libjpeg-turbo) leaving every box at least size pixels a side: Pillow's rule in `draft`."""
    smallest_w = min(box.width for box, _ in chosen)
    smallest_h = min(box.height for box, _ in chosen)
    wanted = (math.ceil(width * size / smallest_w), math.ceil(height * size / smallest_h))
    if wanted[0] > width or wanted[1] > height:
        return 1
    most = min(width // wanted[0], height // wanted[1])
    return next(d for d in (8, 4, 2, 1) if d <= most)


def scaled_box(box: boxes.Box, scale: float) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a box in the image scaled by `scale`."""
    return tuple(c * scale for c in (box.left, box.top, box.left + box.width, box.top + box.height))


def cut(im: Image.Image, chosen: list[tuple[boxes.Box, bool]], size: int) -> list[Image.Image]:
    """The boxes of an opened image, each resized to size x size (flipped where asked),
    decoded at the smallest DCT scale that keeps every box at least size pixels a side."""
    width, height = im.size
    denom = dct_denominator(width, height, chosen, size) if im.format == "JPEG" else 1
    if denom > 1:
        im.draft("RGB", (width // denom, height // denom))  # decodes at 1/denom, rounded up
    im = im.convert("RGB") if im.mode != "RGB" else im
    whole = on_whole_pixels(chosen, denom)
    out = []
    for box, flip in chosen:
        left, top, right, bottom = scaled_box(box, 1 / denom)
        region = (left, top, min(right, im.width), min(bottom, im.height))
        if whole:
            crop = im.crop(tuple(int(c) for c in region)).resize((size, size), Image.BILINEAR)
        else:
            crop = im.resize((size, size), Image.BILINEAR, box=region)
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop)
    return out
