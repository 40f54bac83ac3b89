import dataclasses
import hashlib
import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from fixtures import UNREADABLE, damage, make_archive, write_image_folder, write_python_version
from PIL import Image

from resnet_repro import data
from resnet_repro.data import cache, cifar
from resnet_repro.errors import UserError


def check_same(loaded, written):
    for split in ("train", "test"):
        x, y = written[split]
        assert torch.equal(getattr(loaded, f"{split}_images"), torch.from_numpy(x))
        assert getattr(loaded, f"{split}_labels").tolist() == list(y)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_reads_official_python_version(tmp_path, name):
    written = write_python_version(tmp_path, name)
    loaded = data.load_dataset(name, root=str(tmp_path), download=False)
    check_same(loaded, written)
    assert loaded.num_classes == {"cifar10": 10, "cifar100": 100}[name]
    assert loaded.train_images.dtype == torch.uint8 and loaded.train_images.shape[1:] == (3, 32, 32)


def test_reads_python_version_folder_given_directly(tmp_path):
    written = write_python_version(tmp_path)
    loaded = data.load_dataset(
        "cifar10", root=str(tmp_path / "cifar-10-batches-py"), download=False
    )
    check_same(loaded, written)


def test_reads_image_folder_with_classes_in_alphabetical_order(tmp_path):
    written = write_image_folder(tmp_path, {"train": 3, "test": 2})
    loaded = data.load_dataset("cifar10", root=str(tmp_path), download=False)
    check_same(loaded, written)


def test_image_folder_with_wrong_class_count(tmp_path):
    write_image_folder(tmp_path, {"train": 1, "test": 1})
    with pytest.raises(UserError, match="10 class folders, but this data set has 100"):
        data.load_dataset("cifar100", root=str(tmp_path), download=False)


def test_cache_is_used_then_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    write_python_version(tmp_path)
    first = data.load_dataset("cifar10", root=str(tmp_path), download=False)
    cache = tmp_path / "cifar-10-batches-py" / ".resnet_repro_cifar10.pt"
    assert cache.exists()

    def fail(*_):
        raise AssertionError("the source was decoded again although the cache is valid")

    monkeypatch.setattr(cifar, "read_python_version", fail)
    again = data.load_dataset("cifar10", root=str(tmp_path), download=False)
    assert torch.equal(again.train_images, first.train_images)

    monkeypatch.undo()
    written = write_python_version(tmp_path, per_file=5)  # new content, new size and time
    check_same(data.load_dataset("cifar10", root=str(tmp_path), download=False), written)


