"""What the figure and table scripts share: their command line, and one message for a mistake."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from resnet_repro.errors import UserError
from resnet_repro.reproduction.runs import Run, find_runs, unfinished_note

# One colour per depth in every figure, so that a net is the same line in figures 6 and 7.
COLOURS = {20: "tab:orange", 32: "tab:cyan", 44: "tab:green", 56: "tab:red", 110: "tab:blue"}


def run_script(
    doc: str,
    make: Callable[[list[Run], Path, argparse.Namespace], list[Path]],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse `RUNS... [--out DIR]`, read the runs, call `make`, list what it wrote. A user's
    mistake (a folder with no runs, runs that do not fit the figure) is one line and exit 2."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories, or folders that hold runs")
    parser.add_argument("--out", default="figures", help="folder for the output (default: figures)")
    if extra:
        extra(parser)
    args = parser.parse_args()
    name = Path(sys.argv[0]).name
    try:
        runs = find_runs(args.runs)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for note in unfinished_note(runs):
            print(f"{name}: {note}; shown as unfinished, not averaged in", file=sys.stderr)
        for path in make(runs, out, args):
            print(path)
    except UserError as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(2)


def save_figure(fig, title: str, stem: Path) -> list[Path]:
    """The figure as PNG (to look at) and PDF (for a paper), titled with what it was made from."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
