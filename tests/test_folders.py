"""The image-folder pipeline (ImageNet's layout) on a small generated folder of JPEGs."""

from itertools import islice

import pytest
import torch
from fixtures import UNREADABLE, damage, write_jpeg_folder
from PIL import Image

from resnet_repro.data import class_count, load_dataset
from resnet_repro.data.folders import FolderBatches, FolderEval
from resnet_repro.data.images import MEAN, STD, Normalize
from resnet_repro.data.sampling import EpochPlan
from resnet_repro.errors import UserError
from resnet_repro.training.distributed import World
from resnet_repro.training.loop import evaluate

CPU = torch.device("cpu")
NORMALIZE = Normalize(MEAN, STD, CPU)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"))


def load(folder, **kwargs):
    args = dict(root=str(folder), crop_size=32, resize_size=36, workers=0) | kwargs
    return load_dataset("imagefolder", **args)


def test_reads_classes_and_images(folder):
    data = load(folder)
    assert class_count("imagefolder", root=str(folder)) == data.num_classes == 3
    assert len(data.train) == 18 and len(data.val) == 9 and data.image_size == 32
    x, y = data.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 0
    x, _ = data.val[0]
    assert x.shape == (3, 32, 32)


def test_train_crops_are_random_and_val_is_fixed(folder):
    data = load(folder)
    assert not torch.equal(data.train[0][0], data.train[0][0])
    assert torch.equal(data.val[0][0], data.val[0][0])
    scale = load(folder, scale_aug=True, scale_range=[36, 60])  # [R1]'s scale augmentation
    assert scale.train[0][0].shape == (3, 32, 32)
    no_aug = load(folder, augment=False)
    assert torch.equal(no_aug.train[0][0], no_aug.train[0][0])


def test_ten_crop_evaluation(folder):
    data = load(folder, ten_crop=True, loader="transforms")  # data.val's crops, bit for bit
    x, _ = data.val[0]
    assert x.shape == (10, 3, 32, 32)
    # The last is the centre crop of the mirrored image (one pixel off on an odd width).
    mirror = x[4].flip(-1)
    assert any(
        torch.equal(x[9][..., a : 32 - b], mirror[..., b : 32 - a])
        for a, b in ((0, 0), (1, 0), (0, 1))
    )
    split = FolderEval(data, 40, NORMALIZE, CPU, World())  # 40 crops: 4 images
    xb, yb = next(iter(split))
    assert xb.shape == (4, 10, 3, 32, 32) and xb.dtype == torch.float32

    class Mean(torch.nn.Module):  # a "model" whose answer depends on the crop
        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3)), x[:, 0].mean((1, 2))], 1)

    result = evaluate(Mean(), split, torch.autocast("cpu", enabled=False), prefix="val")
    assert set(result) == {"val_loss", "val_error"}
    # [R1]'s 10-crop testing: the softmax averaged over each image's crops, then loss and error
    images = [data.val[i] for i in range(len(data.val))]
    averaged = [(Mean()(NORMALIZE(x)).softmax(-1).mean(0), y) for x, y in images]
    wrong = sum(int(p.argmax() != y) for p, y in averaged)
    loss = sum(-float(p[y].log()) for p, y in averaged) / len(images)
    assert result["val_error"] == pytest.approx(100 * wrong / len(images))
    assert result["val_loss"] == pytest.approx(loss, rel=1e-5)
    one_crop = FolderEval(load(folder, loader="transforms"), 4, NORMALIZE, CPU, World())
    centre = evaluate(Mean(), one_crop, torch.autocast("cpu", enabled=False), prefix="val")
    assert centre["val_loss"] != pytest.approx(result["val_loss"])  # the crops counted


def test_a_ten_crop_batch_holds_at_most_eval_batch_size_crops(folder):
    """eval_batch_size counts what goes through the net at once: ten crops of ResNet-50 for each
    of 1000 images would take tens of GB."""
    data = load(folder, ten_crop=True)
    batches = list(FolderEval(data, 25, NORMALIZE, CPU, World()))
    assert all(x.shape[0] * x.shape[1] <= 25 for x, _ in batches)
    assert [x.shape[0] for x, _ in batches] == [2, 2, 2, 2, 1]  # 9 images, 2 at a time
    assert len(list(FolderEval(data, 5, NORMALIZE, CPU, World()))) == 9  # never 0 images


def test_top5_only_with_many_classes():
    class Fixed(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):  # class 0 scores highest, class 3 fourth
            return torch.arange(self.k, 0, -1).float().expand(len(x), -1)

    y = torch.full((4,), 3)
    off = torch.autocast("cpu", enabled=False)
    many = evaluate(Fixed(100), [(torch.zeros(4, 3, 8, 8), y)], off, prefix="test")
    assert many["test_error"] == 100 and many["test_top5_error"] == 0
    few = evaluate(Fixed(10), [(torch.zeros(4, 3, 8, 8), y)], off, prefix="test")
    assert "test_top5_error" not in few


def test_batches_follow_a_seeded_order_and_resume(folder):
    data = load(folder, workers=2)
    plan = EpochPlan(len(data.train), 4, seed=0, world=World())
    batches = FolderBatches(data, plan, NORMALIZE, CPU)  # 18 images: 5 steps an epoch
    assert batches.steps_per_epoch == 5
    straight = [y for _, y in islice(batches.iterate(0), 8)]
    x, _ = next(batches.iterate(0))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert sorted(torch.cat(straight[:5]).tolist()) == sorted([c for c in range(3)] * 6)
    resumed = [y for _, y in islice(batches.iterate(3), 5)]
    assert all(torch.equal(a, b) for a, b in zip(straight[3:], resumed, strict=True))


def test_missing_val_folder(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="val missing"):
        load(tmp_path)


@pytest.mark.parametrize("loader", ["transforms", "boxes", "device"])
@pytest.mark.parametrize(
    "how, workers",
    [("truncated", 0), ("truncated", 1), ("fifo", 1), ("dangling-link", 0), ("bomb", 1)],
)
def test_an_unreadable_image_is_named_when_read(tmp_path, how, workers, loader, monkeypatch):
    # Too many files to decode before training: the bad one is named when its batch is read,
    # in a DataLoader worker or not; a named pipe does not hang the worker.
    root = write_jpeg_folder(tmp_path / "jpegs")
    bad = root / "val" / "class01" / "001.jpg"
    if how == "bomb":  # 2 x 1000 pixels at most; the others are 40 x 48
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        Image.new("RGB", (64, 64)).save(bad)
    else:
        damage(bad, how)
    data = load(root, workers=workers, loader=loader)
    split = FolderEval(data, 40, NORMALIZE, CPU, World())  # 40 crops: 4 images
    with pytest.raises(UserError) as e:
        list(split)
    assert str(e.value).startswith(f"{bad} is not a readable image")
    # the device's decoder finds a truncated file, in its own words
    says = (
        "Image is incomplete or truncated"
        if (loader, how) == ("device", "truncated")
        else UNREADABLE[how]
    )
    assert says in str(e.value) and "Traceback" not in str(e.value) and ".cpp" not in str(e.value)


def test_val_class_folders_must_match_train(tmp_path):
    root = write_jpeg_folder(tmp_path / "jpegs")
    (root / "val" / "class02").rename(root / "val" / "class2")
    with pytest.raises(UserError, match="val has other class folders than"):
        load(root)
