"""The console scripts' first step: they import nothing heavy, so that a Ctrl-C while torch and
Hydra load (seconds) ends with a sentence, not a traceback from inside an import."""

import signal
import sys
from contextlib import contextmanager
from pathlib import Path

SCRIPTS = {"resnet-train": "main", "resnet-eval": "eval_main", "resnet-export": "export_main"}


def main() -> None:
    """resnet-train"""
    with loading("resnet-train", "before any training"):
        from .cli import main as run
    try:
        run()
    except KeyboardInterrupt:  # before the run's own handling starts (Hydra's composition)
        stopped_while_starting("resnet-train", "before any training")


def eval_main() -> None:
    """resnet-eval"""
    with loading("resnet-eval", "before evaluating"):
        from .evaluate import eval_main as run
    run()


def export_main() -> None:
    """resnet-export"""
    with loading("resnet-export", "before exporting"):
        from .evaluate import export_main as run
    run()


@contextmanager
def loading(command: str, before: str):
    """Imports during which a Ctrl-C is held until they end, then stops the command. Raised
    inside an extension module's initialisation, a KeyboardInterrupt can leave the module half
    made, and what the user sees is a later import's error (numpy: "cannot load module more
    than once per process") with a traceback."""
    pressed = []
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # as in a background job
    if not ignored:
        previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:
        if not ignored:
            signal.signal(signal.SIGINT, previous)
    if pressed:
        stopped_while_starting(command, before)


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
