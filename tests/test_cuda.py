"""On a CUDA GPU: what a GPU run does that no CPU run can (NCCL, fp16 with a GradScaler, pinned
memory, SyncBatchNorm, a checkpoint crossing devices). Plain `make test` runs these wherever a
GPU is visible; elsewhere each is skipped with the reason. Their CPU twins (the same choices
forced on the CPU, gloo ranks) are test_gpu_choices.py and test_ddp.py."""

import json
import signal
import subprocess

import pytest
import torch
from conftest import GPU_IDS, GPUS, TINY, TORCHRUN, TRAIN, launch, run_cli, with_gpus
from fixtures import write_jpeg_folder
from test_faults import start, wait_for

from resnet_repro.data import load_dataset
from resnet_repro.training import checkpoint
from resnet_repro.training.distributed import GROUP_OF_ONE

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU; PyTorch sees none here"),
]
# TINY with enough iterations to record, and a short last batch (256 at 48: 5 of 48, 1 of 16).
SHORT = [*TINY, "data.batch_size=48", "schedule.iterations=12", "trainer.log_every=3"]


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_the_gpu_defaults_train(tmp_path):
    """auto's choices on a GPU (bf16 from Ampere on, channels_last), compile forced: what a
    64k-iteration run gets."""
    r = run_cli(*SHORT, "trainer.compile=true", f"hydra.run.dir={tmp_path}", gpu=True)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary(tmp_path)
    ampere = torch.cuda.get_device_capability(0)[0] >= 8
    assert s["device"] == "cuda:0" and s["hardware"]["gpu"] == torch.cuda.get_device_name(0)
    assert s["precision"] == ("bf16" if ampere else "fp32")
    assert s["channels_last"] is True and s["compile"] is True


def test_fp16_with_a_grad_scaler(tmp_path):
    r = run_cli(*SHORT, "trainer.precision=fp16", f"hydra.run.dir={tmp_path}", gpu=True)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0 and summary(tmp_path)["precision"] == "fp16"
    assert ckpt["optimizer"]["param_groups"][0]["fused"] is True  # the scaler without .item()


