"""Two gloo ranks on the CPU, started as torchrun and srun start them, against one process."""

import json
import os
import resource
import signal
import subprocess
import time
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, TINY_MODEL, TORCHRUN, TRAIN, assert_same_end, image_folder_run, launch
from fixtures import write_jpeg_folder

from resnet_repro.data import load_dataset
from resnet_repro.data.images import Normalize
from resnet_repro.data.sampling import EpochPlan
from resnet_repro.data.tensors import EvalBatches, TrainBatches, channel_stats
from resnet_repro.nets.models import build_model
from resnet_repro.training import files
from resnet_repro.training.distributed import ALONE, World
from resnet_repro.training.loop import evaluate
from resnet_repro.training.records import METRICS, read_metrics

pytestmark = pytest.mark.slow
ITERATIONS = 60
# 256 images at a global batch of 32: 8 steps an epoch, 16 images a rank.
# lr 0.01: at 0.1 a net fitting random labels is chaotic, and float rounding (channels_last
# or not) alone moves the weights by 0.2 in 60 steps, hiding what the test is after.
ARGS = [
    *TINY,
    "optim.lr=0.01",
    f"schedule.iterations={ITERATIONS}",
    "trainer.log_every=5",
    "trainer.eval_every=20",
    "trainer.ckpt_every=5",
]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One uninterrupted 2-rank run, in the run directory resnet-train names itself."""
    cwd = tmp_path_factory.mktemp("ddp")
    r = launch(*ARGS, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in (cwd / "outputs").rglob(METRICS))


def test_one_run_directory_and_one_set_of_records(two_ranks):
    [run_dir] = run_dirs(two_ranks)
    # Named by torchrun's run id, which its restarts keep (no empty twin of another rank's clock)
    assert list((two_ranks / "outputs").iterdir()) == [run_dir]
    assert run_dir.name.startswith("torchrun-")
    assert [m["iteration"] for m in read_metrics(run_dir)] == list(range(5, ITERATIONS + 1, 5))
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    log = (run_dir / "train.log").read_text()
    assert log.count("| test err") == ITERATIONS // 20 and log.count("done:") == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["launcher"] == "torchrun"
    assert summary["replicas_identical"] is True


def test_two_ranks_train_as_one_process_averaging_two_half_batches(two_ranks):
    [run_dir] = run_dirs(two_ranks)
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # no DDP prefix

    # The same thing by hand: each step, the two ranks' halves of the global batch, each with
    # its own BatchNorm statistics, their gradients averaged.
    torch.manual_seed(0)
    model = build_model(8).to(memory_format=torch.channels_last)  # as resnet-train runs it
    data = load_dataset("synthetic", train_size=256, test_size=128)
    cpu = torch.device("cpu")
    normalize = Normalize(*channel_stats(data.train_images), cpu, torch.channels_last)
    halves = [
        TrainBatches(
            data.train_images,
            data.train_labels,
            EpochPlan(256, 32, 0, World(rank, 2)),
            normalize,
            cpu,
        ).iterate(0)
        for rank in (0, 1)
    ]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran (trainer.threads=1): the same float sums
    try:
        for _ in range(ITERATIONS):
            opt.zero_grad()
            for half in halves:
                x, y = next(half)
                (F.cross_entropy(model(x), y) / 2).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ckpt["model"][name], p.detach(), rtol=1e-4, atol=1e-5)

    # And a 2-rank evaluation reports what one process reports for the saved model.
    model.load_state_dict(ckpt["model"])
    test = EvalBatches(data.test_images, data.test_labels, 1000, normalize, cpu)
    alone = evaluate(model, test, torch.autocast("cpu", enabled=False), "test", ALONE)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_error"] == alone["test_error"]


def test_torchrun_restarting_a_killed_worker_resumes_the_run(two_ranks, tmp_path):
    """torchrun --max-restarts: a worker SIGKILLed after a checkpoint, the agent restarts both,
    and they resume in the same run directory (named by the agent, not by their own clocks) to
    the parameters of an uninterrupted run."""
    [straight] = run_dirs(two_ranks)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK"))}
    proc = subprocess.Popen(
        [*TORCHRUN, "--max-restarts=1", *TRAIN, *ARGS],
        cwd=tmp_path,
        env=env | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ckpts = []
    while not ckpts and proc.poll() is None:
        time.sleep(0.02)
        ckpts = list((tmp_path / "outputs").rglob("checkpoints/last.pt"))
    [rank_1] = [p for p in descendants(proc.pid) if environ(p).get("RANK") == "1"]
    os.kill(rank_1, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    [run_dir] = run_dirs(tmp_path)  # one run directory, resumed, not a second one started over
    assert len(list((tmp_path / "outputs").rglob("*.log"))) == 1
    resumed = [ln for ln in (run_dir / "train.log").read_text().splitlines() if "resuming" in ln]
    assert len(resumed) == 1, out
    assert_same_end(straight, run_dir)


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def job(k: int) -> int:
    """The k-th SLURM job id of this test process (k < 16). It also names the rendezvous port
    (distributed.rendezvous_env), which must differ between pytest-xdist workers' tests."""
    return os.getpid() * 16 + k


