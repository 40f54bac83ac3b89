"""The console scripts' first step: they import nothing heavy, so that a Ctrl-C while torch and
Hydra load (seconds) ends with a sentence, not a traceback from inside an import."""

import sys
from pathlib import Path

SCRIPTS = {"resnet-train": "main", "resnet-eval": "eval_main", "resnet-export": "export_main"}


def main() -> None:
    """resnet-train"""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        stopped_while_starting("resnet-train", "before any training")
    try:
        run()
    except KeyboardInterrupt:  # before the run's own handling starts (Hydra's composition)
        stopped_while_starting("resnet-train", "before any training")


def eval_main() -> None:
    """resnet-eval"""
    try:
        from .evaluate import eval_main as run
    except KeyboardInterrupt:
        stopped_while_starting("resnet-eval", "before evaluating")
    run()


def export_main() -> None:
    """resnet-export"""
    try:
        from .evaluate import export_main as run
    except KeyboardInterrupt:
        stopped_while_starting("resnet-export", "before exporting")
    run()


def stopped_while_starting(command: str, before: str) -> None:
    print(f"{command}: stopped (Ctrl-C) while starting, {before}.", file=sys.stderr)
    sys.exit(130)


def command(name: str) -> list[str]:
    """How to run this package's console script `name` (or torchrun) from this Python: the script
    installed beside it, else the same entry point through it, for a package on PYTHONPATH with
    no scripts installed (scripts/gpu_check.sh)."""
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return [str(path)]
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run"]
    return [
        sys.executable,
        "-c",
        f"from resnet_repro.entry import {SCRIPTS[name]}; {SCRIPTS[name]}()",
    ]