def test_cache_goes_to_user_cache_when_data_folder_is_read_only(tmp_path, monkeypatch):
    write_python_version(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    data.load_dataset("cifar10", root=str(tmp_path / "data"), download=False)
    assert not list((tmp_path / "data").rglob(".resnet_repro*"))
    assert len(list((tmp_path / "cache" / "resnet_repro").glob("cifar10_*.pt"))) == 1


def test_missing_data_names_path_and_both_layouts(tmp_path):
    with pytest.raises(UserError) as e:
        data.load_dataset("cifar10", root=str(tmp_path / "nothing"), download=False)
    msg = str(e.value)
    assert str(tmp_path / "nothing") in msg and "cifar-10-batches-py" in msg
    assert "train/<class>" in msg and "data.root" in msg


@pytest.fixture
def archive(tmp_path):
    """The official archive's layout, served from a file:// URL (no network in tests)."""
    written = write_python_version(tmp_path / "src")
    path = make_archive(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz")
    return written, path, hashlib.md5(path.read_bytes()).hexdigest()


def point_download_at(monkeypatch, url, md5):
    spec = dataclasses.replace(data.CIFAR["cifar10"], url=url, md5=md5)
    monkeypatch.setitem(data.CIFAR, "cifar10", spec)


def test_download_checks_md5_and_extracts(tmp_path, monkeypatch, archive):
    written, path, md5 = archive
    point_download_at(monkeypatch, path.as_uri(), md5)
    loaded = data.load_dataset("cifar10", root=str(tmp_path / "new"), download=True)
    check_same(loaded, written)
    assert (tmp_path / "new" / "cifar-10-batches-py" / "data_batch_1").exists()


def test_download_with_wrong_md5_is_refused(tmp_path, monkeypatch, archive):
    _, path, _ = archive
    point_download_at(monkeypatch, path.as_uri(), "0" * 32)
    with pytest.raises(UserError, match="corrupt"):
        data.load_dataset("cifar10", root=str(tmp_path / "new"), download=True)
    assert not (tmp_path / "new").exists()


def test_failed_download_says_how_to_work_offline(tmp_path, monkeypatch):
    point_download_at(monkeypatch, (tmp_path / "absent.tar.gz").as_uri(), "0" * 32)
    with pytest.raises(UserError, match="offline.*data.root"):
        data.load_dataset("cifar10", root=str(tmp_path / "new"), download=True)
    assert not (tmp_path / "new").exists()


def test_validation_split_is_seeded_and_disjoint():
    full = data.synthetic(train_size=100, test_size=10)
    a = data.split_validation(full, 20)
    b = data.split_validation(full, 20)
    assert len(a.train_labels) == 80 and len(a.val_labels) == 20
    assert torch.equal(a.val_images, b.val_images)
    rows = {bytes(x.numpy()) for x in full.train_images}
    train_rows = {bytes(x.numpy()) for x in a.train_images}
    val_rows = {bytes(x.numpy()) for x in a.val_images}
    assert not train_rows & val_rows and train_rows | val_rows == rows
    with pytest.raises(UserError, match="val_split"):
        data.split_validation(full, 100)


def test_synthetic_shapes():
    d = data.load_dataset("synthetic", num_classes=7, train_size=12, test_size=5, val_split=2)
    assert d.train_images.shape == (10, 3, 32, 32) and d.val_images.shape == (2, 3, 32, 32)
    assert int(d.train_labels.max()) < 7 and d.num_classes == 7


# --- hostile data: each a clear error naming the file, or a documented skip -------------------


def load10(root):
    return data.load_dataset("cifar10", root=str(root), download=False)


def test_a_test_class_folder_named_otherwise_is_refused(tmp_path):
    write_image_folder(tmp_path, {"train": 1, "test": 1})
    (tmp_path / "test" / "truck").rename(tmp_path / "test" / "trucks")
    with pytest.raises(UserError, match="only in train/: truck; only in test/: trucks"):
        load10(tmp_path)


def test_train_without_test_and_empty_folders(tmp_path):
    (tmp_path / "a" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="has train/ but no test/"):
        load10(tmp_path / "a")
    write_image_folder(tmp_path / "b", {"train": 1, "test": 1})
    for png in (tmp_path / "b" / "test").rglob("*.png"):
        png.unlink()
    with pytest.raises(UserError, match="test holds no images in its class folders"):
        load10(tmp_path / "b")


@pytest.mark.parametrize("how", sorted(UNREADABLE))
def test_an_unreadable_image_is_named(tmp_path, how, monkeypatch):
    write_image_folder(tmp_path, {"train": 2, "test": 1})
    bad = tmp_path / "train" / "cat" / "0001.png"
    if how == "bomb":  # PIL refuses images of over twice this many pixels: 64x64, not 32x32
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)
        Image.new("RGB", (64, 64)).save(bad)
    else:
        damage(bad, how)
    with pytest.raises(UserError) as e:
        load10(tmp_path)
    message = str(e.value)
    assert "files in" in message and f"{bad} ({UNREADABLE[how]}" in message


def test_an_image_of_another_size_is_named(tmp_path):
    write_image_folder(tmp_path, {"train": 2, "test": 1})
    odd = tmp_path / "test" / "dog" / "0000.png"
    Image.new("RGB", (40, 30)).save(odd)
    with pytest.raises(UserError, match=f"1 images in .* are not 32x32 \\(such as {odd}\\)"):
        load10(tmp_path)


def test_odd_file_names_are_read(tmp_path):
    write_image_folder(tmp_path, {"train": 1, "test": 1})
    cat = tmp_path / "train" / "cat"
    os.rename(cat / "0000.png", os.path.join(os.fsencode(cat), b"\xff\xfe name with spaces.png"))
    loaded = load10(tmp_path)  # a name that is not UTF-8 neither crashes nor is dropped
    assert len(loaded.train_labels) == 10


def rewrite_batch(path, change):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    with open(path, "wb") as f:
        pickle.dump(change(batch), f, protocol=2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "is not a whole CIFAR batch file (it is truncated)"),
        ("shape", "its data has shape (4, 1000) (uint8), not N x 3072 uint8"),
        ("labels-count", "it has 4 images but 3 labels"),
        ("labels-range", "2 train labels are outside 0...9 (the first, image 4, has label 10)"),
    ],
)
def test_a_damaged_batch_file_is_named(tmp_path, damage, message):
    write_python_version(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if damage == "truncated":
        batch.write_bytes(batch.read_bytes()[:300])
    elif damage == "shape":
        rewrite_batch(batch, lambda b: {**b, b"data": b[b"data"][:, :1000]})
    elif damage == "labels-count":
        rewrite_batch(batch, lambda b: {**b, b"labels": b[b"labels"][:3]})
    else:
        rewrite_batch(batch, lambda b: {**b, b"labels": [10, 1, -1, 2]})
    with pytest.raises(UserError) as e:
        load10(tmp_path)
    assert message in str(e.value)
    assert ("cifar-10-batches-py" if damage == "labels-range" else str(batch)) in str(e.value)


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/resnet_repro_pickle_ran_code"


def test_a_crafted_batch_file_runs_no_code(tmp_path):
    write_python_version(tmp_path)
    Path(MARKER).unlink(missing_ok=True)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": RunsCode(), b"labels": []}, f, protocol=2)
    with pytest.raises(UserError, match="it names posix.system, which CIFAR files never hold"):
        load10(tmp_path)
    assert not Path(MARKER).exists()


def test_a_damaged_or_stale_cache_is_rebuilt(tmp_path, caplog):
    written = write_python_version(tmp_path)
    load10(tmp_path)
    cache = tmp_path / "cifar-10-batches-py" / ".resnet_repro_cifar10.pt"
    cache.write_bytes(cache.read_bytes()[:100])  # damaged: rebuilt, with a warning
    check_same(load10(tmp_path), written)
    assert "is damaged" in caplog.text and "rebuilding it" in caplog.text
    bad = torch.load(cache, weights_only=True)  # whole, but its labels out of range
    bad["tensors"]["train_labels"][0] = 99
    torch.save(bad, cache)
    check_same(load10(tmp_path), written)


def test_writes_of_the_cache_cut_short_leave_nothing_for_good(tmp_path, monkeypatch):
    """A cache write cut short leaves no temporary file (interrupted in the process), and one a
    killed process left (up to 100 MB each) is removed by the next run once stale."""
    write_python_version(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"

    def interrupted(obj, f):
        f.write(b"half a cache")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(torch, "save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            load10(tmp_path)
    assert list(folder.glob("*.tmp")) == []
    dead = max_pid() + 1  # no process has this pid
    left = folder / f".resnet_repro_cifar10.pt.{dead}.tmp"  # what a SIGKILL leaves
    left.write_bytes(b"x" * 1000)
    writing = folder / f".resnet_repro_cifar10.pt.{os.getppid()}.tmp"  # a live writer's
    writing.write_bytes(b"y")
    old = time.time() - 3600
    os.utime(left, (old, old))
    os.utime(writing, (old, old))
    load10(tmp_path)
    assert not left.exists() and writing.exists()


def max_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def test_a_cache_that_cannot_be_written_anywhere_is_skipped(tmp_path, monkeypatch, caplog):
    written = write_python_version(tmp_path)

    def read_only(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache, "atomic_save", read_only)
    check_same(load10(tmp_path), written)
    assert "Cannot write the data cache" in caplog.text and "Permission denied" in caplog.text