def srun_like(
    args: list[str], job_id: int, limit_rank_0: int = 0, cwd=None
) -> list[subprocess.Popen]:
    """Two tasks started as srun starts them: SLURM's variables, no torchrun. limit_rank_0:
    no file of rank 0 may grow larger (as on a full disk)."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_rank_0, limit_rank_0))

    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "localhost",
        "PYTHONUNBUFFERED": "1",
    }
    return [
        subprocess.Popen(
            [*TRAIN, *args],
            env=base | slurm | {"SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=small_files if limit_rank_0 and r == 0 else None,
            cwd=cwd,
        )
        for r in (0, 1)
    ]


def test_a_requeued_slurm_job_resumes_its_run(two_ranks, tmp_path):
    """A job killed without notice (a node lost, preempted) and requeued by SLURM starts the
    same command again under the same job id: it finds its run directory and resumes."""
    [straight] = run_dirs(two_ranks)
    job_id = job(0)
    tasks = srun_like(ARGS, job_id=job_id, cwd=tmp_path)  # no hydra.run.dir: named by the job
    while not list(tmp_path.rglob("last.pt")) and tasks[0].poll() is None:
        time.sleep(0.02)
    for task in tasks:
        task.kill()
        task.communicate(timeout=60)
    stopped_at = torch.load(next(tmp_path.rglob("last.pt")), weights_only=True)["iteration"]
    assert 0 < stopped_at < ITERATIONS

    tasks = srun_like(ARGS, job_id=job_id, cwd=tmp_path)  # the requeued job
    for task in tasks:
        _, err = task.communicate(timeout=300)
        assert task.returncode == 0, err
    [run_dir] = run_dirs(tmp_path)
    assert run_dir.parent == tmp_path / "outputs" / f"slurm-{job_id}"
    assert f"resuming from iteration {stopped_at}" in (run_dir / "train.log").read_text()
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def trained_a_while(run_dir: Path) -> bool:
    """The first record is written: training is under way (metrics.jsonl itself is made before
    the first step, and a stop before it is honoured before training)."""
    path = run_dir / METRICS
    return path.exists() and bool(path.read_text().strip())


def test_srun_tasks_train_together_and_stop_together(tmp_path):
    # SIGTERM reaches rank 1 only: both ranks stop at the same iteration, rank 0 saves.
    run_dir = tmp_path / "run"
    args = [*TINY, "schedule.iterations=400", "trainer.ckpt_every=1000", "trainer.log_every=10"]
    tasks = srun_like([*args, f"hydra.run.dir={run_dir}"], job_id=job(1))
    while not trained_a_while(run_dir) and tasks[0].poll() is None:  # not a stop at start-up
        time.sleep(0.02)
    tasks[1].send_signal(signal.SIGTERM)
    outs = [t.communicate(timeout=120) for t in tasks]
    assert [t.returncode for t in tasks] == [130, 130], outs
    assert "stopped after iteration" in outs[0][1] and "stopped" not in outs[1][1]
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < ckpt["iteration"] < 400 and len(ckpt["rng_ranks"]) == 2

    tasks = srun_like([*args, "schedule.gamma=0.5", f"hydra.run.dir={run_dir}"], job(2))
    outs = [t.communicate(timeout=300) for t in tasks]
    assert [t.returncode for t in tasks] == [2, 2]  # a changed schedule: refused on every rank
    assert "different experiment" in outs[0][1]


def test_batch_the_ranks_cannot_share(tmp_path):
    r = launch(*TINY, "data.batch_size=33", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode != 0 and "must divide evenly over the 2 ranks" in r.stderr
    assert "resnet_repro/" not in r.stderr  # torchrun reports the failed ranks; we add no trace
    assert not (tmp_path / "run").exists()


def test_sync_bn_is_refused_on_cpu(tmp_path):
    r = launch(*TINY, "trainer.sync_bn=true", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode != 0 and "needs CUDA GPUs" in r.stderr


def test_images_per_rank_add_up(two_ranks):
    [run_dir] = run_dirs(two_ranks)
    first = read_metrics(run_dir)[0]
    assert first["epoch"] == 0.625  # 5 of 8 steps: the global batch counts
    assert list(islice(read_metrics(run_dir), 1))[0]["train_loss"] > 0


def test_a_mistake_seen_by_rank_0_stops_every_rank(tmp_path):
    # Rank 0 looks for the data first; the others must not wait for it forever.
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [*TINY_MODEL, "data=cifar10", "data.download=false", f"data.root={empty}"]
    tasks = srun_like([*args, f"hydra.run.dir={tmp_path / 'run'}"], job_id=job(3))
    outs = [t.communicate(timeout=120) for t in tasks]
    assert [t.returncode for t in tasks] == [2, 2]
    assert "No cifar10 data" in outs[0][1] and "No cifar10 data" not in outs[1][1]  # said once
    assert all("Traceback" not in err for _, err in outs)
    assert not (tmp_path / "run").exists()


def test_a_run_directory_another_rank_made_first_is_the_jobs(tmp_path, monkeypatch):
    # The order that left the run directory behind: rank 1's Hydra made the shared
    # hydra.run.dir before rank 0 noted what was there, so rank 0 saw it as the user's.
    monkeypatch.setattr(files, "BEFORE", {})
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # made by the other rank
    files.note_before(run_dir)
    assert not files.made_here(run_dir)
    files.claim(run_dir)  # the other rank saw it absent
    assert files.made_here(run_dir)
    (run_dir / "train.log").touch()
    files.remove_if_untouched(run_dir)
    assert not run_dir.exists() and tmp_path.exists()


def test_two_ranks_on_an_image_folder(tmp_path):
    # The DataLoader pipeline takes its share of the same plan: 18 images, a global batch of
    # 6 (3 a rank), 3 steps an epoch; 9 val images evaluated as 5 + 4.
    root = write_jpeg_folder(tmp_path / "jpegs")
    run_dir = tmp_path / "run"
    args = image_folder_run(root, run_dir, batch=6, workers=0, eval_every=3)
    r = launch("model=resnet18", "trainer.threads=1", *args)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iteration"] == 6 and summary["world_size"] == 2
    assert summary["val_error"] in {100 * k / 9 for k in range(10)}  # counted over all 9
    assert [m["iteration"] for m in read_metrics(run_dir)] == [3, 6]


def test_a_loss_that_is_not_finite_stops_every_rank(tmp_path):
    """Each rank stops by its own hand, exit 1, neither waiting for the other in a collective.
    Started as srun starts them: torchrun would SIGTERM one rank as soon as the other failed,
    and hide whether it had stopped by itself."""
    run_dir = tmp_path / "run"
    args = [*TINY, "optim.lr=1e6", "schedule.iterations=40", "trainer.log_every=20",
            "trainer.ckpt_every=2", f"hydra.run.dir={run_dir}"]  # fmt: skip
    tasks = srun_like(args, job_id=job(4))
    ends = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [1, 1], ends
    assert "not finite at iteration" in ends[0][1] and "Traceback" not in ends[0][1]
    assert not (run_dir / "summary.json").exists()
    saved = list((run_dir / "checkpoints").glob("*.pt"))
    assert saved  # the checkpoints of the iterations before, each finite
    for path in saved:
        ckpt = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_a_checkpoint_rank_0_cannot_write_stops_every_rank(tmp_path):
    # Rank 0 writes the checkpoint; when its disk is full, the other ranks must stop too, not
    # wait for it in the next collective.
    run_dir = tmp_path / "run"
    args = [*TINY, "schedule.iterations=40", "trainer.ckpt_every=5", f"hydra.run.dir={run_dir}"]
    tasks = srun_like(args, job_id=job(5), limit_rank_0=100_000)
    outs = [t.communicate(timeout=120) for t in tasks]
    assert [t.returncode for t in tasks] == [1, 1], outs
    assert "could not be written (File too large)" in outs[0][1]
    assert all("Traceback" not in err for _, err in outs)
    assert not list((run_dir / "checkpoints").glob("*"))  # no half file, no temporary one


def test_a_rank_that_dies_stops_every_rank_at_once(tmp_path):
    # Under srun nothing watches the tasks for us: when one is killed, the other must notice,
    # not wait in a collective for the process group's 10-minute timeout.
    run_dir = tmp_path / "run"
    args = [*TINY, "schedule.iterations=5000", "trainer.log_every=10"]
    tasks = srun_like([*args, f"hydra.run.dir={run_dir}"], job_id=job(6))
    while not (run_dir / METRICS).exists() and tasks[0].poll() is None:
        time.sleep(0.02)
    tasks[1].kill()
    killed = time.monotonic()
    _, err = tasks[0].communicate(timeout=120)
    assert time.monotonic() - killed < 60
    assert tasks[0].returncode == 1, err
    assert "lost contact with another rank" in err and "Traceback" not in err
    tasks[1].communicate(timeout=60)


def test_a_process_group_of_one_trains_what_one_process_trains(tmp_path):
    """torchrun with one rank and GROUP_OF_ONE=1 joins a process group all the same (gloo here;
    NCCL on a GPU, tests/test_cuda.py) and goes the way of several ranks: DDP, the collectives,
    the stop agreement. It ends with a single process's weights, bit for bit."""
    from conftest import run_cli

    from resnet_repro.training.distributed import GROUP_OF_ONE

    args = [*ARGS, "schedule.iterations=4"]
    grouped = subprocess.run(
        [*TORCHRUN[:-1], "--nproc_per_node=1", *TRAIN, *args, f"hydra.run.dir={tmp_path / 'g'}"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, GROUP_OF_ONE: "1"},
    )
    assert grouped.returncode == 0, grouped.stderr[-3000:]
    assert "1 rank in a gloo process group" in (tmp_path / "g" / "train.log").read_text()
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["replicas_identical"] is True  # the all-reduces ran
    alone = run_cli(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert alone.returncode == 0, alone.stderr[-3000:]
    a, g = (torch.load(tmp_path / d / "checkpoints" / "last.pt") for d in ("a", "g"))
    assert all(torch.equal(a["model"][k], g["model"][k]) for k in a["model"])
