"""Batches on the training device: the whole data set lives there as one uint8 tensor.

Augmentation ([R1] 4.2: pad 4 px, random 32x32 crop, random horizontal flip) is one gather per
batch, with no per-image Python. The shuffle and the crops of an epoch come from a generator
seeded by (seed, epoch) (sampling.py), so batch k of a run is the same whether or not the run
was resumed, and on however many ranks.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..training.distributed import ALONE, World
from .images import Normalize
from .sampling import EpochPlan, common_batches, shard

PAD = 4


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
    augment: bool = True  # [R1] 4.2's pad, crop and flip for the training batches

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

    def sources(
        self, batch_size, seed, eval_batch_size, device, world=ALONE, memory_format=None
    ) -> tuple["TrainBatches", dict]:
        """The whole set on the device, normalised by the training images' own statistics;
        evaluation on val (if split off) and test."""
        plan = EpochPlan(len(self.train_labels), batch_size, seed, world)
        stats = channel_stats(self.train_images)
        normalize = Normalize(*stats, device, memory_format or torch.contiguous_format)
        x, y = self.train_images, self.train_labels
        batches = TrainBatches(x, y, plan, normalize, device, self.augment)
        splits = {
            "val": (self.val_images, self.val_labels),
            "test": (self.test_images, self.test_labels),
        }
        return batches, {
            name: EvalBatches(x, y, eval_batch_size, normalize, device, world)
            for name, (x, y) in splits.items()
            if x is not None
        }


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
        data.augment,
    )


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, on the 0-255 scale."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(5000):
        x = chunk.double()
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.numel() / 3
    mean = total / count
    std = (squares / count - mean * mean).sqrt()
    return mean.float(), std.float()


class TrainBatches:
    """This rank's training batches, from the seeded plan (sampling.py)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        plan: EpochPlan,
        normalize: Normalize,
        device: torch.device,
        augment: bool = True,
    ):
        _, _, self.h, self.w = images.shape
        self.pad = PAD if augment else 0
        # Zero padding of the raw image, as torchvision's RandomCrop(32, padding=4) does.
        self.images = F.pad(images, (self.pad,) * 4).to(device)
        self.labels = labels.to(device)
        self.plan, self.steps_per_epoch = plan, plan.steps_per_epoch
        self.normalize, self.device, self.augment = normalize, device, augment

    def epoch_plan(self, epoch: int) -> dict[str, torch.Tensor]:
        g = self.plan.generator(epoch)
        n = self.plan.n
        plan = {"order": self.plan.order(g)}
        if self.augment:  # drawn per position of the order, so every rank draws the same
            plan["dy"] = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
            plan["dx"] = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
            plan["flip"] = torch.rand(n, generator=g) < 0.5
        return {k: v.to(self.device, non_blocking=True) for k, v in plan.items()}

    def iterate(self, start_iteration: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from iteration start_iteration on, forever; one epoch is steps_per_epoch."""
        rows = torch.arange(self.h, device=self.device)
        cols = torch.arange(self.w, device=self.device)
        flipped, channels = cols.flip(0), torch.arange(3, device=self.device)[None, :, None, None]
        current, plan = None, {}
        for epoch, lo, hi in self.plan.steps(start_iteration):
            if epoch != current:
                current, plan = epoch, self.epoch_plan(epoch)
            idx = plan["order"][lo:hi]
            if self.augment:
                dy, dx, flip = plan["dy"][lo:hi], plan["dx"][lo:hi], plan["flip"][lo:hi, None]
                r = dy[:, None] + rows
                c = dx[:, None] + torch.where(flip, flipped, cols)
                x = self.images[
                    idx[:, None, None, None],
                    channels,
                    r[:, None, :, None],
                    c[:, None, None, :],
                ]
            else:
                x = self.images[idx]
            yield self.normalize(x), self.labels[idx]


class EvalBatches:
    """This rank's shard of a test or validation split on the device, in order, as plain
    images ([R1] tests on the original 32x32 image). Iterate over it once per evaluation."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        normalize: Normalize,
        device: torch.device,
        world: World = ALONE,
    ):
        part = shard(len(labels), world)
        self.common_batches = common_batches(len(labels), batch_size, world)  # loop.evaluate
        self.images = images[part.start : part.stop].to(device)
        self.labels = labels[part.start : part.stop].to(device)
        self.batch_size, self.normalize = batch_size, normalize
        self.size = len(self.labels)  # images in this rank's shard

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in zip(
            self.images.split(self.batch_size), self.labels.split(self.batch_size), strict=True
        ):
            yield self.normalize(x), y
