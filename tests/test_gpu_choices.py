"""What `auto` turns on for a GPU, forced on the CPU, on each data pipeline.

A GPU run switches on what no CPU default reaches: torch.compile (compile=auto compiles long
GPU runs), bf16 autocast, channels_last, activation checkpointing where memory is short, DDP
over ranks. The first GPU ImageNet run would have crashed at its first step on a combination
no test had run (compile with an image folder). Each case forces one such set of choices on tiny
data, for a few iterations that cross an epoch's short last batch (which a compiled model runs
eagerly). What only CUDA has (NCCL, fp16 with a GradScaler, pinned memory, SyncBatchNorm) is in
test_cuda.py.
"""

import json
import math

import pytest
from conftest import launch, run_cli
from fixtures import write_jpeg_folder

from resnet_repro.training.records import read_metrics

pytestmark = pytest.mark.slow

# 72 images at batch 16: 5 steps an epoch, the last of 8 images; 7 iterations cross into epoch 2.
TENSORS = [
    "data=synthetic",
    "data.train_size=72",
    "data.test_size=32",
    "data.batch_size=16",
    "model=resnet",
    "model.depth=8",
    "schedule.iterations=7",
]
# 3 classes x 8 images at batch 10: 3 steps an epoch, the last of 4; 2 epochs. resnet18 is the
# ImageNet net, on 32 px crops; one DataLoader worker process, and the JPEGs decoded and cropped
# by the device's code (data.loader=device, here with the CPU's decoder), as GPU runs read
# ImageNet.
FOLDER = [
    "model=resnet18",
    "data=imagefolder",
    "data.loader=device",
    "data.crop_size=32",
    "data.resize_size=36",
    "data.batch_size=10",
    "data.workers=1",
    "schedule=imagenet",
    "schedule.epochs=2",
]
GPU_DEFAULTS = ["trainer.compile=true", "trainer.precision=bf16", "trainer.channels_last=true"]
CHECKPOINTED = ["model.checkpointing=true", "trainer.precision=bf16", "trainer.channels_last=true"]
CASES = {  # (pipeline, choices, ranks)
    "tensors-compiled": ("tensors", GPU_DEFAULTS, 1),
    "folder-compiled": ("folder", GPU_DEFAULTS, 1),
    "tensors-compiled-2-ranks": ("tensors", GPU_DEFAULTS, 2),
    "tensors-checkpointed": ("tensors", CHECKPOINTED, 1),
    "folder-checkpointed-2-ranks": ("folder", CHECKPOINTED, 2),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"), classes=3, train=8, val=4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_a_gpu_run_turns_on_runs_on_each_pipeline(case, folder, tmp_path):
    pipeline, choices, ranks = CASES[case]
    data = TENSORS if pipeline == "tensors" else [*FOLDER, f"data.root={folder}"]
    args = [
        *data,
        *choices,
        "trainer.threads=1",
        "trainer.log_every=1",
        f"hydra.run.dir={tmp_path}",
    ]
    if ranks == 2:
        r = launch(*args)
    else:  # and what a user debugging compile asks for prints under Hydra's logging set-up
        r = run_cli(*args, env={"TORCH_LOGS": "dynamo,graph_breaks,recompiles"})
    assert r.returncode == 0, r.stderr[-3000:]
    if ranks == 1 and summary_of(tmp_path)["compile"]:
        assert "torchdynamo start tracing" in r.stderr
    summary = summary_of(tmp_path)
    assert summary["precision"] == "bf16" and summary["channels_last"] is True
    assert summary["compile"] is ("trainer.compile=true" in choices)
    assert summary["checkpointing"] is ("model.checkpointing=true" in choices)
    assert summary["world_size"] == ranks
    records = read_metrics(tmp_path)
    assert [m["iteration"] for m in records] == list(range(1, summary["iteration"] + 1))
    assert all(math.isfinite(m["train_loss"]) for m in records)


def summary_of(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
