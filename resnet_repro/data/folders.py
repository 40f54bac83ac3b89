"""ImageNet, or any image folder (train/<class>/*, val/<class>/*), read by DataLoader workers.

Too large to keep on the device, these are read in worker processes and sent as uint8, in
pinned memory on CUDA; the device converts and normalises. Three pipelines (data.loader):
`transforms`, torchvision's transforms on each decoded image, as torchvision's references and
timm read ImageNet; `boxes` (crops.py), the same crops drawn first and decoded no larger than
they need, a batch made whole in the worker; `device` (device_decode.py), the files' bytes
decoded and cropped on the GPU. The order of an epoch and each rank's share of it come from the
plan of sampling.py, so a resumed run sees the same batches; with `boxes` and `device` the
same crops too (with `transforms` they come from the workers' own generators).
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..errors import UserError
from ..training.distributed import ALONE
from . import turbo
from .crops import BoxCrops, keep_batch, keys
from .device_decode import Encoded, EncodedCrops, decode_on, jpeg_decoder
from .images import MEAN, STD, Normalize, class_names, read_image
from .sampling import EpochPlan, common_batches, shard

LOADERS = ("auto", "transforms", "boxes", "device")


@dataclass
class FolderData:
    train: Dataset
    val: Dataset
    num_classes: int
    image_size: int
    workers: int
    crops: int = 1  # crops evaluated per image: 10 for [R1]'s 10-crop testing
    loader: str = "auto"  # data.loader
    box_options: dict | None = None  # crops.BoxCrops' options, for the boxes and device loaders

    def chosen_loader(self, device: torch.device) -> str:
        """auto: decode on the GPU where training runs on one, else the boxes of crops.py."""
        if self.loader != "auto":
            return self.loader
        return "device" if device.type == "cuda" else "boxes"

    def decoder(self, device: torch.device) -> str:
        """What decodes the JPEGs, for the log: with boxes, TurboJPEG where it is installed."""
        loader = self.chosen_loader(device)
        if loader == "device":
            return (
                "nvJPEG on the GPU"
                if device.type == "cuda"
                else "the CPU (the device loader's twin)"
            )
        if loader == "boxes" and turbo.find():
            return "libjpeg-turbo 3, the crops' regions only"
        if loader == "boxes":
            return "Pillow (pip install 'resnet-repro[jpeg]' decodes only the crops' regions)"
        return "Pillow"

    def datasets(self, device: torch.device) -> tuple[Dataset, Dataset]:
        """The train and val splits as the chosen loader reads them."""
        kind = {"transforms": None, "boxes": BoxCrops, "device": EncodedCrops}
        made = kind[self.chosen_loader(device)]
        if made is None:
            return self.train, self.val
        opts = self.box_options
        return made(self.train, train=True, **opts), made(self.val, train=False, **opts)

    def fingerprint(self) -> str:
        """What tells one image folder from another, cheaply: its classes, its file counts and
        every 1000th file name below its root (not the root: a moved copy is the same data)."""
        h = hashlib.blake2b(digest_size=8)
        for split in (self.train, self.val):
            h.update(f"{split.classes}|{len(split.samples)}".encode())
            for path, label in split.samples[::1000]:
                h.update(os.fsencode(os.path.relpath(path, split.root)) + bytes([label % 256]))
        return h.hexdigest()

    def sources(
        self, batch_size, seed, eval_batch_size, device, world=ALONE, memory_format=None
    ) -> tuple["FolderBatches", dict]:
        """Batches decoded by DataLoader workers, normalised on the device by torchvision's
        ImageNet statistics; evaluation on val/."""
        plan = EpochPlan(len(self.train), batch_size, seed, world)
        normalize = Normalize(MEAN, STD, device, memory_format or torch.contiguous_format)
        return FolderBatches(self, plan, normalize, device), {
            "val": FolderEval(self, eval_batch_size, normalize, device, world)
        }


def class_folders(root: Path) -> list[str]:
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise UserError(
            f"No image folder at data.root={root}: expected {root}/train/<class>/* and "
            f"{root}/val/<class>/* ({' and '.join(missing)} missing). Point data.root at the "
            "folder that holds train/ and val/."
        )
    return class_names(root / "train")


def load_folder(
    root: str,
    crop_size: int = 224,
    resize_size: int = 256,
    scale_aug: bool = False,
    scale_range: tuple[int, int] = (256, 480),
    ten_crop: bool = False,
    workers: int = 8,
    augment: bool = True,
    loader: str = "auto",
) -> FolderData:
    # torchvision takes two seconds to import: only runs on image folders pay for it.
    from torchvision import datasets
    from torchvision.transforms import v2

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
        train = datasets.ImageFolder(root / "train", transform=train_tf, loader=read_image)
        val = datasets.ImageFolder(root / "val", transform=val_tf, loader=read_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"Cannot read the image folder at data.root={root}: {e}") from None
    if val.classes != classes:
        raise UserError(f"{root}/val has other class folders than {root}/train; they must match.")
    if loader not in LOADERS:
        raise UserError(f"data.loader={loader!r} is unknown; use one of {', '.join(LOADERS)}.")
    box_options = dict(
        crop_size=crop_size,
        augment=augment,
        scale_aug=scale_aug,
        scale_range=scale_range,
        resize_size=resize_size,
        ten_crop=ten_crop,
    )
    return FolderData(
        train, val, len(classes), crop_size, workers, 10 if ten_crop else 1, loader, box_options
    )


def from_worker(e: UserError) -> UserError:
    """A DataLoader worker's UserError arrives with the worker's traceback in its text; keep our
    message, the last line."""
    last = str(e).strip().splitlines()[-1]
    return UserError(last.split("UserError: ", 1)[-1])


def stack_crops(crops) -> torch.Tensor:
    return torch.stack(list(crops))


class PlanBatches(Sampler):
    """This rank's batches of one epoch of the plan, from the step the loop sets (a resumed
    run skips what it did without reading it). keyed: each index with the seed of its crop."""

    def __init__(self, plan: EpochPlan, keyed: bool = False):
        self.plan, self.epoch, self.step, self.keyed = plan, 0, 0, keyed

    def __iter__(self):
        order = self.plan.order(self.plan.generator(self.epoch))
        steps = self.plan.steps(self.epoch * self.plan.steps_per_epoch + self.step)
        for _ in range(len(self)):
            _, lo, hi = next(steps)
            batch = order[lo:hi].tolist()
            yield keys(batch, self.plan.seed, self.epoch, lo) if self.keyed else batch

    def __len__(self) -> int:
        return self.plan.steps_per_epoch - self.step


def loader(dataset: Dataset, workers: int, device: torch.device, **batching) -> DataLoader:
    made = isinstance(getattr(dataset, "dataset", dataset), BoxCrops)  # (a Subset of) one
    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=device.type == "cuda",  # with non_blocking copies below
        persistent_workers=workers > 0,
        **({"collate_fn": keep_batch} if made else {}),
        **batching,
    )


class FolderBatches:
    """This rank's training batches of an image folder, with TrainBatches' interface."""

    def __init__(self, data: FolderData, plan: EpochPlan, normalize: Normalize, device):
        train, _ = data.datasets(device)
        self.sampler = PlanBatches(plan, keyed=isinstance(train, BoxCrops))
        self.loader = loader(train, data.workers, device, batch_sampler=self.sampler)
        self.to_device = ToDevice(train, data.image_size, normalize, device)
        self.plan, self.steps_per_epoch = plan, plan.steps_per_epoch  # data.Batches

    def iterate(self, start_iteration: int = 0):
        epoch, step = divmod(start_iteration, self.steps_per_epoch)
        while True:
            self.sampler.epoch, self.sampler.step = epoch, step
            try:
                for batch in self.loader:
                    yield self.to_device(batch)
            except UserError as e:
                raise from_worker(e) from None
            epoch, step = epoch + 1, 0


class FolderEval:
    """This rank's shard of the val split, in order; with ten_crop, x is batch x 10 x C x H x W."""

    def __init__(self, data: FolderData, batch_size: int, normalize: Normalize, device, world):
        _, val = data.datasets(device)
        part = Subset(val, shard(len(val), world))
        self.size = len(part)  # images in this rank's shard
        # batch_size counts what goes through the net at once: crops, not images (10,000 crops
        # of ResNet-50 at once would take tens of GB)
        images = max(1, batch_size // data.crops)
        self.common_batches = common_batches(len(data.val), images, world)  # loop.evaluate
        self.loader = loader(part, data.workers, device, batch_size=images)
        self.to_device = ToDevice(val, data.image_size, normalize, device)

    def __iter__(self):
        try:
            for batch in self.loader:
                yield self.to_device(batch)
        except UserError as e:
            raise from_worker(e) from None


class ToDevice:
    """A batch from the workers as the net takes it: on the device (decoded there first, for
    data.loader=device), normalised; ten crops normalised as one batch of images."""

    def __init__(self, dataset: Dataset, size: int, normalize: Normalize, device):
        self.encoded = isinstance(dataset, EncodedCrops)
        self.decode = jpeg_decoder() if self.encoded else None
        self.samples, self.size, self.normalize, self.device = (
            dataset.samples,
            size,
            normalize,
            device,
        )

    def __call__(self, batch):
        if isinstance(batch, Encoded):
            x = decode_on(batch, self.device, self.size, self.samples, self.decode)
            y = batch.labels.to(self.device, non_blocking=True)
        else:
            x, y = batch
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if x.dim() == 5:
            return self.normalize(x.flatten(0, 1)).unflatten(0, x.shape[:2]), y
        return self.normalize(x), y
