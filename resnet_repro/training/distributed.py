"""Every torch.distributed call of the project, behind one small object.

A run learns its rank from the launcher's environment: torchrun's (RANK, WORLD_SIZE,
LOCAL_RANK), else SLURM's when srun started one task per device (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID). Without either, the world is one process and nothing here touches
torch.distributed. The loop and the data sources receive the `World`; no globals.
"""

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import HandedOn, UserError

log = logging.getLogger("resnet_repro")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # none | torchrun | slurm
    local_size: int = 1  # ranks on this node (0: the launcher does not say)
    grouped: bool = False  # a process group even alone (GROUP_OF_ONE below)
    # gloo group for the small host-side collectives (stop flags, objects), so that they
    # never wait on the GPU stream; None in a single process.
    control: object = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1 or self.grouped

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; on the tensor's own device (NCCL on GPUs)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any: a stop agreed at the same iteration."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def any_later(self, flag: bool):
        """world.any(flag) without waiting for it: a function that gives the answer. The
        collective runs in gloo's thread meanwhile; every rank must read it (in order)."""
        if not self.distributed:
            return lambda: flag
        t = torch.tensor([int(flag)])
        work = dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control, async_op=True)

        def answer() -> bool:
            work.wait()
            return bool(t.item())

        return answer

    def smallest(self, value: int) -> int:
        """The smallest of the ranks' values, on every rank."""
        if not self.distributed:
            return value
        t = torch.tensor([value])
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.control)
        return int(t.item())

    def broadcast_object(self, obj):
        """Rank 0's obj, on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it may download or build a cache), then the others; an
        error of the user's on rank 0 is raised on every rank instead."""
        if not self.distributed:
            yield
        elif self.is_main:
            try:
                yield
            except UserError as e:
                self.broadcast_object(e)
                raise
            self.broadcast_object(None)
        else:
            error = self.broadcast_object(None)
            if error is not None:
                raise HandedOn(str(error))
            yield

    def share_from_main(self, read):
        """Rank 0's read(), on every rank; an error of the user's there is raised everywhere,
        so that no rank waits for a rank that has stopped."""
        result = None
        if self.is_main:
            try:
                result = read()
            except UserError as e:
                result = e
        result = self.broadcast_object(result)
        if isinstance(result, UserError):
            raise result if self.is_main else HandedOn(str(result))
        return result

    def gather_objects(self, obj) -> list:
        """Every rank's obj, in rank order, on rank 0 (an empty list elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.control)
        return out or []

    def sync_buffers(self, model: nn.Module) -> None:
        """BatchNorm statistics are per rank; rank 0's are the ones evaluated and saved."""
        if self.distributed:
            for b in model.buffers():
                dist.broadcast(b, src=0)

    def replicas_identical(self, model: nn.Module) -> bool:
        """Whether every rank holds the same parameters (a cheap check by checksums)."""
        if not self.distributed:
            return True
        sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        return bool(torch.equal(low, high))

    def wrap(self, model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
        """The module that trains: DistributedDataParallel over ranks, else the model itself.
        Parameters, gradients and the checkpoint stay on the bare model (no `module.` prefix)."""
        if not self.distributed:
            return model
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            # Leave together: a rank that tears its connections down while another is still
            # reading what it sent (an error handed on just before) can make gloo abort that
            # rank. A rank that died is not waited for long.
            try:
                dist.monitored_barrier(group=self.control, timeout=timedelta(seconds=30))
            except RuntimeError:
                pass
            dist.destroy_process_group()


ALONE = World()  # one process, no launcher


# Set to 1 under a launcher, a world of one rank joins a process group all the same, and goes
# the way of several ranks (DDP, the collectives, the control group): so that the NCCL path
# runs on a machine with one GPU (tests/test_cuda.py), and its gloo twin on a CPU.
GROUP_OF_ONE = "RESNET_REPRO_PROCESS_GROUP"


def world_from_env(env=os.environ) -> World:
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_WORLD_SIZE", 0))
        grouped = size == 1 and env.get(GROUP_OF_ONE) == "1"
        return World(rank, size, int(env.get("LOCAL_RANK", 0)), "torchrun", local, grouped=grouped)
    in_step = "SLURM_STEP_ID" in env or "SLURM_STEPID" in env
    if int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env and in_step:
        # SLURM_STEP_ID: inside an srun step. A batch script's own shell has SLURM_NTASKS too,
        # but is one process: there it must train alone, not wait for ranks that never come.
        rank, size = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        return World(rank, size, int(env.get("SLURM_LOCALID", 0)), "slurm", tasks_on_node(env))
    return ALONE


def tasks_on_node(env) -> int:
    """How many tasks of this srun step run on this node (0 where SLURM does not say):
    SLURM_STEP_TASKS_PER_NODE reads as '4(x2),2', node by node of the step."""
    counts = []
    for part in env.get("SLURM_STEP_TASKS_PER_NODE", "").split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            return 0
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    node = int(env.get("SLURM_NODEID", 0))
    return counts[node] if node < len(counts) else 0


def rendezvous_env(world: World, env=os.environ) -> dict[str, str]:
    """MASTER_ADDR and MASTER_PORT for env:// initialisation. torchrun sets them; under srun
    the first node of the job is the master and the port is derived from the job id, so that
    every task computes the same values without talking to the others."""
    out = {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT") if k in env}
    if world.launcher == "slurm":
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "localhost")
        out.setdefault("MASTER_ADDR", first_host(nodes))
        out.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000))
    return out


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[07-09,12],cpu3' -> 'gpu07'."""
    m = re.match(r"([^,\[]+)(?:\[([^\]\-,]+))?", nodelist.strip())
    if not m:
        raise UserError(f"Cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR.")
    return m.group(1) + (m.group(2) or "")


def start(world: World, device: torch.device) -> World:
    """Join the process group (NCCL on GPUs, gloo on CPU); a single process joins nothing."""
    if not world.distributed:
        return world
    os.environ.update(rendezvous_env(world))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend,
            rank=world.rank,
            world_size=world.size,
            timeout=timedelta(minutes=10),
            store=attempt_store(world),
            **({"device_id": device} if device.type == "cuda" else {}),  # NCCL joins now
        )
    except dist.DistBackendError as e:
        if "Duplicate GPU" not in str(e):
            raise
        # tasks of one node that see the same single GPU (srun without --gpus-per-task)
        raise UserError(
            f"rank {world.rank} and another rank of this node were given the same GPU (NCCL: "
            "Duplicate GPU detected): start as many ranks per node as there are GPUs, or give "
            "each task its own (srun --gpus-per-task=1)."
        ) from None
    control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    if world.is_main:
        log.info(f"{world.size} rank{'s' * (world.size > 1)} in a {backend} process group")
    return replace(world, control=control)


def attempt_store(world: World, env=os.environ):
    """Under torchrun, its agent's store seen through a prefix of this attempt: the agent keeps
    one store across the restarts of --max-restarts, and the workers of a restart would
    otherwise read the addresses that the workers before them left there, and fail to connect
    (or wait) to a rank that is gone. None elsewhere: init_process_group reads env://."""
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        world.size,
        is_master=False,
        timeout=timedelta(minutes=10),
    )
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"resnet-train/attempt-{attempt}", agent)


def lost_a_rank(e: RuntimeError) -> bool:
    """Whether an error is a collective that failed because another rank went away: gloo
    notices a closed connection at once. (NCCL does not; under torchrun the agent stops the
    other ranks when one dies, and under srun --kill-on-bad-exit=1 does.)"""
    text = str(e)
    return isinstance(e, dist.DistBackendError) or any(
        s in text for s in ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
    )
