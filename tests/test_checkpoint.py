"""Checkpoint files: two kept, a checksum, weights_only loading, and saves that fail cleanly."""

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

from resnet_repro.errors import UserError
from resnet_repro.training import checkpoint, files
from resnet_repro.training.records import read_metrics

MARKER = Path("/tmp/resnet_repro_checkpoint_ran_code")


def state(iteration: int) -> dict:
    torch.manual_seed(iteration)
    return {
        "model": {"w": torch.randn(64, 3, 3, 3).to(memory_format=torch.channels_last)},
        "optimizer": {"state": {0: {"momentum_buffer": torch.randn(5)}}, "param_groups": []},
        "iteration": iteration,
        "config": {"model": {"depth": 20}, "schedule": {"milestones": (1, 2)}, "seed": 0},
        "rng": {"torch": torch.get_rng_state(), "cuda": []},
    }


def test_two_are_kept_and_load_as_saved(tmp_path):
    for it in (10, 20, 30):
        checkpoint.save_checkpoint(tmp_path, state(it))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]
    last = checkpoint.load_checkpoint(tmp_path / "last.pt")
    assert last["iteration"] == 30 and torch.equal(last["model"]["w"], state(30)["model"]["w"])
    assert checkpoint.load_checkpoint(tmp_path / "previous.pt")["iteration"] == 20


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "random":
        path.write_bytes(os.urandom(len(raw)))
    elif how == "flipped":
        stored = bytes(torch.load(path, weights_only=True)["model"]["w"].untyped_storage())
        at = raw.index(stored[:64]) + 9
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :])
    elif how == "index":  # a byte changed in the pickled index (data.pkl), not in a tensor
        info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith("data.pkl"))
        at = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26 :][:2], "little")
        at += int.from_bytes(raw[info.header_offset + 28 :][:2], "little")  # its first opcode
        path.write_bytes(raw[:at] + b"x" + raw[at + 1 :])
    elif how == "code":
        torch.save({**state(1), "extra": RunsCode()}, path)
    elif how == "legacy-pickle":
        with open(path, "wb") as f:
            pickle.dump({"model": RunsCode()}, f)
    elif how == "not-ours":
        torch.save({"weights": torch.zeros(3)}, path)


DAMAGES = {
    "empty": "is empty (0 bytes)",
    "truncated": "is not a whole PyTorch checkpoint (truncated, or another file)",
    "random": "is not a whole PyTorch checkpoint",
    "flipped": "does not match its checksum",
    "index": "is damaged (Unsupported operand 120)",
    "code": "holds objects other than tensors and plain values, which could run code",
    "legacy-pickle": "is not a whole PyTorch checkpoint",
    "not-ours": "is not a resnet-train checkpoint",
}


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_named_and_never_runs_code(tmp_path, how):
    MARKER.unlink(missing_ok=True)
    path = checkpoint.save_checkpoint(tmp_path, state(10))
    damage(path, how)
    with pytest.raises(checkpoint.Damaged) as e:
        checkpoint.load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and DAMAGES[how] in message
    assert "weights_only" not in message  # never the advice to load it unsafely
    assert not MARKER.exists()


def test_resumption_falls_back_to_the_previous_good_checkpoint(tmp_path, caplog):
    checkpoint.save_checkpoint(tmp_path, state(10))
    checkpoint.save_checkpoint(tmp_path, state(20))
    damage(tmp_path / "last.pt", "flipped")
    (tmp_path / "last.pt.123.tmp").write_bytes(b"half a save")
    ckpt = checkpoint.latest(tmp_path)
    assert ckpt["iteration"] == 10
    assert "Resuming from" in caplog.text and "previous.pt (iteration 10)" in caplog.text
    # The damaged file is set aside, so the next save cannot push out the good one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt.damaged", "previous.pt"]
    checkpoint.save_checkpoint(tmp_path, state(20))
    assert checkpoint.load_checkpoint(tmp_path / "previous.pt")["iteration"] == 10


def test_no_checkpoint_at_all_starts_and_none_good_refuses(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    checkpoint.save_checkpoint(tmp_path, state(10))
    checkpoint.save_checkpoint(tmp_path, state(20))
    damage(tmp_path / "last.pt", "truncated")
    damage(tmp_path / "previous.pt", "empty")
    with pytest.raises(UserError, match="no good checkpoint left to resume from"):
        checkpoint.latest(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]


def test_a_failed_save_leaves_the_checkpoints_and_no_temporary_file(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, state(10))
    checkpoint.save_checkpoint(tmp_path, state(20))

    class FullDisk:
        def __init__(self, path, mode):
            self.f = open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data)[:1000])  # part of the file is there when the disk fills
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "open", FullDisk, raising=False)
    with pytest.raises(checkpoint.SaveFailed) as e:
        checkpoint.save_checkpoint(tmp_path, state(30))
    assert e.value.reason == "No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]
    assert checkpoint.load_checkpoint(tmp_path / "last.pt")["iteration"] == 20
    assert checkpoint.load_checkpoint(tmp_path / "previous.pt")["iteration"] == 10


# A checkpoint written by the code before the reshape of issue 16 (commit b0808e2): iteration 4
# of this 8-iteration run, and the record the run wrote at its end.
OLD = Path(__file__).parent / "data" / "checkpoint-b0808e2.pt"
OLD_RUN = [
    *TINY,
    "data.batch_size=16",
    "schedule.iterations=8",
    "trainer.ckpt_every=4",
    "trainer.log_every=4",
    "trainer.eval_every=8",
]


@pytest.mark.slow  # it starts processes
def test_a_checkpoint_written_before_the_reshape_still_resumes(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(OLD, tmp_path / "checkpoints" / checkpoint.LAST)
    r = run_cli(*OLD_RUN, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "resuming from iteration 4" in r.stderr + r.stdout
    [end] = read_metrics(tmp_path)  # iterations 5 to 8: one record, at 8
    then = json.loads(OLD.with_name("checkpoint-b0808e2-end.json").read_text())
    assert end["iteration"] == then["iteration"] == 8
    # The same numbers (to the last bit on the CPU that wrote it; another CPU's kernels may
    # round differently).
    for key in ("train_loss", "train_error", "test_loss", "test_error"):
        assert end[key] == pytest.approx(then[key], rel=1e-3), key


@pytest.mark.parametrize("saved_layout", [torch.channels_last, torch.contiguous_format])
def test_momentum_buffers_take_their_parameters_layout_on_resume(saved_layout):
    """A run resumed with the other trainer.channels_last (allowed): each momentum buffer takes
    its parameter's strides, which CUDA's fused SGD demands, and keeps its values."""
    from resnet_repro.nets.models import build_model
    from resnet_repro.training.distributed import ALONE

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(8).to(memory_format=saved_layout)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, 32, 32).contiguous(memory_format=saved_layout)).sum().backward()
    sgd.step()
    ckpt = {"model": model.state_dict(), "optimizer": sgd.state_dict(), "iteration": 1}
    ckpt["rng"] = checkpoint.rng_state(cpu)
    other = torch.contiguous_format if saved_layout == torch.channels_last else torch.channels_last
    resumed = build_model(8).to(memory_format=other)
    resumed_sgd = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    checkpoint.restore(ckpt, resumed, resumed_sgd, None, ALONE, cpu)
    convs = [p for p in resumed.parameters() if p.dim() == 4]
    assert convs
    for p, saved in zip(resumed.parameters(), sgd.state.values(), strict=True):
        buffer = resumed_sgd.state[p]["momentum_buffer"]
        assert buffer.stride() == p.stride()
        assert torch.equal(buffer, saved["momentum_buffer"])
