"""The training loop. It knows nothing of Hydra: it gets objects and plain values."""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import Batches
from ..errors import UserError
from . import checkpoint
from .distributed import ALONE, World
from .records import NullRecord, RunRecord
from .schedule import StepSchedule


class Interrupted(Exception):
    """A stop was asked for (Ctrl-C, SIGTERM, preemption); the checkpoint of `iteration` has
    been saved."""

    def __init__(self, iteration: int):
        super().__init__(iteration)
        self.iteration = iteration


class EvaluationStopped(Exception):
    """A stop was asked for during an evaluation, which was left unfinished."""


class Diverged(Exception):
    """The training loss (or the weights) stopped being finite at `iteration`; no checkpoint was
    saved from then on."""

    def __init__(self, iteration: int, what: str = "the training loss is"):
        super().__init__(f"{what} not finite at iteration {iteration}")
        self.iteration = iteration


@dataclass
class Training:
    model: nn.Module  # the bare model: evaluated and saved
    train_model: nn.Module  # what trains: the model, or DistributedDataParallel around it
    compiled: Callable | None  # torch.compile(train_model), used for the full-size batches
    world: World
    device: torch.device
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: object  # a reusable context manager: nullcontext or torch.autocast
    schedule: StepSchedule
    batches: Batches
    eval_sets: dict[str, Iterable]  # "val"/"test" -> its batches, in order
    record: RunRecord | NullRecord  # NullRecord off rank 0
    ckpt_dir: Path
    identity: dict  # the experiment, saved in each checkpoint (run.set_up)
    stop_requested: Callable[[], bool]
    log_every: int
    eval_every: int
    ckpt_every: int
    start: int = 0  # the iteration it starts from (resumes after)
    wall_before: float = 0.0  # seconds trained before this leg of the run
    pending: dict | None = None  # a record whose evaluation a stop cut short: done first
    started: float = field(default_factory=time.time)

    def wall_time(self) -> float:
        return self.wall_before + time.time() - self.started


def save(t: Training, iteration: int, pending: dict | None = None) -> None:
    checkpoint.save(
        t.ckpt_dir,
        iteration,
        t.model,
        t.optimizer,
        t.scaler,
        t.identity,
        t.wall_time(),
        t.world,
        t.device,
        pending,
    )


def train(t: Training, start: int) -> dict:
    """Train from iteration `start` to the end of the schedule; return the last record."""
    total, last = t.schedule.iterations, {}
    window, asked = Window(), None  # asked: this rank's stop request, being agreed
    if t.world.any(t.stop_requested()):  # asked while the run started: nothing more to save
        raise Interrupted(start)
    if t.pending:  # the evaluation a stop cut short
        last = evaluated(t, window, t.pending)
        t.record.write(last)
    stream = t.batches.iterate(start)
    t.model.train()
    for it in range(start + 1, total + 1):  # `it` counts iterations done, as [R1] does
        lr = t.schedule(it - 1)
        for group in t.optimizer.param_groups:
            group["lr"] = lr
        try:
            x, y = next(stream)
        except UserError as e:  # a file of the data set that cannot be read
            if t.world.distributed or it - 1 == start:
                raise  # (under DDP the other ranks wait in a collective: no checkpoint)
            check_finite(t, window, it - 1)
            save(t, it - 1)
            raise UserError(f"{e} Iteration {it - 1} was saved: then resume.") from None
        loss, logits = train_step(t, x, y)
        window.add(loss, logits, y, it)
        t.record.step(it, lr)

        evaluating = it % t.eval_every == 0 or it == total
        if evaluating or it % t.log_every == 0:
            last = {"iteration": it, "epoch": round(it / t.batches.steps_per_epoch, 3), "lr": lr}
            first_bad = window.first_bad  # read only if the loss turns out not finite
            last |= window.flush(t.world)
            if not math.isfinite(last["train_loss"]):  # the same reduced value on every rank
                raise Diverged(t.world.smallest(int(first_bad) or it))
            if evaluating:
                last = evaluated(t, window, last)
                window.restart_clock()  # images/s counts training only
            t.record.write(last)

        # Every rank stops at the same iteration. Agreeing waits for every rank (0.2 ms on gloo,
        # over 1% of a GPU step; docs/speed.md), so each iteration starts the agreement on its
        # own answer and reads the one started an iteration before, done by now. Alone, and at
        # the last iteration, the answer is read at once.
        agreed = asked() if asked else False
        asked = t.world.any_later(t.stop_requested())
        stopping = agreed or ((it == total or not t.world.distributed) and asked())
        if stopping or it % t.ckpt_every == 0 or it == total:
            check_finite(t, window, it)
            save(t, it)
        if stopping:
            raise Interrupted(it)
    return last


