"""Training speed, images per second: (a) the bare step against (b) resnet-train end to end.

(a) forward, backward and optimizer step on one pre-made batch already on the device;
(b) `resnet-train` itself, as a subprocess: data pipeline, augmentation, metrics and logging,
    counted over training iterations only (its metrics.jsonl excludes evaluation time).
Both are measured in this one run, alternately, and the best of `--repeats` is kept, so the
ratio b/a means something on a shared, noisy machine.

    python scripts/bench.py --models resnet20 resnet56 resnet110 --steps 30
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_repro.models import build_model

DEPTHS = {"resnet20": 20, "resnet56": 56, "resnet110": 110}


def bare_step(depth: int, batch_size: int, warmup: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = build_model(depth).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def end_to_end(model: str, batch_size: int, warmup: int, steps: int, device: str) -> float:
    """resnet-train on synthetic data; windows of `warmup` iterations, the first one dropped."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    windows = -(-steps // warmup)
    cmd = [
        shutil.which("resnet-train") or "resnet-train",
        f"model={model}",
        "data=synthetic",
        "data.test_size=500",
        f"data.batch_size={batch_size}",
        f"trainer.device={device}",
        f"schedule.iterations={warmup * (windows + 1)}",
        f"trainer.log_every={warmup}",
        "trainer.eval_every=1000000",
        "trainer.ckpt_every=1000000",
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(run_dir)
    speeds = [r["images_per_sec"] for r in records[1:]]
    return len(speeds) / sum(1 / s for s in speeds)  # equal windows: harmonic mean


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEPTHS), choices=list(DEPTHS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations before timing")
    p.add_argument("--steps", type=int, default=20, help="timed iterations")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    print(
        f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.steps} timed iterations, best of {args.repeats}"
    )
    print("| model | (a) bare step img/s | (b) resnet-train img/s | b/a |\n|---|---|---|---|")
    for name in args.models:
        a = b = 0.0
        for _ in range(args.repeats):
            a = max(
                a, bare_step(DEPTHS[name], args.batch_size, args.warmup, args.steps, args.device)
            )
            b = max(b, end_to_end(name, args.batch_size, args.warmup, args.steps, args.device))
        print(f"| {name} | {a:.0f} | {b:.0f} | {b / a:.1%} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
