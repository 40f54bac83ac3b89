"""The training loop. It knows nothing of Hydra: it gets objects and plain values."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .batches import TrainBatches
from .records import RunRecord
from .schedule import StepSchedule


class Interrupted(Exception):
    """A stop was asked for (Ctrl-C, SIGTERM); the checkpoint of `iteration` has been saved."""

    def __init__(self, iteration: int):
        super().__init__(iteration)
        self.iteration = iteration


@dataclass
class Training:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: object  # a reusable context manager: nullcontext or torch.autocast
    schedule: StepSchedule
    batches: TrainBatches
    eval_sets: dict[str, Iterable]  # "val"/"test" -> its batches, in order
    record: RunRecord
    save: Callable[[int], None]  # writes the checkpoint of an iteration
    stop_requested: Callable[[], bool]
    log_every: int
    eval_every: int
    ckpt_every: int


def train(t: Training, start: int) -> dict:
    """Train from iteration `start` to the end of the schedule; return the last record."""
    total, last = t.schedule.iterations, {}
    window = Window()
    stream = t.batches.iterate(start)
    t.model.train()
    for it in range(start + 1, total + 1):  # `it` counts iterations done, as [R1] does
        lr = t.schedule(it - 1)
        for group in t.optimizer.param_groups:
            group["lr"] = lr
        x, y = next(stream)
        loss, logits = train_step(t, x, y)
        window.add(loss, logits, y)
        t.record.step(it, lr)

        evaluating = it % t.eval_every == 0 or it == total
        if evaluating or it % t.log_every == 0:
            last = {"iteration": it, "epoch": round(it / t.batches.steps_per_epoch, 3), "lr": lr}
            last |= window.flush()
            if evaluating:
                for name, split in t.eval_sets.items():
                    last |= evaluate(t.model, split, t.autocast, prefix=name)
                window.restart_clock()  # images/s counts training only
            t.record.write(last)

        stopping = t.stop_requested()
        if stopping or it % t.ckpt_every == 0 or it == total:
            t.save(it)
        if stopping:
            raise Interrupted(it)
    return last


def train_step(t: Training, x: torch.Tensor, y: torch.Tensor):
    with t.autocast:
        logits = t.model(x)
        loss = F.cross_entropy(logits, y)
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is None:
        loss.backward()
        t.optimizer.step()
    else:
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
    return loss.detach(), logits.detach()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, autocast, prefix: str) -> dict:
    """Loss and top-1 error (%) over a split; top-5 error too when there are over 10 classes
    (ImageNet, CIFAR-100). A 5-D batch holds several crops of each image ([R1]'s 10-crop
    testing): their softmax outputs are averaged."""
    model.eval()
    loss_sum, wrong, wrong5, n = 0.0, 0, 0, 0
    for x, y in batches:
        with autocast:
            logits = model(x.flatten(0, 1) if x.dim() == 5 else x).float()
        if x.dim() == 5:
            logp = logits.view(*x.shape[:2], -1).softmax(-1).mean(1).log()
        else:
            logp = logits.log_softmax(-1)
        loss_sum += F.nll_loss(logp, y, reduction="sum")
        top = logp.topk(min(5, logp.shape[1]), dim=1).indices
        wrong += (top[:, 0] != y).sum()
        wrong5 += (top != y[:, None]).all(1).sum()
        n += len(y)
    model.train()
    result = {f"{prefix}_loss": float(loss_sum) / n, f"{prefix}_error": 100.0 * float(wrong) / n}
    if logp.shape[1] > 10:
        result[f"{prefix}_top5_error"] = 100.0 * float(wrong5) / n
    return result


class Window:
    """Training loss and error since the last record, summed on the device: reading them
    forces a host-device sync, so that happens only when a record is written."""

    def __init__(self):
        self.loss_sum, self.wrong, self.n = 0.0, 0, 0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum = self.loss_sum + loss.float() * len(y)
        self.wrong = self.wrong + (logits.argmax(1) != y).sum()
        self.n += len(y)

    def flush(self) -> dict:
        record = {
            "train_loss": float(self.loss_sum) / self.n,
            "train_error": 100.0 * float(self.wrong) / self.n,
        }
        record["images_per_sec"] = self.n / (time.perf_counter() - self.start)
        self.__init__()
        return record