def evaluated(t: Training, window: "Window", record: dict) -> dict:
    """The record with the evaluation of its iteration. A stop during the evaluation (it can take
    minutes, where preemption leaves seconds) is honoured at the next batch: the checkpoint of
    the iteration is saved with the record, and the evaluation is done when the run resumes."""
    try:
        return record | evaluate_all(t.model, t.eval_sets, t.autocast, t.world, t.stop_requested)
    except EvaluationStopped:
        check_finite(t, window, record["iteration"])
        save(t, record["iteration"], pending=record)
        raise Interrupted(record["iteration"]) from None


def check_finite(t: Training, window: "Window", it: int) -> None:
    """Before a checkpoint: a loss that was not finite since the last record, or weights (or
    BatchNorm statistics) that are not, stop the run instead, so that the checkpoint on disk
    stays the last finite one. (Checked here and at each record, not at each step: that would
    wait for the device every step.)"""
    first_bad = t.world.smallest(window.first_nonfinite() or it + 1)
    if first_bad <= it:
        raise Diverged(first_bad)
    state = [v for v in t.model.state_dict().values() if v.is_floating_point()]
    if t.world.any(not torch.stack([v.isfinite().all() for v in state]).all()):  # BN stats too
        raise Diverged(it, "the weights are")


def train_step(t: Training, x: torch.Tensor, y: torch.Tensor):
    # The compiled model is specialised to the full batch; the shorter last batch of an epoch
    # runs eagerly rather than triggering a second compilation.
    full = t.compiled is not None and len(x) == t.batches.plan.rank_batch
    with t.autocast:
        logits = (t.compiled if full else t.train_model)(x)
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


def evaluate_all(model: nn.Module, eval_sets: dict, autocast, world: World, stop=None) -> dict:
    world.sync_buffers(model)  # rank 0's BatchNorm statistics, as saved in the checkpoint
    out = {}
    for name, split in eval_sets.items():
        out |= evaluate(model, split, autocast, prefix=name, world=world, stop=stop)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable, autocast, prefix: str, world=ALONE, stop=None
) -> dict:
    """Loss and top-1 error (%) over a split; top-5 error too when there are over 10 classes
    (ImageNet, CIFAR-100). A 5-D batch holds several crops of each image ([R1]'s 10-crop
    testing): their softmax outputs are averaged. Each rank evaluates its shard; the sums are
    added over ranks, so every image counts once and the error is the same on any world size."""
    model.eval()
    # The all-reduce runs on the model's device (NCCL takes GPU tensors only), also on a rank
    # whose shard is empty.
    device = next(model.parameters(), torch.empty(0)).device
    loss_sum, wrong, wrong5, n, classes = 0.0, 0, 0, 0, 0
    # stop(): asked to stop? Agreed before each of the batches every rank's shard has (a
    # blocking all-reduce, small beside a batch of a thousand images); then EvaluationStopped.
    agree_for = batches.common_batches if stop else 0  # data.EvalBatches, FolderEval
    for i, (x, y) in enumerate(batches):
        if i < agree_for and world.any(stop()):
            model.train()
            raise EvaluationStopped
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
        n, classes = n + len(y), logp.shape[1]
    model.train()
    sums = torch.tensor([float(loss_sum), float(wrong), float(wrong5), n], dtype=torch.float64)
    loss_sum, wrong, wrong5, n = world.all_reduce_sum(sums.to(device)).tolist()
    result = {f"{prefix}_loss": loss_sum / n, f"{prefix}_error": 100.0 * wrong / n}
    if classes > 10:
        result[f"{prefix}_top5_error"] = 100.0 * wrong5 / n
    return result


class Window:
    """Training loss and error since the last record, summed on the device: reading them
    forces a host-device sync, so that happens only when a record is written."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """An empty window, its clock started now."""
        self.sums, self.n = 0, 0  # [loss sum, wrong] on the device after the first add
        self.first_bad = None  # the first iteration whose loss was not finite (0: none)
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, it: int) -> None:
        wrong = (logits.argmax(1) != y).sum()
        self.sums = self.sums + torch.stack([loss.double() * len(y), wrong.double()])
        self.n += len(y)
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.int64, device=loss.device)
        bad = ~torch.isfinite(loss) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, it, self.first_bad)

    def first_nonfinite(self) -> int:
        """The first iteration of the window whose loss was not finite, else 0 (a device sync)."""
        return 0 if self.first_bad is None else int(self.first_bad)

    def flush(self, world: World) -> dict:
        """The window's numbers over all ranks: one host-device sync and one all-reduce."""
        sums = torch.cat([self.sums, self.sums.new_tensor([self.n])])
        loss_sum, wrong, n = world.all_reduce_sum(sums).tolist()
        record = {"train_loss": loss_sum / n, "train_error": 100.0 * wrong / n}
        record["images_per_sec"] = n / (time.perf_counter() - self.start)
        self.reset()
        return record
