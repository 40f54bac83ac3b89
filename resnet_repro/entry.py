"""The console script's first step: it imports nothing heavy, so that a Ctrl-C while torch and
Hydra load (seconds) ends with a sentence, not a traceback from inside an import."""

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        stopped_while_starting()
    try:
        run()
    except KeyboardInterrupt:  # before the run's own handling starts (Hydra's composition)
        stopped_while_starting()


def stopped_while_starting() -> None:
    print("resnet-train: stopped (Ctrl-C) while starting, before any training.", file=sys.stderr)
    sys.exit(130)
