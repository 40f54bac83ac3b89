"""Which images each step trains on: one plan for both pipelines (tensors and image folders).

An epoch's order comes from a generator seeded by (seed, epoch), so iteration k sees the same
images whether or not the run was resumed. data.batch_size is the global batch: each rank
takes its contiguous share of every batch of that one order, so the images a step sees, and
exact resumption, do not depend on the number of ranks either.
"""

from collections.abc import Iterator
from typing import Protocol

import torch

from ..errors import UserError
from ..training.distributed import World


class EpochPlan:
    def __init__(self, n: int, batch_size: int, seed: int, world: World):
        if batch_size % world.size:
            raise UserError(
                f"data.batch_size={batch_size} is the global batch and must divide evenly over "
                f"the {world.size} ranks; use a multiple of {world.size} (such as "
                f"{batch_size - batch_size % world.size or world.size})."
            )
        tail = n % batch_size
        if 0 < tail < world.size:
            raise UserError(
                f"The last batch of each epoch holds {tail} of the {n} training images, too few "
                f"for {world.size} ranks; change data.batch_size (or data.val_split) so that "
                f"{n} images leave at least {world.size} in the last batch, or none."
            )
        self.n, self.batch_size, self.seed, self.world = n, batch_size, seed, world
        self.steps_per_epoch = -(-n // batch_size)  # 391 for 50k images at 128, as [R1]
        self.rank_batch = batch_size // world.size  # the size of this rank's full slices

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(mix_seed(self.seed, epoch))

    def order(self, g: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.n, generator=g)

    def steps(self, start_iteration: int = 0) -> Iterator[tuple[int, int, int]]:
        """(epoch, lo, hi) for every iteration from start_iteration on, forever: this rank's
        positions lo:hi in the epoch's order."""
        epoch, step = divmod(start_iteration, self.steps_per_epoch)
        while True:
            for s in range(step * self.batch_size, self.n, self.batch_size):
                yield (epoch, *self.share(s, min(s + self.batch_size, self.n)))
            epoch, step = epoch + 1, 0

    def share(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's part of positions start:stop, split as evenly as possible."""
        part = shard(stop - start, self.world)
        return start + part.start, start + part.stop


class Batches(Protocol):
    """A source of this rank's training batches (data.TrainBatches, FolderBatches): the plan's,
    resumable at any iteration. The training loop takes any such source."""

    plan: EpochPlan
    steps_per_epoch: int

    def iterate(self, start_iteration: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def mix_seed(seed: int, stream: int) -> int:
    """The seed of one of a run's random streams (an epoch's order, a rank's dropout masks):
    different for every (seed, stream) a run can have."""
    return seed * 1_000_003 + stream


def common_batches(n: int, batch_size: int, world: World) -> int:
    """How many evaluation batches every rank's shard of n images has (the smallest shard's)."""
    return -(-(n // world.size) // batch_size)


def shard(n: int, world: World) -> range:
    """This rank's contiguous part of an evaluation split: every image counted exactly once."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return range(lo, lo + base + (world.rank < extra))
