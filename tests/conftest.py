import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
# The installed console script, as a user runs it.
TRAIN = [str(Path(sys.executable).with_name("resnet-train"))]

# A tiny but complete run: ResNet-8 on a few synthetic images, a handful of iterations.
TINY_MODEL = ["model=resnet", "model.depth=8", "trainer.threads=1"]
TINY = [
    "data=synthetic",
    "data.train_size=256",
    "data.test_size=128",
    "data.batch_size=32",
    *TINY_MODEL,
]


def run_cli(*overrides, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*TRAIN, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        **kwargs,
    )


@pytest.fixture(scope="session")
def cifar10_jpeg(tmp_path_factory) -> Path:
    """The real CIFAR-10 (JPEG image folder) from ../shared/data, extracted once per session."""
    if not CIFAR_JPEG.exists():
        pytest.fail(f"{CIFAR_JPEG} is missing: the real-data tests need ../shared/data")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(CIFAR_JPEG) as tar:
        tar.extractall(root, filter="data")
    return root
