"""The classic CIFAR training pipeline, as the popular CIFAR ResNet repositories write it: the
decoded images in memory, per-image PIL transforms (RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize) in DataLoader workers, an fp32 NCHW model.

It is the baseline of `scripts/bench.py`; run alone it prints training images per second:

    python scripts/classic_cifar.py --root /path/to/cifar10 --depth 20 --workers 2
"""

import argparse
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnet_repro.data import load_dataset
from resnet_repro.nets.models import build_model

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PILCifar(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images.permute(0, 2, 3, 1).numpy()  # N x H x W x C, as CIFAR10 keeps it
        self.labels = labels.tolist()
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def images_per_sec(
    data, depth: int, workers: int, steps: int, warmup: int = 3, device: str = "cpu"
) -> float:
    """Training images per second over `steps` iterations after `warmup` untimed ones."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = build_model(depth).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(
        PILCifar(data.train_images, data.train_labels),
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    batches = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * 128 / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", required=True, help="CIFAR-10: python version or image folder")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    data = load_dataset("cifar10", root=args.root, download=False)
    speed = images_per_sec(data, args.depth, args.workers, args.steps)
    print(f"ResNet-{args.depth}, {args.workers} workers: {speed:.0f} img/s")


if __name__ == "__main__":
    main()
