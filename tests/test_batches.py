from itertools import islice

import torch
import torch.nn.functional as F

from resnet_repro.data.images import Normalize
from resnet_repro.data.sampling import EpochPlan
from resnet_repro.data.tensors import EvalBatches, TrainBatches, channel_stats
from resnet_repro.training.distributed import ALONE

CPU = torch.device("cpu")
IDENTITY = Normalize(torch.zeros(3), torch.ones(3), CPU)


def train_batches(images, labels, batch_size, seed, augment=True, world=ALONE):
    plan = EpochPlan(len(labels), batch_size, seed, world)
    return TrainBatches(images, labels, plan, IDENTITY, CPU, augment)


def dataset(n=40):
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n)


def test_steps_per_epoch_as_the_paper_counts():
    images, labels = torch.zeros(50000, 3, 1, 1, dtype=torch.uint8), torch.zeros(50000).long()
    assert train_batches(images, labels, 128, 0).steps_per_epoch == 391


def test_without_augmentation_batches_are_the_images_reshuffled():
    images, labels = dataset()
    batches = train_batches(images, labels, 16, 0, augment=False)
    seen = torch.cat([y for _, y in islice(batches.iterate(), 3)])  # 16 + 16 + 8: one epoch
    assert sorted(seen.tolist()) == list(range(40)) and seen.tolist() != list(range(40))
    x, y = next(batches.iterate())
    assert torch.equal(x, images[y].float())


def test_augmentation_is_a_padded_crop_and_flip_of_the_right_image():
    images, labels = dataset()
    batches = train_batches(images, labels, 40, 3)
    x, y = next(batches.iterate())
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.float32
    plan = batches.epoch_plan(0)
    padded = F.pad(images, (4, 4, 4, 4))
    for i in range(40):
        dy, dx = int(plan["dy"][i]), int(plan["dx"][i])
        expected = padded[y[i], :, dy : dy + 32, dx : dx + 32]
        if plan["flip"][i]:
            expected = expected.flip(-1)
        assert torch.equal(x[i], expected.float())
    # It really moves and flips: offsets vary over 0..8, both flip states occur, and most
    # images differ from the original.
    assert len(set(plan["dx"].tolist())) > 4 and 0 < int(plan["flip"].sum()) < 40
    changed = (x != images[y].float()).flatten(1).any(1)
    assert changed.sum() > 30
    # Shifted-in border pixels are zero (zero padding of the raw image).
    assert (x == 0).any()


def test_resuming_at_any_iteration_gives_the_same_batches():
    images, labels = dataset(50)
    batches = train_batches(images, labels, 16, 1)  # 4 steps an epoch
    straight = list(islice(batches.iterate(0), 10))
    for k in (3, 4, 5):  # before, at and after an epoch boundary
        resumed = list(islice(batches.iterate(k), 10 - k))
        for (xa, ya), (xb, yb) in zip(straight[k:], resumed, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_seed = train_batches(images, labels, 16, 2)
    assert not torch.equal(next(other_seed.iterate())[1], straight[0][1])


def test_channel_stats_and_normalize():
    images, _ = dataset()
    mean, std = channel_stats(images)
    x = images.double()
    assert torch.allclose(mean.double(), x.mean(dim=(0, 2, 3)), atol=1e-3)
    assert torch.allclose(
        std.double(), x.permute(1, 0, 2, 3).flatten(1).std(1, correction=0), atol=1e-3
    )
    normalized = Normalize(mean, std, CPU)(images)
    assert normalized.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (normalized.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_eval_batches_are_plain_and_in_order():
    images, labels = dataset()
    split = EvalBatches(images, labels, 16, IDENTITY, CPU)
    for _ in range(2):  # the same batches at every evaluation
        out = list(split)
        assert [len(y) for _, y in out] == [16, 16, 8]
        assert torch.equal(torch.cat([x for x, _ in out]), images.float())
