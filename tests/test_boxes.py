"""data.loader=boxes against torchvision's transforms (data.loader=transforms): the same crop
distributions, drawn as boxes from the image's size alone, and the same pixels from a decode
at a reduced scale, of the crops' regions only (TurboJPEG) or of whole rows (Pillow)."""

import json
import math
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TRAIN, assert_same_end, image_folder_run, run_cli
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnet_repro.data import boxes, crops, turbo
from resnet_repro.data.crops import BoxCrops, keys, read_crops
from resnet_repro.evaluate import eval_main

SIZES = [(500, 375), (375, 500), (1200, 900), (640, 160)]  # the last: RRC's fallback, often


def coordinates(width: int, height: int) -> tv_tensors.Image:
    """A float image whose two channels are each pixel's centre, x and y: whatever torchvision
    does to it, an output pixel holds the place in the source it was sampled from."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return tv_tensors.Image(torch.stack([xs, ys]).float())


def box_of(out: torch.Tensor) -> tuple[float, float, float, float]:
    """The source box an output crop of coordinates() covers, from its inner pixels (an
    antialiasing filter is clamped at the source's edges)."""
    n = out.shape[-1]
    a, b = n // 8, n - 1 - n // 8
    sx = float(out[0, n // 2, b] - out[0, n // 2, a]) / (b - a)
    sy = float(out[1, b, n // 2] - out[1, a, n // 2]) / (b - a)
    left = float(out[0, n // 2, a]) - (a + 0.5) * sx
    top = float(out[1, a, n // 2]) - (a + 0.5) * sy
    return left, top, n * sx, n * sy


def relative(box, width, height) -> np.ndarray:
    left, top, w, h = box
    return np.array([left / width, top / height, w / width, h / height, math.log(w / h)])


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical
    distribution functions."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("crop", ["resized_crop", "scale_augmentation"])
def test_boxes_are_drawn_as_torchvision_draws_its_crops(crop, size):
    width, height = size
    n = 400
    torch.manual_seed(0)
    rng = random.Random(0)
    if crop == "resized_crop":
        theirs = v2.RandomResizedCrop(64, antialias=False)  # the box is all that is compared
        ours = [boxes.resized_crop(width, height, rng) for _ in range(n)]
    else:
        scale_range = (256, 480) if min(size) >= 256 else (160, 300)
        theirs = v2.Compose(
            [
                v2.RandomShortestSize(list(range(scale_range[0], scale_range[1] + 1))),
                v2.RandomCrop(144),
            ]
        )
        ours = [boxes.scale_augmentation(width, height, rng, 144, scale_range) for _ in range(n)]
        # rounded to whole pixels of the source, to be cut out and resized as RandomResizedCrop's
        assert all(float(c).is_integer() for b in ours for c in b)
        assert all(b.left + b.width <= width and b.top + b.height <= height for b in ours)
    image = coordinates(width, height)
    reference = np.stack([relative(box_of(theirs(image)), width, height) for _ in range(n)])
    drawn = np.stack([relative(b, width, height) for b in ours])
    # left, top, width, height and log aspect: the same distributions (the KS statistic of two
    # samples of 400 from one distribution exceeds 0.12 with probability under 0.5%)
    for column in range(5):
        if reference[:, column].std() > 0.01:
            assert ks(drawn[:, column], reference[:, column]) < 0.12, column
        else:  # all but constant (the square crops of the scale augmentation): the same value
            assert abs(drawn[:, column].mean() - reference[:, column].mean()) < 0.01, column


@pytest.mark.parametrize("size", SIZES[:3])
def test_evaluation_boxes_are_torchvisions_crops(size):
    width, height = size
    image = coordinates(width, height)
    resized = TF.resize(image, 256)
    want = [box_of(c) for c in TF.ten_crop(resized, 224)]
    got = boxes.ten_crop(width, height, 224, 256)
    for (box, flipped), theirs in zip(got, want, strict=True):
        if flipped:  # torchvision's flipped crops read the source from right to left
            left, top, w, h = theirs
            theirs = (left + w, top, -w, h)
        assert np.allclose(box, theirs, atol=0.05), (box, theirs)
    assert np.allclose(
        boxes.centre_crop(width, height, 224, 256), box_of(TF.center_crop(resized, 224)), atol=0.05
    )


def photo_like(path, width: int = 500, height: int = 375, seed: int = 0) -> None:
    """A JPEG (quality 90) with what a photograph has: smooth shading, edges and some noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / max(width, height)
    x = np.stack(
        [np.sin(6 * xs + c) * 60 + np.cos(9 * ys * (c + 1)) * 50 + 120 for c in range(3)], -1
    )
    for _ in range(12):  # discs of flat colour: edges
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 80)
        x[
            (np.mgrid[0:height, 0:width][1] - cx) ** 2 + (np.mgrid[0:height, 0:width][0] - cy) ** 2
            < r * r
        ] = rng.uniform(0, 255, 3)
    x += rng.normal(0, 4, x.shape)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(path, quality=90)


@pytest.fixture(params=["turbojpeg", "pillow"])
def decoder(request, monkeypatch):
    """Each of data.loader=boxes' decoders in turn: libjpeg-turbo 3's regions (the jpeg extra,
    which make test installs), then Pillow's whole rows, as where the extra is not installed."""
    if request.param == "pillow":
        monkeypatch.setattr(turbo, "find", lambda: None)
    elif turbo.find() is None:
        pytest.fail("no libjpeg-turbo 3: pip install -e '.[dev]' installs turbojpeg")
    return request.param


def test_pixels_are_torchvisions_on_the_same_box(tmp_path, decoder):
    """Decoded at 1/2 or 1/4 of its size where the box allows and resized from there, a crop
    differs from torchvision's (whole image decoded, then resized and cropped) by a fraction of
    a grey level on average."""
    path = tmp_path / "photo.jpg"
    photo_like(path)
    full = Image.open(path).convert("RGB")
    rng = random.Random(1)
    diffs, reduced = [], 0
    for _ in range(12):
        # the random-resized crop: torchvision crops the integer box, then resizes it
        box = boxes.resized_crop(*full.size, rng, scale=(0.3, 1.0))
        theirs = TF.resized_crop(
            full, int(box.top), int(box.left), int(box.height), int(box.width), [112, 112]
        )
        [ours] = read_crops(str(path), 112, lambda w, h, b=box: [(b, False)])
        diffs.append(np.abs(ours.astype(int) - np.asarray(theirs, dtype=int)))
        reduced += box.width >= 224 and box.height >= 224  # decoded at half size or less
        # a box of fractions of a pixel (evaluation's Resize then crop, [R1]'s scale
        # augmentation before its box is rounded): torchvision resizes the whole image, crops
        s, x, y = rng.randint(256, 480), rng.random(), rng.random()
        w, h = boxes.shorter_side(*full.size, s)
        left, top = int(x * (w - 224)), int(y * (h - 224))
        theirs = TF.crop(TF.resize(full, s), top, left, 224, 224)
        box = boxes.scaled_back(boxes.Box(left, top, 224, 224), full.width / w, full.height / h)
        [ours] = read_crops(str(path), 224, lambda w, h, b=box: [(b, True)])
        diffs.append(np.abs(ours[:, ::-1].astype(int) - np.asarray(theirs, dtype=int)))
    assert reduced >= 3
    d = np.stack([x.mean() for x in diffs])
    assert d.mean() < 1.0 and d.max() < 2.5, d
    assert max(np.percentile(x, 99) for x in diffs) <= 12


@pytest.mark.parametrize(
    "kind",  # chroma 4:4:4, 4:2:2, 4:2:0 (iMCUs 8 or 16 wide); progressive; greyscale
    ["444", "422", "420", "progressive", "grey"],
)
def test_turbojpeg_crops_are_torchvisions_pixels(tmp_path, kind):
    """A random-resized crop from the region TurboJPEG decodes (a few rows and columns around the
    box) is exactly torchvision's transforms' crop (the whole image decoded, cut, resized), at
    every edge and corner of the image and inside it; and it decodes less."""
    path = tmp_path / "photo.jpg"
    photo_like(path, 333, 250, seed=len(kind))
    im = Image.open(path)
    if kind == "grey":
        im.convert("L").save(path, quality=90)
    elif kind == "progressive":
        im.save(path, quality=90, progressive=True)
    else:
        im.save(path, quality=90, subsampling=f"{kind[0]}:{kind[1]}:{kind[2]}")
    data = path.read_bytes()
    image = tv_tensors.Image(torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()))
    image = image.permute(2, 0, 1)
    decoded = []
    real = turbo.find()

    class Counting:  # the decoder, counting the pixels it decodes
        def __getattr__(self, name):
            return getattr(real, name)

        def region(self, *args, **kw):
            out = real.region(*args, **kw)
            decoded.append(out[0].shape[0] * out[0].shape[1])
            return out

    rng = random.Random(0)
    corners = [boxes.Box(0, 0, 150, 120), boxes.Box(183, 130, 150, 120), boxes.Box(0, 0, 333, 200)]
    for box in corners + [boxes.resized_crop(333, 250, rng) for _ in range(20)]:
        if crops.dct_denominator(333, 250, [(box, False)], 112) > 1:
            continue  # decoded at half size: test_pixels_are_torchvisions_on_the_same_box
        for flip in (False, True):
            [ours] = crops.region_crops(Counting(), data, 112, lambda w, h, b=box, f=flip: [(b, f)])
            theirs = TF.resized_crop(image, box.top, box.left, box.height, box.width, [112, 112])
            theirs = theirs.flip(-1) if flip else theirs
            assert np.array_equal(ours, theirs.permute(1, 2, 0).numpy()), (box, flip)
    assert np.mean(decoded) < 0.8 * 333 * 250


def test_both_decoders_crop_alike(tmp_path):
    """TurboJPEG's regions and Pillow's whole rows give the same crops, within 2 grey levels: the
    random-resized crop (large boxes decoded at a reduced scale), [R1]'s scale augmentation and
    the ten crops of evaluation. A PNG and a CMYK JPEG, which TurboJPEG does not decode to RGB,
    are read by Pillow."""
    photo_like(tmp_path / "a.jpg", 1000, 750)
    Image.open(tmp_path / "a.jpg").save(tmp_path / "b.png")
    Image.open(tmp_path / "a.jpg").convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    rng = random.Random(2)
    for _ in range(8):
        chosen = [
            [(boxes.resized_crop(1000, 750, rng), rng.random() < 0.5)],
            [(boxes.scale_augmentation(1000, 750, rng, 224, (256, 480)), True)],
            boxes.ten_crop(1000, 750, 224, 256),
        ]
        for c in chosen:
            region = read_crops(str(tmp_path / "a.jpg"), 224, lambda w, h, c=c: c)
            with Image.open(tmp_path / "a.jpg") as im:
                rows = [np.asarray(x) for x in crops.cut(im, c, 224)]
            for a, b in zip(region, rows, strict=True):
                assert np.abs(a.astype(int) - b).max() <= 2
    assert crops.dct_denominator(1000, 750, chosen[2], 224) == 2  # the ten crops: half size
    data = (tmp_path / "c.jpg").read_bytes()
    assert crops.region_crops(turbo.find(), data, 224, lambda w, h: chosen[2]) is None
    png, cmyk = (
        read_crops(str(tmp_path / f), 224, lambda w, h: chosen[2]) for f in ("b.png", "c.jpg")
    )
    assert len(png) == len(cmyk) == 10 and png[0].shape == cmyk[0].shape == (224, 224, 3)


def test_without_libjpeg_turbo_3_boxes_decode_with_pillow(monkeypatch):
    """A system library older than version 3 (no regions) is not used; nor is none."""
    import ctypes.util

    monkeypatch.setattr(turbo, "_found", {})
    monkeypatch.setattr(turbo, "library_path", lambda: ctypes.util.find_library("c"))
    assert turbo.find() is None
    monkeypatch.setattr(turbo, "_found", {})
    monkeypatch.setattr(turbo, "library_path", lambda: None)
    assert turbo.find() is None
    monkeypatch.undo()
    assert turbo.find() is not None  # the jpeg extra's, as make test installs it


def test_a_batch_is_made_whole_and_channels_last(tmp_path):
    from torchvision.datasets import ImageFolder

    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            photo_like(tmp_path / f"c{c}" / f"{i}.jpg", 300 + 40 * i, 260, seed=i)
    folder = ImageFolder(str(tmp_path))
    train = BoxCrops(folder, 64, train=True)
    x, y = train.__getitems__(keys([0, 5, 3], seed=0, epoch=0, start=0))
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.uint8
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert y.tolist() == [0, 1, 1]
    again, _ = train.__getitems__(keys([0, 5, 3], seed=0, epoch=0, start=0))
    assert torch.equal(x, again)  # a crop is its seed's: a resumed run crops the same
    other, _ = train.__getitems__(keys([0, 5, 3], seed=0, epoch=1, start=0))
    assert not torch.equal(x, other)  # and the next epoch crops anew
    val = BoxCrops(folder, 64, train=False, resize_size=72, ten_crop=True)
    x, _ = val.__getitems__([1, 2])
    assert x.shape == (2, 10, 3, 64, 64)
    assert torch.equal(x[:, 0].flip(-1), x[:, 6])  # the mirror's top right: the top left, flipped


def test_decoding_on_the_device_crops_as_torchvision_does(tmp_path):
    """data.loader=device's code, run here with the CPU decoder: the random-resized crop and
    [R1]'s scale augmentation (boxes on whole pixels) are torchvision's resized_crop of the
    decoded tensor, evaluation's centre crop (a box of fractional pixels) its resize then crop,
    to a rounding of the last grey level; and all are close to data.loader=boxes'."""
    from torchvision.datasets import ImageFolder
    from torchvision.io import decode_jpeg

    from resnet_repro.data.device_decode import EncodedCrops, decode_on, jpeg_decoder

    (tmp_path / "c0").mkdir()
    for i in range(4):
        photo_like(tmp_path / "c0" / f"{i}.jpg", 500 - 60 * i, 375, seed=i)
    folder = ImageFolder(str(tmp_path))
    for scale_aug, train in ((False, True), (True, True), (False, False)):
        opts = dict(crop_size=96, train=train, scale_aug=scale_aug, scale_range=(128, 200))
        opts["resize_size"] = 110
        encoded = EncodedCrops(folder, **opts)
        batch = encoded.__getitems__(keys(list(range(4)), seed=3, epoch=0, start=0))
        ours = decode_on(batch, torch.device("cpu"), 96, folder.samples, jpeg_decoder())
        assert ours.shape == (4, 3, 96, 96) and ours.dtype == torch.uint8
        for i, (path, _) in enumerate(folder.samples):
            image = decode_jpeg(
                torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8)
            )
            left, top, w, h, flip = batch.plans[i, 0].tolist()
            if not all(float(c).is_integer() for c in (left, top, w, h)):
                rw, rh = round(image.shape[2] * 96 / w), round(image.shape[1] * 96 / h)
                theirs = TF.crop(
                    TF.resize(image, [rh, rw]), round(top * 96 / h), round(left * 96 / w), 96, 96
                )
            else:
                theirs = TF.resized_crop(image, int(top), int(left), int(h), int(w), [96, 96])
            theirs = theirs.flip(-1) if flip else theirs
            assert (ours[i].int() - theirs.int()).abs().max() <= 1
        boxed, _ = BoxCrops(folder, **opts).__getitems__(
            keys(list(range(4)), seed=3, epoch=0, start=0)
        )
        assert (boxed.float() - ours.float()).abs().mean() < 1.5


def test_a_file_that_is_not_a_plain_jpeg_is_sent_as_one(tmp_path):
    from torchvision.datasets import ImageFolder

    from resnet_repro.data.device_decode import EncodedCrops, decode_on, jpeg_decoder

    (tmp_path / "c0").mkdir()
    photo_like(tmp_path / "c0" / "a.jpg", 200, 150)
    Image.open(tmp_path / "c0" / "a.jpg").save(tmp_path / "c0" / "b.png")
    Image.open(tmp_path / "c0" / "a.jpg").convert("CMYK").save(
        tmp_path / "c0" / "c.jpg", quality=95
    )
    folder = ImageFolder(str(tmp_path))
    encoded = EncodedCrops(folder, 64, train=False, resize_size=72)
    x = decode_on(
        encoded.__getitems__([0, 1, 2]), torch.device("cpu"), 64, folder.samples, jpeg_decoder()
    )
    assert x.shape == (3, 3, 64, 64)
    assert (x[0].float() - x[1].float()).abs().mean() < 2  # the PNG, re-encoded at quality 95
    assert (x[0].float() - x[2].float()).abs().mean() < 4  # the CMYK JPEG


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["transforms", "boxes", "device"])
def test_an_imagenet_style_run_trains_resumes_and_evaluates_with_each_loader(tmp_path, loader):
    """[R1]'s scale augmentation and 10-crop testing, on photograph-like JPEGs of several sizes.
    With boxes and device, every crop comes from a seed of the plan: stopped and resumed, the
    run ends bit for bit as the uninterrupted one (transforms' crops come from the workers'
    own generators)."""
    root = tmp_path / "jpegs"
    for split, n in (("train", 8), ("val", 3)):
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                photo_like(
                    root / split / f"c{c}" / f"{i}.jpg", 90 + 13 * i, 70 + 7 * c, seed=i + 10 * c
                )
    args = [
        "model=resnet18",
        "data.scale_aug=true",
        "data.scale_range=[40,64]",
        "data.ten_crop=true",
        f"data.loader={loader}",
        "trainer.ckpt_every=2",
        "trainer.threads=1",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    r = run_cli(*args, *image_folder_run(root, straight, batch=6, workers=1, eval_every=4))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["iteration"] == 8 and summary["data_loader"] == loader

    cmd = [*TRAIN, *args, *image_folder_run(root, resumed, batch=6, workers=1, eval_every=4)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (resumed / "checkpoints" / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    r = run_cli(*cmd[len(TRAIN) :])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from iteration" in (resumed / "train.log").read_text()
    if loader != "transforms":
        assert_same_end(straight, resumed)

    out = tmp_path / "eval.json"
    try:  # evaluated again, the 10 crops give the run's own error
        eval_main([str(straight), "--json", str(out)])
    except SystemExit as e:
        assert e.code == 0
    assert json.loads(out.read_text())["val_error"] == summary["val_error"]


@pytest.mark.slow
def test_the_folder_benchmark_measures_each_pipeline(tmp_path):
    """bench.py's part `folders` (scripts/folder_speed.py) runs: a rate for each loader and
    decoder, each way of cropping, and the ratios to torchvision's transforms."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import folder_speed

    for split in ("train", "val"):
        for c in range(2):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(20):
                photo_like(tmp_path / split / f"c{c}" / f"{i}.JPEG", 160 + 9 * i, 120, seed=i)
    rows = folder_speed.measure(tmp_path, workers=[1], batches=1, repeats=1)
    assert [r[0] for r in rows] == list(folder_speed.CROPS)
    for row in rows:
        assert len(row) == len(folder_speed.HEADER) and row[1] == 1
        assert all(float(v) > 0 for v in row[2:6]) and all(v.endswith("x") for v in row[6:])
