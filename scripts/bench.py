"""Training speed and memory, as Markdown tables: `make bench`, or one part at a time:

    python scripts/bench.py --parts pipeline settings memory depth compile ddp agree gpu sweep \
        folders imagenet

- pipeline: the classic pipeline (scripts/classic_cifar.py: per-image PIL transforms in a
  DataLoader, fp32) at its best worker count, against resnet-train end to end with its
  defaults (on a CPU: fp32, channels_last, not compiled) and with bf16, and its own bare step;
  on a real CIFAR-10 copy ($RESNET_REPRO_CIFAR10_JPEG, else ../shared/data/cifar10-jpeg.tar.gz).
- settings: each setting's contribution to the bare step (fp32, channels_last, compile, bf16).
- memory: the peak memory of a training step above the process's baseline, with and without
  activation checkpointing, and the time per step.
- depth: time per iteration against depth, 20 to 1202.
- compile: torch.compile's compile time against depth, with an empty compile cache.
- ddp: 2 gloo ranks of 1 thread against 1 process of 2 threads, the same global batch.
- agree: what the per-iteration stop-flag agreement of a DDP run costs on 2 gloo ranks.
- sweep: a sweep's runs side by side (hydra/launcher=local) against one after the other: on
  the CPU 2 runs, with the threads divided between them; on a GPU, 1, 2, 4 and 8 runs on it.
- folders: the image-folder pipelines (data.loader=transforms, boxes with Pillow and with
  TurboJPEG, device's workers) without a model, images/s per DataLoader worker for 1 and 2
  workers, best of 3, for [R1]'s scale augmentation, the random-resized crop and evaluation's
  centre crop (scripts/folder_speed.py), on photographs cut to ImageNet's sizes
  (scripts/photo_folder.py; made once in outputs/photo-folder, or --folder).
- gpu: on a CUDA GPU (skipped without one), the bare step in fp32 NCHW, fp32 NHWC, bf16 and
  bf16 compiled, resnet-train end to end with a GPU run's settings, and the classic pipeline.
- imagenet: on a CUDA GPU (skipped without one; --rehearse runs it on a CPU at toy sizes),
  ResNet-18 and ResNet-50 end to end on the test folder with each data.loader against their
  bare step on data already on the GPU (scripts/gpu_folders.sh runs it on a lent machine).

Every ratio is of numbers measured in this one run (the machines are shared and noisy); each
table names the CPU. The bare step: forward, backward and SGD step on one batch already on the
device. End to end: resnet-train as a subprocess, training time only (its metrics.jsonl leaves
evaluation out), the first window dropped.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from classic_cifar import images_per_sec as classic_speed
from folder_speed import HEADER as FOLDER_HEADER
from folder_speed import measure as folder_rows

from resnet_repro.data import load_dataset
from resnet_repro.entry import command
from resnet_repro.nets.models import build_model
from resnet_repro.training.records import read_metrics
from resnet_repro.training.runtime import compile_model, cpu_name, sgd

ROOT = Path(__file__).resolve().parents[1]
CIFAR_JPEG = Path(
    os.environ.get("RESNET_REPRO_CIFAR10_JPEG")
    or ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
)
TRAIN = command("resnet-train")  # the console script, or its entry point (scripts/gpu_check.sh)
THREADS = os.cpu_count()


def bare_step(
    depth,
    steps,
    channels_last=True,
    compile=False,
    precision="fp32",
    device="cpu",
    batch=128,
    size=32,
    num_classes=10,
    **model,
):
    """Images/s of the bare step (batch images of size x size), and the seconds the first step
    took more."""
    torch.manual_seed(0)
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_model(depth, num_classes=num_classes, **model).to(device, memory_format=fmt)
    opt = sgd(net.parameters(), device, lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch,), device=device)
    fn = compile_model(net, depth) if compile else net
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
            loss = F.cross_entropy(fn(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def clock():  # a GPU runs ahead of Python: wait for it before reading the time
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    t0 = clock()
    step()
    first = clock() - t0
    step()
    t0 = clock()
    for _ in range(steps):
        step()
    per_step = (clock() - t0) / steps
    return batch / per_step, first - per_step


def bare_speed(*args, **kwargs) -> float:
    return bare_step(*args, **kwargs)[0]


def end_to_end(overrides: list[str], window: int, windows: int, launcher=()) -> float:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    cmd = [
        *launcher,
        *TRAIN,
        *overrides,
        f"schedule.iterations={window * (windows + 1)}",
        f"trainer.log_every={window}",
        "trainer.eval_every=1000000",
        "trainer.ckpt_every=1000000",
        f"hydra.run.dir={run_dir}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    records = read_metrics(run_dir)
    shutil.rmtree(run_dir)
    speeds = [m["images_per_sec"] for m in records[1:]]
    return len(speeds) / sum(1 / s for s in speeds)  # equal windows: harmonic mean


def sweep_speed(runs: int, window: int, windows: int, overrides: list[str], launcher=(), gpus=""):
    """A sweep of `runs` ResNet-20 runs (seeds 0, 1, ...): (images/s of the whole sweep, wall
    clock from start to end, start-up included; the sum over its runs of each one's training
    speed). The second is the machine's throughput while the runs train side by side; for runs
    one after the other, the mean of their speeds."""
    sweep_dir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    iterations = window * (windows + 1)
    cmd = [
        *TRAIN,
        "-m",
        *launcher,
        "model=resnet20",
        "data=synthetic",
        *overrides,
        f"trainer.seed={','.join(str(i) for i in range(runs))}",
        f"schedule.iterations={iterations}",
        f"trainer.log_every={window}",
        "trainer.eval_every=1000000",
        "trainer.ckpt_every=1000000",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}  # "": the CPU, with no GPU's slots
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    speeds = []
    for run_dir in sorted(p.parent for p in sweep_dir.glob("*/metrics.jsonl")):
        each = [m["images_per_sec"] for m in read_metrics(run_dir) if "images_per_sec" in m]
        speeds.append(len(each[1:]) / sum(1 / s for s in each[1:]))
    shutil.rmtree(sweep_dir)
    together = sum(speeds) if launcher else sum(speeds) / len(speeds)
    return runs * iterations * 128 / wall, together


def sweep(args) -> None:
    """hydra/launcher=local: on the CPU, 2 runs side by side with half the threads each against
    the same 2 runs one after the other with all the threads; on a GPU, 1, 2, 4 and 8 runs on
    it at once."""
    window = max(5, args.steps)
    local = ["hydra/launcher=local"]
    rows = []
    for _ in range(args.repeats):  # alternately, so that noise hits both alike
        one = sweep_speed(2, window, 3, [f"trainer.threads={THREADS}", "trainer.device=cpu"])
        two = sweep_speed(2, window, 3, ["trainer.device=cpu"], [*local, "hydra.launcher.n_jobs=2"])
        rows.append([f"{one[1]:.0f}", f"{two[1]:.0f}", f"{two[1] / one[1]:.2f}x"])
        rows[-1] += [f"{one[0]:.0f}", f"{two[0]:.0f}", f"{two[0] / one[0]:.2f}x"]
    header = ["training: one after the other", "side by side", "ratio"]
    header += ["whole sweep: one after the other", "side by side", "ratio"]
    table(
        f"Two ResNet-20 runs (synthetic data): one after the other with {THREADS} threads, or "
        f"side by side with {max(1, THREADS // 2)} each (hydra/launcher=local n_jobs=2), total "
        "img/s; one row a repeat",
        header,
        rows,
    )
    if not torch.cuda.is_available():
        return
    rows, first = [], os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    for k in (1, 2, 4, 8):
        launcher = [*local, f"hydra.launcher.runs_per_gpu={k}", "hydra.launcher.n_jobs=" + str(k)]
        # on one GPU (the first), whatever the machine has
        whole, training = sweep_speed(k, window * 5, 3, ["trainer.device=cuda"], launcher, first)
        rows.append([k, f"{training:.0f}", f"{whole:.0f}"])
    machine = f"GPU: {torch.cuda.get_device_name(0)}; CPU: {cpu_name()}, {THREADS} threads"
    table(
        "ResNet-20 runs at once on one GPU, total img/s",
        ["runs", "training", "whole sweep"],
        rows,
        machine,
    )


def table(title: str, header: list[str], rows: list[list], machine: str = "", batch=128) -> None:
    machine = machine or f"CPU: {cpu_name()}, {THREADS} threads"
    print(f"\n### {title}\n\n{machine}, batch {batch}\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


def best(repeats: int, measure, *args, **kwargs) -> float:
    """The best of several measurements: noise on a shared machine only ever slows things."""
    return max(measure(*args, **kwargs) for _ in range(repeats))


def pipeline(args) -> None:
    if not CIFAR_JPEG.exists():
        sys.exit(f"bench.py: the pipeline part needs real CIFAR-10: {CIFAR_JPEG} is missing.")
    root = CIFAR_JPEG if CIFAR_JPEG.is_dir() else Path(tempfile.mkdtemp(prefix="cifar10-"))
    if not CIFAR_JPEG.is_dir():
        with tarfile.open(CIFAR_JPEG) as tar:
            tar.extractall(root, filter="data")
    data = load_dataset("cifar10", root=str(root), download=False)  # decodes once, caches
    rows = []
    for depth in args.depths:
        steps = max(5, args.steps * 20 // depth)
        classic = {w: best(args.repeats, classic_speed, data, depth, w, steps) for w in (0, 1, 2)}
        top = max(classic.values())
        bare = best(args.repeats, bare_speed, depth, steps)
        real = [f"model=resnet{depth}", f"data.root={root}"]
        e2e = best(args.repeats, end_to_end, real, steps, 2)
        bf16 = best(args.repeats, end_to_end, [*real, "trainer.precision=bf16"], steps, 2)
        rows.append(
            [f"resnet{depth}"]
            + [f"{classic[w]:.0f}" for w in (0, 1, 2)]
            + [f"{e2e:.0f}", f"{e2e / top:.2f}x", f"{bare:.0f}", f"{e2e / bare:.0%}"]
            + [f"{bf16:.0f}", f"{bf16 / top:.2f}x"]
        )
    shutil.rmtree(root)
    header = ["model", "classic, 0 workers", "1 worker", "2 workers", "resnet-train defaults"]
    header += ["vs classic's best", "its bare step", "end to end / bare"]
    header += ["resnet-train bf16", "vs classic's best"]
    table("resnet-train against the classic pipeline, real CIFAR-10 (img/s)", header, rows)


def settings(args) -> None:
    combos = [
        ("fp32", dict(channels_last=False)),
        ("fp32 + channels_last", dict()),
        ("fp32 + channels_last + compile", dict(compile=True)),
        ("bf16", dict(channels_last=False, precision="bf16")),
        ("bf16 + channels_last", dict(precision="bf16")),
        ("bf16 + channels_last + compile", dict(precision="bf16", compile=True)),
    ]
    rows, base = [], None
    for name, kw in combos:
        speed, extra = bare_step(20, args.steps, **kw)
        if args.repeats > 1:
            speed = max(speed, bare_step(20, args.steps, **kw)[0])
        overrides = [
            "data=synthetic",
            f"trainer.channels_last={kw.get('channels_last', True)}",
            f"trainer.compile={kw.get('compile', False)}",
            f"trainer.precision={kw.get('precision', 'fp32')}",
        ]
        e2e = best(args.repeats, end_to_end, overrides, args.steps, 2)
        base = base or e2e
        compile_s = f"{extra:.0f}" if kw.get("compile") else ""
        rows.append([name, f"{speed:.0f}", f"{e2e:.0f}", f"{e2e / base:.2f}x", compile_s])
    header = ["ResNet-20", "bare step img/s", "resnet-train img/s", "vs fp32", "compile s"]
    table("Each setting's contribution", header, rows)


def probe_memory(depth: int, checkpointing: bool) -> None:
    """Run in a subprocess (see memory): peak resident memory of training steps above the
    baseline after the model and the batch exist."""
    torch.manual_seed(0)
    net = build_model(depth, checkpointing=checkpointing).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    opt.zero_grad()
    F.cross_entropy(net(x[:2]), y[:2]).backward()  # gradients and kernels allocated once
    opt.step()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current
    base = status_kib("VmRSS")
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    print((status_kib("VmHWM") - base) / 2**20)


def status_kib(field: str) -> int:
    line = next(
        ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field)
    )
    return int(line.split()[1])


def memory(args) -> None:
    rows = []
    for depth in (110, 1202):
        out = {}
        for ckpt in (False, True):
            # Large blocks straight from mmap, so that the resident peak is the live peak,
            # not what the allocator kept from freed blocks.
            env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
            cmd = [sys.executable, __file__, "--probe-memory", str(depth), str(int(ckpt))]
            gib = float(subprocess.run(cmd, env=env, capture_output=True, text=True).stdout)
            speed, _ = bare_step(depth, max(2, args.steps * 10 // depth), checkpointing=ckpt)
            out[ckpt] = (gib, 128 / speed)
        (m0, t0), (m1, t1) = out[False], out[True]
        rows.append(
            [f"resnet{depth}", f"{m0:.2f}", f"{m1:.2f}", f"{m0 / m1:.1f}x less"]
            + [f"{t0:.2f}", f"{t1:.2f}", f"{t1 / t0 - 1:+.0%}"]
        )
    header = ["model", "peak GiB", "checkpointed GiB", "memory", "s/step", "checkpointed"]
    table("Activation checkpointing", header + ["time"], rows)


def depth_scaling(args) -> None:
    rows, first = [], None
    for depth in (20, 32, 44, 56, 110, 1202):
        speed, _ = bare_step(depth, max(2, args.steps * 20 // depth))
        per_it = 128 / speed
        first = first or per_it / depth
        rows.append(
            [
                depth,
                f"{per_it:.3f}",
                f"{per_it / depth * 1000:.2f}",
                f"{per_it / depth / first:.2f}",
            ]
        )
    header = ["depth", "s/iteration", "ms per layer", "per layer vs ResNet-20"]
    table("Time per iteration against depth (bare step, channels_last, fp32)", header, rows)


def compile_time(args) -> None:
    rows = []
    for depth in args.compile_depths:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
        torch._dynamo.reset()
        steps = max(2, args.steps * 10 // depth)
        eager, _ = bare_step(depth, steps)
        compiled, seconds = bare_step(depth, steps, compile=True)
        saving = 128 / eager - 128 / compiled
        even = f"{seconds / saving:.0f}" if saving > 0 else "never"
        rows.append([depth, f"{seconds:.0f}", f"{eager:.0f}", f"{compiled:.0f}", even])
    header = ["depth", "compile s", "eager img/s", "compiled img/s", "break-even iterations"]
    table("torch.compile against depth (channels_last, fp32, empty cache)", header, rows)


def ddp(args) -> None:
    rows = []
    for depth in (20, 56):
        common = [f"model=resnet{depth}", "data=synthetic", "trainer.compile=false"]
        steps = max(5, args.steps * 20 // depth)
        torchrun = [*command("torchrun"), f"--nproc_per_node={THREADS}"]
        one = two = 0.0
        for _ in range(args.repeats):  # alternately, so that noise hits both alike
            one = max(one, end_to_end([*common, f"trainer.threads={THREADS}"], steps, 2))
            ranks = end_to_end([*common, "trainer.threads=1"], steps, 2, launcher=torchrun)
            two = max(two, ranks)
        rows.append([f"resnet{depth}", f"{one:.0f}", f"{two:.0f}", f"{two / one:.0%}"])
    header = ["model", f"1 process x {THREADS} threads", f"{THREADS} gloo ranks x 1 thread"]
    table("DDP on the CPU, global batch 128 (img/s)", header + ["ratio"], rows)


def agree_probe(steps: int) -> None:
    """Under torchrun: what one stop-flag agreement (World.any, a one-number all-reduce on the
    gloo group) costs, against one DDP training step of ResNet-20 at a global batch of 128."""
    from resnet_repro.training.distributed import start, world_from_env

    world = start(world_from_env(), torch.device("cpu"))
    torch.set_num_threads(1)
    for _ in range(50):
        world.any(False)
    t0 = time.perf_counter()
    for _ in range(2000):
        world.any(False)
    agree = (time.perf_counter() - t0) / 2000
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(
        build_model(20).to(memory_format=torch.channels_last)
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(128 // world.size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (len(x),))

    def run_steps(each_step) -> float:
        for i in range(steps + 2):
            if i == 2:
                t0 = time.perf_counter()
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            each_step()
        return (time.perf_counter() - t0) / steps

    # what the loop does: start this step's agreement, read the one started a step before
    pending = [world.any_later(False)]
    before = time.perf_counter()
    for _ in range(2000):
        pending[0]()
        pending[0] = world.any_later(False)
    pipelined_alone = (time.perf_counter() - before) / 2000
    step = pipelined = blocking = float("inf")
    for _ in range(3):  # alternately, so that noise hits all three alike; the best of each
        step = min(step, run_steps(lambda: None))
        pipelined = min(
            pipelined,
            run_steps(lambda: pending.__setitem__(0, (pending[0](), world.any_later(False))[1])),
        )
        blocking = min(blocking, run_steps(lambda: world.any(False)))
    pending[0]()
    if world.is_main:
        print(
            json.dumps(
                {
                    "agree_s": agree,
                    "step_s": step,
                    "pipelined_s": pipelined,
                    "blocking_s": blocking,
                    "pipelined_alone_s": pipelined_alone,
                }
            ),
            flush=True,
        )
    world.close()


def agree(args) -> None:
    torchrun = [*command("torchrun"), f"--nproc_per_node={THREADS}"]
    cmd = [*torchrun, __file__, "--probe-agree", str(args.steps)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    m = json.loads(r.stdout.strip().splitlines()[-1])
    us = {k: f"{m[k] * 1e6:.0f}" for k in ("agree_s", "pipelined_alone_s")}
    rows = [
        [
            us["agree_s"],
            us["pipelined_alone_s"],
            f"{m['step_s'] * 1e3:.1f}",
            f"{m['blocking_s'] / m['step_s'] - 1:+.2%}",
            f"{m['pipelined_s'] / m['step_s'] - 1:+.2%}",
        ]
    ]
    header = [
        "one blocking agreement (us)",
        "one pipelined agreement (us)",
        "one ResNet-20 DDP step (ms)",
        "step with a blocking agreement",
        "step with a pipelined agreement (the loop's)",
    ]
    table(f"The stop-flag agreement on {THREADS} gloo ranks", header, rows)


def gpu(args) -> None:
    """On a CUDA GPU: the bare step with each setting, resnet-train end to end with a GPU's
    defaults (compiled, as auto compiles the papers' long runs), and the classic pipeline."""
    if not torch.cuda.is_available():
        print("\n### GPU\n\nNo CUDA GPU is visible: nothing measured.", flush=True)
        return
    name = torch.cuda.get_device_name(0)
    machine = f"GPU: {name} (torch {torch.__version__}); CPU: {cpu_name()}, {THREADS} threads"
    real = CIFAR_JPEG.exists()
    if real:
        root = CIFAR_JPEG if CIFAR_JPEG.is_dir() else Path(tempfile.mkdtemp(prefix="cifar10-"))
        if not CIFAR_JPEG.is_dir():
            with tarfile.open(CIFAR_JPEG) as tar:
                tar.extractall(root, filter="data")
        data, where = load_dataset("cifar10", root=str(root), download=False), [f"data.root={root}"]
    else:
        data, where = load_dataset("synthetic"), ["data=synthetic"]
    settings = {
        "fp32 NCHW": dict(channels_last=False),
        "fp32 NHWC": dict(),
        "bf16 NHWC": dict(precision="bf16"),
        "bf16 NHWC compiled": dict(precision="bf16", compile=True),
    }
    rows = []
    for depth in args.depths:
        steps = max(20, args.steps * 200 // depth)
        bare = {
            k: best(args.repeats, bare_speed, depth, steps, device="cuda", **kw)
            for k, kw in settings.items()
        }
        classic = best(args.repeats, classic_speed, data, depth, 8, steps, device="cuda")
        gpu_run = [f"model=resnet{depth}", *where, "trainer.device=cuda", "trainer.compile=true"]
        e2e = best(args.repeats, end_to_end, gpu_run, steps, 2)
        rows.append(
            [f"resnet{depth}", f"{classic:.0f}"]
            + [f"{bare[k]:.0f}" for k in settings]
            + [f"{e2e:.0f}", f"{e2e / classic:.2f}x", f"{e2e / bare['bf16 NHWC compiled']:.0%}"]
        )
    header = ["model", "classic (fp32, 8 workers)"] + [f"bare step {k}" for k in settings]
    header += ["resnet-train end to end (bf16, NHWC, compiled)", "vs classic", "of its bare step"]
    data_name = "real CIFAR-10 (JPEG copy)" if real else "synthetic CIFAR-10-shaped data"
    table(f"GPU training speed (img/s), {data_name}", header, rows, machine)


def photo_folder(folder: Path, *options: str) -> Path:
    """The test folder of scripts/photo_folder.py, made there unless it is there already."""
    if not (folder / "train").is_dir():
        cmd = [sys.executable, str(ROOT / "scripts" / "photo_folder.py"), str(folder), *options]
        if subprocess.run(cmd).returncode:
            sys.exit("bench.py: this part needs an image folder; give one with --folder")
    return folder


def folders(args) -> None:
    folder = photo_folder(args.folder or ROOT / "outputs" / "photo-folder")
    rows = folder_rows(folder, [1, 2], args.batches)
    files = sum(1 for _ in folder.rglob("*.JPEG"))
    machine = f"CPU: {cpu_name()}, {THREADS} threads; {folder.name}, {files} files"
    table("Image-folder pipelines, no model (224 px crops)", FOLDER_HEADER, rows, machine, 64)


IMAGENET_NETS = {
    "resnet18": dict(depth=18, block="basic"),
    "resnet50": dict(depth=50, block="bottleneck"),
}
LOADERS = ("device", "boxes", "transforms")


def imagenet(args) -> None:
    """Issue 24's GPU target: ResNet-18 and ResNet-50 trained end to end on the test folder
    (resnet-train data=imagenet with each data.loader, as many DataLoader workers as the
    machine has cores but one, bf16 where the GPU has it, channels_last, not compiled, batch
    256) against the same step on a batch already on the device. On a CUDA GPU; on a CPU only
    with --rehearse, at toy sizes: the commands run, the numbers mean nothing."""
    cuda = torch.cuda.is_available()
    if not cuda and not args.rehearse:
        print("\n### ImageNet-style, end to end\n\nNo CUDA GPU is visible: nothing measured.")
        return
    # Each training file 8 times (hard links): an epoch of 19,200 images, whose start (the
    # workers' first batches) weighs little, as on ImageNet.
    folder = photo_folder(args.folder or ROOT / "outputs" / "photo-folder-x8", "--links", "8")
    device = "cuda" if cuda else "cpu"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    batch, size = (256, 224) if not args.rehearse else (8, 64)
    workers = max(1, THREADS - 1)
    rows = []
    for name, net in IMAGENET_NETS.items():
        steps = args.steps if not args.rehearse else 2
        bare = best(
            args.repeats,
            bare_speed,
            **net,
            steps=steps,
            arch="imagenet",
            shortcut="B",
            num_classes=6,
            batch=batch,
            size=size,
            device=device,
            precision="bf16" if bf16 else "fp32",
        )
        run = [f"model={name}", "data=imagenet", f"data.root={folder}", f"data.workers={workers}"]
        run += [f"data.batch_size={batch}", f"trainer.device={device}", "trainer.compile=false"]
        if args.rehearse:
            run += [f"data.crop_size={size}", f"data.resize_size={size + 8}"]
        e2e = {
            loader: best(args.repeats, end_to_end, [*run, f"data.loader={loader}"], steps, 3)
            for loader in LOADERS
        }
        rows.append(
            [name, f"{bare:.0f}"]
            + [f"{e2e[k]:.0f}" for k in LOADERS]
            + [f"{e2e[k] / bare:.0%}" for k in LOADERS]
        )
    header = ["model", "bare step"] + [f"end to end, {k}" for k in LOADERS]
    header += [f"{k}: of the bare step" for k in LOADERS]
    where = torch.cuda.get_device_name(0) if cuda else "CPU (a rehearsal at toy sizes)"
    machine = f"{where}, {'bf16' if bf16 else 'fp32'}; CPU: {cpu_name()}, {workers} workers"
    table(f"ImageNet-style training speed (img/s), {folder.name}", header, rows, machine, batch)


PARTS = {
    "pipeline": pipeline,
    "settings": settings,
    "memory": memory,
    "depth": depth_scaling,
    "compile": compile_time,
    "ddp": ddp,
    "gpu": gpu,
    "agree": agree,
    "sweep": sweep,
    "folders": folders,
    "imagenet": imagenet,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--depths", nargs="+", type=int, default=[20, 56, 110])
    p.add_argument("--compile-depths", nargs="+", type=int, default=[20, 56, 110, 1202])
    p.add_argument("--steps", type=int, default=20, help="timed iterations at depth 20")
    p.add_argument("--repeats", type=int, default=2, help="best of this many measurements")
    p.add_argument("--folder", type=Path, help="the folders part's image folder")
    p.add_argument("--batches", type=int, default=12, help="the folders part's timed batches")
    p.add_argument("--rehearse", action="store_true", help="the imagenet part on a CPU, tiny")
    p.add_argument("--probe-memory", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--probe-agree", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe_agree:
        return agree_probe(args.probe_agree)
    if args.probe_memory:
        return probe_memory(args.probe_memory[0], bool(args.probe_memory[1]))
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}; {cpu_name()}; {time.strftime('%Y-%m-%d %H:%M')}")
    for part in args.parts:
        PARTS[part](args)


if __name__ == "__main__":
    sys.exit(main())
