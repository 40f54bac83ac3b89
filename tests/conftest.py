import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from resnet_repro.entry import command
from resnet_repro.training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# Real CIFAR-10, as JPEG image folders (train/<class>/*.jpg, test/<class>/*.jpg): the archive or
# its extracted folder named by $RESNET_REPRO_CIFAR10_JPEG (.ci/run names CI's copy), else the
# archive in ../shared/data beside the clone. A clone on its own skips the tests that need it.
CIFAR_JPEG_VAR = "RESNET_REPRO_CIFAR10_JPEG"
CIFAR_JPEG = Path(
    os.environ.get(CIFAR_JPEG_VAR) or ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
)
# The machine's GPUs, read before anything hides them. Only the `cuda` tests use them: every other
# test runs on the CPU as in CI, also on a GPU machine, where `auto` would otherwise train in
# bf16 on the GPU beside CPU numbers, and 2 ranks would be refused on one GPU. CUDA keeps the
# devices it found when it starts, so this process starts it now, and then every process a test
# starts sees none (CUDA_VISIBLE_DEVICES=""), unless the test gives it with_gpus().
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
if GPUS:
    torch.cuda.init()
GPU_IDS = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
GPU_IDS = (GPU_IDS or [str(i) for i in range(GPUS)])[:GPUS]
os.environ["CUDA_VISIBLE_DEVICES"] = ""


def with_gpus(env: dict | None = None) -> dict:
    """An environment (os.environ's by default) in which the machine's GPUs are visible."""
    return {**(env or os.environ), "CUDA_VISIBLE_DEVICES": ",".join(GPU_IDS)}


@pytest.fixture(autouse=True)
def cpu_unless_cuda(request, monkeypatch):
    """In this process too, a test not marked `cuda` sees no GPU."""
    if GPUS and request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# The installed console scripts, as a user runs them.
TRAIN = command("resnet-train")
TORCHRUN = [*command("torchrun"), "--nproc_per_node=2"]

# A tiny but complete run: ResNet-8 on a few synthetic images, a handful of iterations.
TINY_MODEL = ["model=resnet", "model.depth=8", "trainer.threads=1"]
TINY = [
    "data=synthetic",
    "data.train_size=256",
    "data.test_size=128",
    "data.batch_size=32",
    *TINY_MODEL,
]


def run_cli(*overrides, cwd=None, env=None, gpu=False, **kwargs) -> subprocess.CompletedProcess:
    env = {**(with_gpus() if gpu else os.environ), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [*TRAIN, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        **kwargs,
    )


def launch(*args, cwd=None, gpu=False, **kwargs) -> subprocess.CompletedProcess:
    env = with_gpus() if gpu else os.environ
    env = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "RANK"))}
    return subprocess.run(
        [*TORCHRUN, *TRAIN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env | {"PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


@pytest.fixture(scope="session")
def cifar10_jpeg(tmp_path_factory) -> Path:
    """The real CIFAR-10 (JPEG image folders), extracted once per session if it is an archive."""
    if not CIFAR_JPEG.exists():
        if os.environ.get(CIFAR_JPEG_VAR):  # named, so it must be there
            pytest.fail(f"{CIFAR_JPEG_VAR}={CIFAR_JPEG}: there is no such file or folder")
        pytest.skip(
            f"real CIFAR-10 not found: set {CIFAR_JPEG_VAR} to cifar10-jpeg.tar.gz (or its "
            "extracted folder) to run this test"
        )
    if CIFAR_JPEG.is_dir():
        return CIFAR_JPEG
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(CIFAR_JPEG) as tar:
        tar.extractall(root, filter="data")
    return root


def image_folder_run(root: Path, run_dir: Path | None, batch: int, workers: int, eval_every: int):
    """An ImageNet-style run on a tiny image folder (fixtures.write_jpeg_folder): 32 px crops,
    the ImageNet schedule over 2 epochs (in run_dir, unless None: a sweep's)."""
    where = [f"hydra.run.dir={run_dir}"] if run_dir else []
    return [
        "data=imagefolder",
        f"data.root={root}",
        "data.crop_size=32",
        "data.resize_size=36",
        f"data.workers={workers}",
        f"data.batch_size={batch}",
        "schedule=imagenet",
        "schedule.epochs=2",
        "trainer.log_every=3",
        f"trainer.eval_every={eval_every}",
        *where,
    ]


# A run long enough to be interrupted: 150 iterations, a checkpoint every 10.
RESUME = [
    *TINY,
    "data.batch_size=16",
    "schedule.iterations=150",
    "trainer.ckpt_every=10",
    "trainer.log_every=10",
    "trainer.eval_every=50",
]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """RESUME run from start to end without a stop: what every interrupted run must equal."""
    run_dir = tmp_path_factory.mktemp("straight")
    r = run_cli(*RESUME, f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr
    return run_dir


def assert_same_end(straight: Path, resumed: Path) -> None:
    """The resumed run ends with the uninterrupted run's weights and momentum, bit for bit, and
    its record holds every iteration once."""
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    assert [m["iteration"] for m in read_metrics(resumed)] == [
        m["iteration"] for m in read_metrics(straight)
    ]
