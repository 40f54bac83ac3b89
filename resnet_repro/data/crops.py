"""The CPU pipeline of data.loader=boxes: decode no more of a JPEG than its crop needs.

torchvision's transforms (data.loader=transforms) decode every JPEG whole, at full size, then
resize the whole image (for [R1]'s scale augmentation, up to 640x480 for 224x224 of it) and
crop. Here the crop is drawn first, as a box of the source (boxes.py: the same distributions,
from the size in the file's header), the JPEG is decoded at the smallest DCT scale (1/2, 1/4,
1/8) that keeps the box at least crop-size wide and high (Pillow's `draft`: libjpeg-turbo's
scaled decoding), and only the box is resized, bilinear with antialiasing as torchvision does
on PIL images. Other formats decode at full size; the box is the same.

A batch is made whole in the worker, uint8, channels last, and travels as one tensor: no
per-image tensors to collate. Each image's crop and flip come from a seed the sampler gives
with its index, drawn from (run seed, epoch, place in the epoch): a resumed run crops exactly
as the uninterrupted one did.
"""

import math
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from . import boxes
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
        with Image.open(f) as im:
            return [np.asarray(crop) for crop in cut(im, boxes_of(*im.size), size)]

    return read_file(path, crops)


def cut(im: Image.Image, chosen: list[tuple[boxes.Box, bool]], size: int) -> list[Image.Image]:
    """The boxes of an opened image, each resized to size x size (flipped where asked),
    decoded at the smallest DCT scale that keeps every box at least size pixels a side."""
    width, height = im.size
    smallest_w = min(box.width for box, _ in chosen)
    smallest_h = min(box.height for box, _ in chosen)
    wanted = (math.ceil(width * size / smallest_w), math.ceil(height * size / smallest_h))
    scale = 1.0  # of the decoded image to the source: 1/2, 1/4 or 1/8 after a draft
    if im.format == "JPEG" and wanted[0] <= width and wanted[1] <= height:
        drafted = im.draft("RGB", wanted)  # decodes at a size of at least `wanted`
        scale = drafted[1][2] / width if drafted else 1.0
    im = im.convert("RGB") if im.mode != "RGB" else im
    sx = sy = scale
    out = []
    for box, flip in chosen:
        region = (
            box.left * sx,
            box.top * sy,
            min((box.left + box.width) * sx, im.width),
            min((box.top + box.height) * sy, im.height),
        )
        crop = im.resize((size, size), Image.BILINEAR, box=region)
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop)
    return out