def test_an_image_folder_with_pinned_memory_and_compile(tmp_path):
    root = write_jpeg_folder(tmp_path / "jpegs", classes=3, train=8, val=4)
    r = run_cli(
        "model=resnet18",
        "data=imagefolder",
        f"data.root={root}",
        "data.crop_size=32",
        "data.resize_size=36",
        "data.batch_size=10",
        "data.workers=2",
        "schedule=imagenet",
        "schedule.epochs=2",
        "trainer.compile=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        gpu=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary(tmp_path / "run")["compile"] is True
    # the workers' batches arrive in pinned memory, for the non-blocking copy to the GPU
    for loader in ("boxes", "device"):  # a batch of crops; the files' bytes for the GPU
        data = load_dataset(
            "imagefolder", root=str(root), crop_size=32, resize_size=36, workers=2, loader=loader
        )
        batches, _ = data.sources(10, 0, 10, torch.device("cuda"))
        batch = next(iter(batches.loader))
        pinned = batch[0] if loader == "boxes" else batch.data
        assert pinned.is_pinned() and batches.loader.pin_memory


def stop_after_a_checkpoint(run_dir, device: str) -> int:
    """Train on `device` until a checkpoint beyond the last one, then stop with Ctrl-C."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    before = checkpoint.load_checkpoint(ckpt)["iteration"] if ckpt.exists() else 0
    args = [*TINY, "schedule.iterations=400", "trainer.ckpt_every=5", "trainer.log_every=5"]
    proc = start(*args, f"trainer.device={device}", f"hydra.run.dir={run_dir}", gpu=True)

    def moved_on():
        try:
            return checkpoint.load_checkpoint(ckpt)["iteration"] > before
        except (checkpoint.Damaged, FileNotFoundError):
            return False

    wait_for(moved_on, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    return checkpoint.load_checkpoint(ckpt)["iteration"]


def test_a_checkpoint_moves_from_cpu_to_gpu_and_back(tmp_path):
    on_cpu = stop_after_a_checkpoint(tmp_path, "cpu")
    on_gpu = stop_after_a_checkpoint(tmp_path, "cuda")
    assert on_gpu > on_cpu
    r = run_cli(
        *TINY,
        "schedule.iterations=400",
        "trainer.ckpt_every=5",
        "trainer.log_every=5",
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path}",
        gpu=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary(tmp_path)["iteration"] == 400


def test_one_nccl_rank_under_torchrun(tmp_path):
    """One GPU, one rank, and a process group all the same (GROUP_OF_ONE): the NCCL path runs
    as on several GPUs (DDP, the all-reduces, the broadcasts, the gloo group beside NCCL)."""
    r = subprocess.run(
        [*TORCHRUN[:-1], "--nproc_per_node=1", *TRAIN, *SHORT, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=with_gpus() | {GROUP_OF_ONE: "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary(tmp_path)
    assert s["launcher"] == "torchrun" and s["device"] == "cuda:0"
    assert s["replicas_identical"] is True  # checked by all-reduces: only with a process group
    assert "1 rank in a nccl process group" in (tmp_path / "train.log").read_text()


@pytest.mark.skipif(GPUS < 2, reason="needs 2 CUDA GPUs")
def test_two_nccl_ranks_with_sync_batchnorm(tmp_path):
    r = launch(*SHORT, "trainer.sync_bn=true", f"hydra.run.dir={tmp_path}", gpu=True)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary(tmp_path)
    assert s["world_size"] == 2 and s["replicas_identical"] is True and s["compile"] is False


@pytest.mark.skipif(GPUS != 1, reason="needs a machine with exactly one CUDA GPU")
def test_two_ranks_on_one_gpu_are_refused_with_the_reason(tmp_path):
    r = launch(*SHORT, f"hydra.run.dir={tmp_path}", gpu=True)
    assert r.returncode != 0
    assert "2 ranks on this node, but only 1 GPUs visible" in r.stderr
    assert "Traceback (most recent call last)" not in r.stderr.split("torchrun")[0]


def test_a_local_sweep_puts_two_runs_on_each_gpu(tmp_path):
    """hydra/launcher=local with runs_per_gpu=2: each run sees only its slot's GPU."""
    seeds = ",".join(str(i) for i in range(2 * GPUS))
    local = ["hydra/launcher=local", "hydra.launcher.runs_per_gpu=2"]
    r = run_cli(
        "-m", *local, *SHORT, f"trainer.seed={seeds}", f"hydra.sweep.dir={tmp_path}", gpu=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [summary(d) for d in tmp_path.glob("[0-9]*")]
    assert len(runs) == 2 * GPUS and {s["device"] for s in runs} == {"cuda:0"}
    said = [
        line
        for log in tmp_path.glob(".submitit/*/*/*.err")
        for line in log.read_text().splitlines()
        if " in slot " in line
    ]
    on = sorted(line.split("GPU ")[1].split(",")[0] for line in said)
    assert on == sorted(2 * GPU_IDS), said


def test_jpegs_decoded_on_the_gpu_crop_as_on_the_cpu(tmp_path):
    """data.loader=device: nvJPEG's decoding and the GPU's resizing give the CPU's crops to a
    grey level or two (IDCTs differ in their last bit), from the same boxes."""
    from test_boxes import photo_like
    from torchvision.datasets import ImageFolder

    from resnet_repro.data.crops import keys
    from resnet_repro.data.device_decode import EncodedCrops, decode_on, jpeg_decoder

    (tmp_path / "c0").mkdir()
    for i in range(6):
        photo_like(tmp_path / "c0" / f"{i}.jpg", 500 - 40 * i, 375, seed=i)
    folder = ImageFolder(str(tmp_path))
    for scale_aug in (False, True):
        encoded = EncodedCrops(folder, 96, train=True, scale_aug=scale_aug, scale_range=(128, 200))
        batch = encoded.__getitems__(keys(list(range(6)), seed=0, epoch=0, start=0))
        decode = jpeg_decoder()
        on_cpu = decode_on(batch, torch.device("cpu"), 96, folder.samples, decode)
        on_gpu = decode_on(batch, torch.device("cuda"), 96, folder.samples, decode)
        assert on_gpu.is_cuda and on_gpu.shape == on_cpu.shape
        assert (on_gpu.cpu().float() - on_cpu.float()).abs().mean() < 1.5


def test_an_image_folder_decoded_on_the_gpu_trains_and_evaluates_ten_crops(tmp_path):
    root = write_jpeg_folder(tmp_path / "jpegs", classes=3, train=8, val=4, size=(90, 120))
    r = run_cli(
        "model=resnet18",
        "data=imagefolder",
        f"data.root={root}",
        "data.crop_size=64",
        "data.resize_size=72",
        "data.scale_aug=true",
        "data.scale_range=[72,100]",
        "data.ten_crop=true",
        "data.workers=2",
        "data.batch_size=8",
        "schedule=imagenet",
        "schedule.epochs=2",
        "trainer.eval_every=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        gpu=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary(tmp_path / "run")
    assert s["data_loader"] == "device" and s["device"] == "cuda:0"  # auto on a GPU
    assert 0 <= s["val_error"] <= 100 and s["iteration"] == 6
