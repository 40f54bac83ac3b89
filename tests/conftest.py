import os
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
import warm

from resnet_repro.entry import command
from resnet_repro.training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# A suite started in the background by a shell without job control (`make test &`, `nohup`)
# inherits SIGINT ignored, and so would every run it starts: the Ctrl-C tests would meet runs
# that cannot be stopped (a fresh-clone run so started failed three of them). A terminal's
# Ctrl-C reaches a user's run; the suite's runs get the same.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
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


# `make test` runs the suite on one pytest-xdist worker per core (at most 4): each worker and the
# runs it starts get their share of the cores (PyTorch's default is all of them, and two workers
# with two threads each on two cores run slower than one). torchrun on one node picks a free
# port itself; srun-like tests (test_ddp.py) give each job an id of its own, hence a port.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The longest tests (a minute or more on 2 cores), and their modules, started first: pytest-xdist
# hands modules out in the order their first test comes, and a long one started last would run
# alone while the other workers idle.
LONGEST = (
    "test_real_data.py::",
    "test_gpu_choices.py::",
    "test_launcher.py::test_a_sweep_two_at_a_time",
    "test_faults.py::test_a_full_disk_while_saving",
    "test_cli.py::test_bf16_run_learns_on_cpu",
    "test_figures.py::",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        where = item.nodeid.split("/")[-1]
        return next((i for i, p in enumerate(LONGEST) if where.startswith(p)), len(LONGEST))

    items.sort(key=rank)  # stable: the rest keep their order


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


# resnet-train forked from a warm interpreter (tests/warm.py): a few hundred runs, each spared
# 5 s of imports. RESNET_REPRO_WARM=0 starts every run as a new process.
WARM = (
    None if len(TRAIN) > 1 or os.environ.get("RESNET_REPRO_WARM") == "0" else warm.Zygote(TRAIN[0])
)


@pytest.fixture(scope="session", autouse=True)
def stop_the_zygote():
    yield
    if WARM:
        WARM.stop()


def run_cli(*overrides, cwd=None, env=None, gpu=False, **kwargs) -> subprocess.CompletedProcess:
    env = {**(with_gpus() if gpu else os.environ), "PYTHONUNBUFFERED": "1", **(env or {})}
    if WARM and not gpu and not kwargs and WARM.can_run(env):
        return WARM.run(list(overrides), env, cwd or os.getcwd(), timeout=900)
    return subprocess.run(
        [*TRAIN, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        **kwargs,
    )


def call(main, *args) -> int:
    """A console script's main in this process, on str(args); its exit code (0 when it returns)."""
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


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
