"""The classic CIFAR training pipeline, as the popular CIFAR ResNet repositories write it: the
decoded images in memory, per-image PIL transforms (RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize by the published CIFAR-10 statistics) in DataLoader
workers, torch's own shuffling, an fp32 NCHW model, torch's MultiStepLR.

It is the baseline of `scripts/bench.py`; run alone it prints training images per second:

    python scripts/classic_cifar.py --root /path/to/cifar10 --depth 20 --workers 2

With --train it trains [R1]'s recipe on a schedule of its own and writes the test error to a
JSON file: an implementation of the recipe independent of resnet-train's data pipeline and
loop, to tell what of a result is the data's doing and what resnet-train's
(docs/r1_table6.md). Only the network (build_model, with the same initial weights for a
seed) and the decoded images are resnet-train's:

    python scripts/classic_cifar.py --root /path/to/cifar10 --train --iterations 3200 \\
        --milestones 1600 2400 --seed 0 --out classic-seed0.json
"""

import argparse
import json
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
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = True):
        self.images = images.permute(0, 2, 3, 1).numpy()  # N x H x W x C, as CIFAR10 keeps it
        self.labels = labels.tolist()
        crop_flip = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        self.transform = transforms.Compose(
            [
                *(crop_flip if augment else []),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def train_loader(data, workers: int, device: torch.device, seed: int = 0) -> DataLoader:
    return DataLoader(
        PILCifar(data.train_images, data.train_labels),
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def images_per_sec(
    data, depth: int, workers: int, steps: int, warmup: int = 3, device: str = "cpu"
) -> float:
    """Training images per second over `steps` iterations after `warmup` untimed ones."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = build_model(depth).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = iter(train_loader(data, workers, device))
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


@torch.no_grad()
def test_error(model, data) -> float:
    model.eval()
    loader = DataLoader(PILCifar(data.test_images, data.test_labels, augment=False), 1000)
    wrong = sum(int((model(x).argmax(1) != y).sum()) for x, y in loader)
    model.train()
    return 100.0 * wrong / len(data.test_labels)


def train(data, args) -> dict:
    """[R1] 4.2's recipe for `iterations`: SGD, lr 0.1 divided by 10 at the milestones, weight
    decay 1e-4, momentum 0.9, batch 128; the test error every eval_every iterations."""
    torch.manual_seed(args.seed)  # the initial weights resnet-train draws for this seed
    model = build_model(args.depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    lr = torch.optim.lr_scheduler.MultiStepLR(opt, args.milestones, gamma=0.1)
    curve, it, wrong, seen, t0 = [], 0, 0, 0, time.time()
    while it < args.iterations:
        for x, y in train_loader(data, args.workers, torch.device("cpu"), args.seed + it):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr.step()  # per iteration: the milestones are iterations, as [R1] gives them
            it, wrong, seen = it + 1, wrong + int((logits.argmax(1) != y).sum()), seen + len(y)
            if it % args.eval_every == 0 or it == args.iterations:
                record = {"iteration": it, "train_error": 100.0 * wrong / seen}
                curve.append(record | {"test_error": test_error(model, data)})
                print(json.dumps(curve[-1]), flush=True)
                wrong = seen = 0
            if it == args.iterations:
                break
    return {
        "pipeline": "classic (per-image PIL transforms, scripts/classic_cifar.py)",
        "depth": args.depth,
        "seed": args.seed,
        "iterations": args.iterations,
        "milestones": args.milestones,
        "test_error": curve[-1]["test_error"],
        "wall_time_s": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
        "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", required=True, help="CIFAR-10: python version or image folder")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--train", action="store_true", help="train the recipe; see --out")
    p.add_argument("--iterations", type=int, default=64000)
    p.add_argument("--milestones", type=int, nargs="+", default=[32000, 48000])
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="PyTorch's threads (default: its own)")
    p.add_argument("--out", help="the JSON file of a --train run")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("cifar10", root=args.root, download=False)
    if not args.train:
        speed = images_per_sec(data, args.depth, args.workers, args.steps)
        print(f"ResNet-{args.depth}, {args.workers} workers: {speed:.0f} img/s")
        return
    result = train(data, args)
    print(f"ResNet-{args.depth}, seed {args.seed}: test error {result['test_error']:.2f}%")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
