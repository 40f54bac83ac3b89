"""The learning rate as a function of the iteration, as [R1] 4.2 counts it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class StepSchedule:
    """lr, divided by 1/gamma at each milestone; warmup_lr for the first warmup_iterations.

    [R1] 4.2: lr 0.1, divided by 10 at 32k and 48k iterations, stop at 64k. For ResNet-110 the
    lr is 0.01 until training error is below 80% (about 400 iterations), then back to 0.1;
    [R2] uses that warm-up for all its CIFAR runs.
    """

    lr: float
    iterations: int = 64000
    milestones: tuple[int, ...] = (32000, 48000)
    gamma: float = 0.1
    warmup_iterations: int = 0
    warmup_lr: float = 0.01

    def __call__(self, iteration: int) -> float:
        if iteration < self.warmup_iterations:
            return self.warmup_lr
        return self.lr * self.gamma ** sum(iteration >= m for m in self.milestones)

    @classmethod
    def from_epochs(
        cls,
        lr: float,
        epochs: int,
        milestones,
        steps_per_epoch: int,
        batch_size: int,
        reference_batch: int | None = None,
        gamma: float = 0.1,
        warmup_iterations: int = 0,
        warmup_lr: float = 0.01,
    ) -> "StepSchedule":
        """An epoch-counted schedule (ImageNet: 90 epochs, lr / 10 at 30 and 60) in iterations.

        With reference_batch, lr is the rate for that batch size and scales linearly with the
        actual one (0.1 for batch 256, as the standard ImageNet recipe puts it).
        """
        if reference_batch:
            lr = lr * batch_size / reference_batch
        return cls(
            lr,
            epochs * steps_per_epoch,
            tuple(m * steps_per_epoch for m in milestones),
            gamma,
            warmup_iterations,
            warmup_lr,
        )
