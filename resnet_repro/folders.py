"""ImageNet, or any image folder (train/<class>/*, val/<class>/*), read by DataLoader workers.

Too large to keep on the device, these are decoded and augmented in worker processes and sent
as uint8, in pinned memory on CUDA; the device converts and normalises. The order of an epoch
comes from (seed, epoch), so a resumed run sees the same batches; the random crops come from
the workers' own generators and are not repeated exactly.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets
from torchvision.transforms import v2

from .batches import Normalize
from .errors import UserError

# torchvision's ImageNet statistics, on the 0-255 scale; used for every image folder.
MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255


@dataclass
class FolderData:
    train: Dataset
    val: Dataset
    num_classes: int
    image_size: int
    workers: int


def class_folders(root: Path) -> list[str]:
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise UserError(
            f"No image folder at data.root={root}: expected {root}/train/<class>/* and "
            f"{root}/val/<class>/* ({' and '.join(missing)} missing). Point data.root at the "
            "folder that holds train/ and val/."
        )
    return sorted(d.name for d in (root / "train").iterdir() if d.is_dir())


def load_folder(
    root: str,
    crop_size: int = 224,
    resize_size: int = 256,
    scale_aug: bool = False,
    scale_range: tuple[int, int] = (256, 480),
    ten_crop: bool = False,
    workers: int = 8,
    augment: bool = True,
) -> FolderData:
    root = Path(root).expanduser()
    classes = class_folders(root)
    if augment and scale_aug:
        # [R1] 3.4: the shorter side resized to a random length in [256, 480], a random crop.
        crop = [
            v2.RandomShortestSize(list(range(scale_range[0], scale_range[1] + 1))),
            v2.RandomCrop(crop_size),
        ]
    elif augment:
        crop = [v2.RandomResizedCrop(crop_size)]  # the standard re-implementation's choice
    else:
        crop = [v2.Resize(resize_size), v2.CenterCrop(crop_size)]
    train_tf = v2.Compose([v2.ToImage(), *crop, *([v2.RandomHorizontalFlip()] * augment)])
    # Evaluation: resize, then the centre crop, or [R1]'s 10 crops (corners, centre, flipped).
    last = [v2.TenCrop(crop_size), stack_crops] if ten_crop else [v2.CenterCrop(crop_size)]
    val_tf = v2.Compose([v2.ToImage(), v2.Resize(resize_size), *last])
    try:
        train = datasets.ImageFolder(root / "train", transform=train_tf)
        val = datasets.ImageFolder(root / "val", transform=val_tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"Cannot read the image folder at data.root={root}: {e}") from None
    if val.classes != classes:
        raise UserError(f"{root}/val has other class folders than {root}/train; they must match.")
    return FolderData(train, val, len(classes), crop_size, workers)


def stack_crops(crops) -> torch.Tensor:
    return torch.stack(list(crops))


class EpochSampler(Sampler):
    """One epoch's order from (seed, epoch), beginning at `start` (a resumed run skips what it
    did without reading it). The loop sets epoch and start before each pass."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start


def loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    sampler: Sampler | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


class FolderBatches:
    """The training batches of an image folder, with TrainBatches' interface."""

    def __init__(self, data: FolderData, batch_size: int, seed: int, device: torch.device):
        self.sampler = EpochSampler(len(data.train), seed)
        self.loader = loader(data.train, batch_size, data.workers, device, self.sampler)
        self.batch_size, self.device = batch_size, device
        self.normalize = Normalize(MEAN, STD, device)
        self.steps_per_epoch = -(-len(data.train) // batch_size)

    def iterate(self, start_iteration: int = 0):
        epoch, step = divmod(start_iteration, self.steps_per_epoch)
        while True:
            self.sampler.epoch, self.sampler.start = epoch, step * self.batch_size
            for x, y in self.loader:
                yield to_device(x, y, self.normalize, self.device)
            epoch, step = epoch + 1, 0


class FolderEval:
    """The val split in order; with ten_crop, x is batch x 10 x C x H x W."""

    def __init__(self, data: FolderData, batch_size: int, device: torch.device):
        self.loader = loader(data.val, batch_size, data.workers, device)
        self.normalize, self.device = Normalize(MEAN, STD, device), device

    def __iter__(self):
        for x, y in self.loader:
            yield to_device(x, y, self.normalize, self.device)


def to_device(x, y, normalize: Normalize, device: torch.device):
    return normalize(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
