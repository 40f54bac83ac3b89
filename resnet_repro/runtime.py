"""The device, threads and numeric precision a run uses."""

import contextlib
import signal

import torch

from .errors import UserError

PRECISIONS = ("fp32", "amp")


def select_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.device={device} but PyTorch sees no CUDA GPU on this machine. "
                "Use trainer.device=cpu (or auto, which picks a GPU when there is one)."
            )
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise UserError(f"trainer.device={device!r} is unknown; use auto, cpu, cuda or cuda:N.")


def configure(device: torch.device, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device, precision: str):
    """fp32, or mixed precision: fp16 on CUDA (with a GradScaler), bf16 on CPU (no scaler)."""
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision={precision!r} is unknown; use fp32 or amp.")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    if precision == "amp" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


class StopFlag:
    """Turns Ctrl-C and SIGTERM (SLURM's preemption notice) into a request to stop cleanly:
    the loop saves a checkpoint at the end of the current iteration. A second Ctrl-C quits."""

    def __init__(self):
        self.requested = False
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
