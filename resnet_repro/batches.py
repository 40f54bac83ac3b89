"""Batches on the training device: the whole data set lives there as one uint8 tensor.

Augmentation ([R1] 4.2: pad 4 px, random 32x32 crop, random horizontal flip) is one gather per
batch, with no per-image Python. The shuffle and the crops of an epoch come from a generator
seeded by (seed, epoch), so batch k of a run is the same whether or not the run was resumed.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

PAD = 4


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


class Normalize:
    """uint8 to float, minus the training set's per-channel mean, over its std."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device):
        self.mean = mean.view(1, 3, 1, 1).to(device)
        self.std = std.view(1, 3, 1, 1).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class TrainBatches:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        normalize: Normalize,
        device: torch.device,
        augment: bool = True,
    ):
        self.n, _, self.h, self.w = images.shape
        self.pad = PAD if augment else 0
        # Zero padding of the raw image, as torchvision's RandomCrop(32, padding=4) does.
        self.images = F.pad(images, (self.pad,) * 4).to(device)
        self.labels = labels.to(device)
        self.batch_size, self.seed = batch_size, seed
        self.normalize, self.device, self.augment = normalize, device, augment
        self.steps_per_epoch = -(-self.n // batch_size)  # 391 for 50k images at 128, as [R1]

    def plan(self, epoch: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        plan = {"order": torch.randperm(self.n, generator=g)}
        if self.augment:
            plan["dy"] = torch.randint(0, 2 * PAD + 1, (self.n,), generator=g)
            plan["dx"] = torch.randint(0, 2 * PAD + 1, (self.n,), generator=g)
            plan["flip"] = torch.rand(self.n, generator=g) < 0.5
        return {k: v.to(self.device, non_blocking=True) for k, v in plan.items()}

    def iterate(self, start_iteration: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from iteration start_iteration on, forever; one epoch is steps_per_epoch."""
        epoch, step = divmod(start_iteration, self.steps_per_epoch)
        rows = torch.arange(self.h, device=self.device)
        cols = torch.arange(self.w, device=self.device)
        flipped, channels = cols.flip(0), torch.arange(3, device=self.device)[None, :, None, None]
        while True:
            plan = self.plan(epoch)
            for s in range(step * self.batch_size, self.n, self.batch_size):
                idx = plan["order"][s : s + self.batch_size]
                if self.augment:
                    end = s + self.batch_size
                    dy, dx, flip = plan["dy"][s:end], plan["dx"][s:end], plan["flip"][s:end, None]
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
            epoch, step = epoch + 1, 0


class EvalBatches:
    """A test or validation split on the device, in order, as plain images ([R1] tests on the
    original 32x32 image). Iterate over it once per evaluation."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        normalize: Normalize,
        device: torch.device,
    ):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.normalize = batch_size, normalize

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in zip(
            self.images.split(self.batch_size), self.labels.split(self.batch_size), strict=True
        ):
            yield self.normalize(x), y
