"""The GPU paths' decisions, checked on the CPU: torch.cuda's answers are stood in for, so
that each decision (which GPU, which precision, which optimizer, which random state) is
tested where no GPU is. What needs a real GPU to run is in test_cuda.py."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from resnet_repro.errors import UserError
from resnet_repro.training import checkpoint, distributed, runtime
from resnet_repro.training.distributed import ALONE, World, tasks_on_node, world_from_env
from resnet_repro.training.files import run_name
from resnet_repro.training.loop import evaluate

GPU = torch.device("cuda", 0)  # a choice only: nothing is put on it


@pytest.fixture
def gpus(monkeypatch):
    """A machine that shows n GPUs of compute capability cc."""

    def show(n: int, cc=(9, 0)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cc)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation

    return show


def torchrun(rank: int, size: int) -> World:
    return World(rank, size, rank, "torchrun", size)


def test_each_rank_takes_the_gpu_of_its_local_rank(gpus):
    gpus(4)
    assert runtime.select_device("auto", torchrun(3, 4)) == torch.device("cuda", 3)
    assert runtime.select_device("cuda", ALONE) == torch.device("cuda", 0)
    assert runtime.select_device("cuda:2", ALONE) == torch.device("cuda", 2)
    gpus(1)  # srun --gpus-per-task=1: each task sees its own GPU as cuda:0
    assert runtime.select_device("cuda", World(5, 8, 5, "slurm", 8)) == torch.device("cuda", 0)


@pytest.mark.parametrize(
    "device, world, message",
    [
        ("cuda:1", torchrun(0, 2), "would put every rank on one GPU"),
        ("cuda:4", ALONE, r"sees 4 GPU\(s\), cuda:0 to cuda:3"),
        ("cuda", torchrun(0, 8), "8 ranks on this node, but only 4 GPUs visible"),
        ("cuda", World(5, 6, 5, "slurm", 0), "6 ranks on this node, but only 4"),
        ("cuda", torchrun(1, 2), "2 ranks on this node, but only 1 GPUs visible"),
        ("cuda:x", ALONE, "is unknown; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_device_layout_that_cannot_work_is_a_user_error(gpus, device, world, message):
    gpus(1 if "only 1" in message else 4)
    with pytest.raises(UserError, match=message):
        runtime.select_device(device, world)


def test_ranks_on_a_node_are_read_from_the_launchers():
    env = {"RANK": "1", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"}
    assert world_from_env(env).local_size == 8
    step = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "9", "SLURM_NTASKS": "10", "SLURM_LOCALID": "1"}
    for per_node, node, n in [
        ("4(x2),2", "2", 2),
        ("4(x2),2", "1", 4),
        ("8", "0", 8),
        ("", "0", 0),
    ]:
        env = step | {"SLURM_STEP_TASKS_PER_NODE": per_node, "SLURM_NODEID": node}
        assert tasks_on_node(env) == n
        assert world_from_env(env).local_size == n


def test_nccl_refusing_two_ranks_on_one_gpu_is_said_so(monkeypatch):
    def nccl(*args, **kwargs):
        raise dist.DistBackendError(
            "ncclInvalidUsage: Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1a0"
        )

    monkeypatch.setattr(dist, "init_process_group", nccl)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    with pytest.raises(UserError, match="rank 1 and another rank of this node were given the same"):
        distributed.start(World(1, 2, 0, "slurm", 0), GPU)


def test_bf16_only_where_the_gpu_computes_it(gpus):
    for cc, want in [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")]:
        gpus(1, cc)  # V100, T4 (bf16 emulated: is_bf16_supported() says True), A100, H100
        assert runtime.choose_precision(GPU, "auto") == want


def test_sync_bn_is_not_compiled_by_auto():
    long = runtime.COMPILE_AFTER["cuda"]
    assert runtime.choose_compile("auto", GPU, long, checkpointing=False)
    assert not runtime.choose_compile("auto", GPU, long, checkpointing=False, sync_bn=True)
    assert runtime.choose_compile(True, GPU, long, checkpointing=False, sync_bn=True)  # asked


def test_the_gpu_optimizer_takes_the_scaler_without_a_sync():
    params = [nn.Parameter(torch.randn(3))]
    gpu_sgd = runtime.sgd(params, GPU, lr=0.1, momentum=0.9)
    # GradScaler.step hands a fused optimizer the scale and inf flag on the device; for any
    # other it reads found_inf back to the host (.item()) every step.
    assert gpu_sgd.defaults["fused"] and getattr(gpu_sgd, "_step_supports_amp_scaling", False)
    assert not runtime.sgd(params, torch.device("cpu"), lr=0.1).defaults["fused"]


def resumable(device):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return model, runtime.sgd(model.parameters(), device, lr=0.1, momentum=0.9)


def test_a_resumed_optimizer_keeps_this_devices_implementation():
    model, gpu_sgd = resumable(GPU)
    ckpt = {"model": model.state_dict(), "optimizer": gpu_sgd.state_dict(), "iteration": 5}
    ckpt["rng"] = checkpoint.rng_state(torch.device("cpu"))
    model, cpu_sgd = resumable(torch.device("cpu"))
    checkpoint.restore(ckpt, model, cpu_sgd, None, ALONE, torch.device("cpu"))
    assert not cpu_sgd.param_groups[0]["fused"]  # the GPU's fused=True stayed in the file


def test_only_the_runs_own_gpu_state_is_saved_and_restored(monkeypatch):
    """Saved with 8 GPUs visible, resumed with 4: before, set_rng_state_all(8 states) raised
    IndexError. Now one state, the run's own GPU's, is saved and taken."""
    taken = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((16,), device.index))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: taken.append((s, device)))
    state = checkpoint.rng_state(torch.device("cuda", 3))
    assert torch.equal(state["cuda"], torch.full((16,), 3))
    checkpoint.set_rng_state(state, torch.device("cuda", 1))
    assert len(taken) == 1 and taken[0][1] == torch.device("cuda", 1)
    old = {"torch": torch.get_rng_state(), "cuda": [torch.full((16,), i) for i in range(8)]}
    checkpoint.set_rng_state(old, torch.device("cuda", 2))  # an earlier version's file
    assert torch.equal(taken[1][0], torch.full((16,), 2))
    assert checkpoint.rng_state(torch.device("cpu"))["cuda"] is None


def test_a_resumption_on_another_world_size_gives_each_rank_its_own_stream():
    model, sgd = resumable(torch.device("cpu"))
    saved = checkpoint.rng_state(torch.device("cpu"))
    ckpt = {"model": model.state_dict(), "optimizer": sgd.state_dict(), "iteration": 5}
    ckpt |= {"rng": saved, "rng_ranks": [saved]}  # one rank saved it
    draws = []
    for rank in (0, 1, 2):
        checkpoint.restore(ckpt, model, sgd, None, World(rank, 3), torch.device("cpu"))
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    torch.set_rng_state(saved["torch"])
    assert torch.equal(draws[0], torch.rand(4))  # rank 0 goes on exactly where it stopped


class Recorder(World):
    """A rank whose peers evaluated two images between them, wrongly, at loss 1."""

    def all_reduce_sum(self, t):
        self.__dict__.setdefault("devices", []).append(t.device)
        return t + t.new_tensor([2.0, 2, 2, 2])


def test_evaluation_sums_on_the_models_device_even_with_an_empty_shard():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    world = Recorder()
    x, y = torch.randn(2, 3, 2, 2), torch.tensor([0, 1])
    evaluate(model, [(x, y)], torch.autocast("cpu", enabled=False), "val", world)
    empty = evaluate(model, [], torch.autocast("cpu", enabled=False), "val", world)
    assert empty == {"val_loss": 1.0, "val_error": 100.0}
    assert world.devices == [next(model.parameters()).device] * 2


def test_a_launchers_restart_finds_the_same_run_directory():
    clock = "%Y-%m-%d/%H-%M-%S"
    assert run_name(clock, "model=resnet56", {"SLURM_JOB_ID": "77"}) == "slurm-77/model=resnet56"
    array = {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}
    assert run_name(clock, "", array) == "slurm-77_3/defaults"
    assert run_name(clock, None, {"SLURM_JOB_ID": "77"}) == "slurm-77"  # a sweep's folder
    long = run_name(clock, "x=" + "y" * 200, {"SLURM_JOB_ID": "7"})
    assert len(long) < 40 and long == run_name(clock, "x=" + "y" * 200, {"SLURM_JOB_ID": "7"})
    assert run_name(clock, "", {"TORCHELASTIC_RUN_ID": "abc"}) == "torchrun-abc"
    # torchrun's static rendezvous (several nodes, no --rdzv-id): the agent's start time
    agent = run_name(clock, "", {"TORCHELASTIC_RUN_ID": "none"})
    assert agent == run_name(clock, "", {"TORCHELASTIC_RUN_ID": "none"})
