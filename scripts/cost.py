"""What each experiment costs, as a Markdown table: its runs, the multiply-adds it trains, and
the hours that takes on a GPU and on this CPU.

The estimate counts, for every run of the sweep, iterations x batch x the net's forward
multiply-adds per image (resnet_repro.models.count_flops, [R1]'s way of counting); a training
step costs about three forward passes on any device, so time is that count over a device's
rate of "forward multiply-adds trained per second" = images/s x multiply-adds per image,
taken from a measured throughput:
- GPUs: NVIDIA's published ResNet-50 v1.5 training throughput (DeepLearningExamples, PyTorch):
  one V100 16GB, fp32, 367 img/s; one A100, mixed precision, 2470 img/s. Small CIFAR nets
  use a GPU less well than ResNet-50, so their hours are lower bounds.
- this CPU: --cpu-img-s and --cpu-model, what resnet-train measured here (summary.json's
  images_per_sec_median); by default ResNet-20's 432 img/s in experiment=degradation_cpu
  on 2 cores of an AMD EPYC.
Evaluation (10k test images every 2000 iterations, forward only) adds about 1% and is left out.

    python scripts/cost.py [--cpu-img-s 460 --cpu-model resnet20]
"""

import argparse
import json
import math

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from resnet_repro.cli import arguments
from resnet_repro.commandline import CONF_DIR
from resnet_repro.data import class_count
from resnet_repro.nets.models import build_model, count_flops
from resnet_repro.usage import sweep_grid

RESNET50_MACS = 4.09e9  # count_flops of our resnet50 (torchvision's v1.5 stride placement)
GPUS = {"V100 fp32": 367 * RESNET50_MACS, "A100 mixed": 2470 * RESNET50_MACS}
IMAGENET_TRAIN = 1_281_167


def sweep(name: str) -> list[tuple[object, int]]:
    """Each configuration of the experiment and how many seeds it runs."""
    root = [f"experiment={name}", "data.root=/d"]
    params = compose("config", overrides=root, return_hydra_config=True).hydra.sweeper.params
    points, seeds = sweep_grid(params)
    return [(compose("config", overrides=root + p), len(seeds)) for p in points]


def forward_macs(cfg, cache: dict) -> int:
    model_args = OmegaConf.to_container(cfg.model, resolve=True)
    key = json.dumps(model_args, sort_keys=True)
    if key not in cache:
        imagenet = cfg.data.name == "imagenet"
        classes = 1000 if imagenet else class_count(**cfg.data)
        size = cfg.data.crop_size if imagenet else 32
        cache[key] = count_flops(build_model(**model_args, num_classes=classes), size)
    return cache[key]


def iterations(cfg) -> int:
    if "epochs" in cfg.schedule:
        return cfg.schedule.epochs * math.ceil(IMAGENET_TRAIN / cfg.data.batch_size)
    return cfg.schedule.iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-img-s", type=float, default=432.0)
    parser.add_argument("--cpu-model", default="resnet20")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache: dict = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cpu_cfg = compose("config", overrides=[f"model={args.cpu_model}"])
        rates = GPUS | {"this CPU": args.cpu_img_s * forward_macs(cpu_cfg, cache)}
        names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        print(
            "| experiment | runs | forward multiply-adds trained (1e15) | "
            + " | ".join(f"hours, {d}" for d in rates)
            + " |"
        )
        print("|---|---|---|" + "---|" * len(rates))
        for name in names:
            if name == "imagenet":
                continue
            runs, work = 0, 0.0
            for cfg, seeds in sweep(name):
                arguments(cfg)  # the same checks as a run
                runs += seeds
                work += seeds * iterations(cfg) * cfg.data.batch_size * forward_macs(cfg, cache)
            hours = " | ".join(f"{work / rate / 3600:,.1f}" for rate in rates.values())
            print(f"| {name} | {runs} | {work / 1e15:,.0f} | {hours} |")


if __name__ == "__main__":
    main()
