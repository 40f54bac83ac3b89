"""What a run leaves behind: metrics.jsonl, TensorBoard events, progress on the terminal."""

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("resnet_repro")
METRICS = "metrics.jsonl"  # a run's records: one JSON object per logged step


class RunRecord:
    """metrics.jsonl (one JSON object per logged step), TensorBoard, and a progress display.

    On resume, records past the checkpoint's iteration (written before the interruption) are
    dropped, so the files read as one uninterrupted run. Every record is logged, so train.log
    reads the same with or without a terminal; on a terminal the log lines are written above
    the progress bar.
    """

    def __init__(self, run_dir: Path, start_iteration: int, iterations: int):
        self.metrics_path = run_dir / METRICS
        truncate_after(self.metrics_path, start_iteration)
        self.metrics = open(self.metrics_path, "a")
        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_iteration + 1)
        self.iterations = iterations
        self.bar = self.redirect = None
        if sys.stderr.isatty():
            self.redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self.redirect.__enter__()
            self.bar = tqdm(
                total=iterations,
                initial=start_iteration,
                unit="it",
                dynamic_ncols=True,
                smoothing=0.05,
            )

    def step(self, iteration: int, lr: float) -> None:
        # Every step, so the warm-up and the lr drops can be seen exactly.
        self.tb.add_scalar("lr", lr, iteration)
        if self.bar is not None:
            self.bar.update(1)

    def write(self, record: dict) -> None:
        self.metrics.write(strict_json(record) + "\n")
        self.metrics.flush()
        it = record["iteration"]
        for key, value in record.items():
            if key not in ("iteration", "lr"):
                self.tb.add_scalar(key, value, it)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record.get('train_loss', 0):.3f}", lr=record["lr"])
        log.info(format_record(record))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.redirect.__exit__(None, None, None)
        self.tb.close()
        self.metrics.close()


class NullRecord:
    """What ranks other than 0 keep: nothing. Only rank 0 writes the run's records."""

    def step(self, iteration: int, lr: float) -> None:
        pass

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def format_record(r: dict) -> str:
    parts = [f"it {r['iteration']}", f"epoch {r['epoch']:.1f}", f"lr {r['lr']:g}"]
    if "train_loss" in r:
        parts += [
            f"loss {r['train_loss']:.3f}",
            f"train err {r['train_error']:.2f}%",
            f"{r['images_per_sec']:.0f} img/s",
        ]
    for split in ("val", "test"):
        if f"{split}_error" in r:
            parts.append(f"{split} err {r[f'{split}_error']:.2f}%")
    return " | ".join(parts)


def strict_json(obj, **kwargs) -> str:
    """JSON that strict readers accept: a value that is not finite is written as null."""

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), allow_nan=False, **kwargs)


def truncate_after(path: Path, iteration: int) -> None:
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line + "\n")
        except (ValueError, KeyError):  # a line cut short by a crash
            pass
    path.write_text("".join(kept))


def read_metrics(run_dir: Path) -> list[dict]:
    """A run's records (its metrics.jsonl); a last line cut short by a crash is left out."""
    path = Path(run_dir) / METRICS
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}, line {i + 1}, is not JSON") from None
    return records


def code_version() -> str:
    """The git commit of this checkout (with -dirty for local changes), else the version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except OSError:
        pass
    from importlib.metadata import version

    return version("resnet-repro")


def write_summary(run_dir: Path, facts: dict, last: dict, wall_time: float) -> None:
    """summary.json: the final record, what was trained (facts: with which code), how fast."""
    speeds = sorted(r["images_per_sec"] for r in read_metrics(run_dir) if "images_per_sec" in r)
    summary = {
        **facts,
        **{k: v for k, v in last.items() if k != "images_per_sec"},
        "images_per_sec_median": speeds[len(speeds) // 2] if speeds else None,
        "wall_time_s": round(wall_time, 1),
        "command": sys.argv,
    }
    (run_dir / "summary.json").write_text(strict_json(summary, indent=2) + "\n")
    errors = ", ".join(
        f"{k.removesuffix('_error')} error {v:.2f}%"
        for k, v in last.items()
        if k.endswith("_error")
    )
    log.info(f"done: {errors}; {wall_time / 60:.1f} min; summary in {run_dir}/summary.json")
