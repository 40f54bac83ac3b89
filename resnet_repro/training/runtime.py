"""The device, threads and numeric precision a run uses."""

import contextlib
import platform
import re
import signal
import sys

import torch

from ..errors import UserError
from .distributed import ALONE, World

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# `compile: auto` compiles GPU runs of at least this many iterations: compiling takes a minute
# or so and saves a fraction of each (short) GPU step, so the papers' 64k-iteration schedules
# are compiled and tests and short trials start at once. Not on CPUs: there, end to end, the
# compiled step was measured no faster than the eager one (docs/speed.md), whatever the length.
COMPILE_AFTER = {"cuda": 20_000}
# Nor nets deeper than this: compiling ResNet-110 took 45 s here, ResNet-1202 14 minutes (after
# failing with a RecursionError at Python's default limit), and then it ran slower than eager.
COMPILE_MAX_DEPTH = 200


def select_device(device: str, world: World = ALONE) -> torch.device:
    """The training device; under a launcher, the GPU of this rank's local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise UserError(f"trainer.device={device!r} is unknown; use auto, cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise UserError(
            f"trainer.device={device} but PyTorch sees no CUDA GPU on this machine. "
            "Use trainer.device=cpu (or auto, which picks a GPU when there is one)."
        )
    count = torch.cuda.device_count()
    if m.group(1) is not None:
        if world.distributed:
            raise UserError(
                f"trainer.device={device} would put every rank on one GPU. Under {world.launcher} "
                "use trainer.device=cuda (or auto): each rank takes the GPU of its local rank."
            )
        if int(m.group(1)) >= count:
            raise UserError(
                f"trainer.device={device}, but this process sees {count} GPU(s), cuda:0 to "
                f"cuda:{count - 1} (CUDA_VISIBLE_DEVICES may hide others)."
            )
        return torch.device(device)
    if count == 1 and world.launcher == "slurm":
        # a task bound to its own GPU (srun --gpus-per-task=1) sees it as cuda:0; torchrun
        # never binds its workers so, and tasks that share one GPU are NCCL's to refuse
        return torch.device("cuda", 0)
    ranks_here = max(world.local_size, world.local_rank + 1)
    if ranks_here > count:
        raise UserError(
            f"{ranks_here} ranks on this node, but only {count} GPUs visible: NCCL needs a GPU "
            f"for each rank. Start {count} per node (torchrun --nproc-per-node={count}, srun "
            "--ntasks-per-node), or give each task its own GPU (srun --gpus-per-task=1)."
        )
    return torch.device("cuda", world.local_rank)


def configure(device: torch.device, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        # The current device: where pinned-memory threads, autocast's checks and any tensor
        # made without a device go (cuda:N on one process, LOCAL_RANK's GPU under a launcher).
        torch.cuda.set_device(device)
        # Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
        torch.backends.cudnn.benchmark = True


def choose_precision(device: torch.device, precision: str) -> str:
    """auto: bf16 autocast on GPUs that have it (fp32's range, no loss scaling), fp32 on CPUs
    and older GPUs. Whether bf16 is faster on a CPU depends on the CPU: ask for it."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            "trainer.precision=fp16 is for CUDA GPUs; on a CPU use bf16 (or fp32, the default)."
        )
    if precision == "auto":
        # Compute capability 8 (Ampere) on: bf16 tensor cores. torch.cuda.is_bf16_supported()
        # counts emulation too and says yes on a V100 or T4, where bf16 is slower than fp32.
        cuda_bf16 = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
        return "bf16" if cuda_bf16 else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """A reusable context manager for the forward pass: nothing for fp32, else autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def sgd(params, device: torch.device, **optim) -> torch.optim.SGD:
    """[R1]'s optimizer. On a GPU the fused implementation: one kernel for all parameters, and
    it takes a GradScaler's scale and inf check on the device, where the default one reads
    them back with .item() every step (a host-device sync)."""
    optim.setdefault("fused", True if device.type == "cuda" else None)
    return torch.optim.SGD(params, **optim)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    if precision == "fp16":
        return torch.amp.GradScaler(device.type)
    return None


def choose_compile(
    setting,
    device: torch.device,
    iterations: int,
    checkpointing: bool,
    depth: int = 0,
    sync_bn: bool = False,
) -> bool:
    if checkpointing:
        if setting is True:
            raise UserError(
                "trainer.compile=true cannot be combined with model.checkpointing=true (the "
                "recomputation must not update BatchNorm statistics twice, which torch.compile "
                "cannot be told); set trainer.compile=false or auto."
            )
        return False
    if setting == "auto":
        # Not with SyncBatchNorm: it breaks the graph at every BatchNorm layer, and DDP with
        # SyncBatchNorm under torch.compile has open failures upstream.
        long_run = device.type in COMPILE_AFTER and iterations >= COMPILE_AFTER[device.type]
        return long_run and depth <= COMPILE_MAX_DEPTH and not sync_bn
    return setting


def compile_model(model: torch.nn.Module, depth: int):
    # Inductor walks the graph recursively: a 1202-layer net needs more than Python's default
    # recursion limit of 1000 frames.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 50 * depth))
    return torch.compile(model)


def hardware(device: torch.device) -> dict:
    """What the run ran on, for summary.json: speeds mean little without it."""
    facts = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    facts["cpu_bf16"] = cpu_has_bf16()
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX-512 BF16), where bf16 autocast
    can be much faster than fp32 (docs/speed.md); elsewhere it is emulated, and slower."""
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class StopFlag:
    """Turns the stop signals (trainer.stop_signals: Ctrl-C; SIGTERM, which SLURM sends before
    it kills a job; SIGUSR1, what `sbatch --signal=USR1@90` asks for before preemption or the
    time limit; SIGUSR2, which submitit asks for) into a request to stop cleanly: the loop saves
    a checkpoint at the end of the current iteration. A second Ctrl-C quits at once. A handler
    that was there before (submitit requeues the job from its own) is called after the
    checkpoint is saved: see `forward`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self, signals=SIGNALS):
        self.received = None
        self.previous = {s: signal.signal(s, self.handle) for s in signals}

    def handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def forward(self) -> None:
        """Hand the signal on to the handler installed before ours, if it was a function."""
        handler = self.previous.get(self.received)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)
