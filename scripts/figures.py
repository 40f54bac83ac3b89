"""Every figure and table that a set of runs supports (`make figures RUNS="..."`), one folder
per data set when they are on several:
- tables.md: [R1] table 6 and [R2] tables 1-4 (scripts/tables.py), for all the runs;
- figure6: [R1] figure 6, when there are plain nets of [R1], or its ResNets of more than one
  depth (scripts/figure6.py);
- figure7: [R1] figure 7, from those runs' checkpoints and test set (scripts/figure7.py);
- curves: [R2] figures 3 and 6, when there are shortcut types or units other than the original
  (scripts/curves.py).

    python scripts/figures.py outputs/degradation_cpu/2026-11-24_10-00-00 --out figures
"""

import sys

import curves
import figure6
import figure7
import tables
from report import run_script

from resnet_repro.errors import UserError
from resnet_repro.reproduction.runs import group_runs


def make(runs, out, args):
    written = tables.make(runs, out, args)
    names = sorted({r.data for r in runs})
    for name in names:
        these = [r for r in runs if r.data == name]
        folder = out / name if len(names) > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        r1_nets = [r for r in these if figure6.is_r1_cifar_net(r.model)]
        depths = {(r.model["shortcut"], r.model["depth"]) for r in r1_nets}
        if len(depths) > 1 or any(shortcut == "none" for shortcut, _ in depths):
            written += figure6.make(r1_nets, folder, args)
            if args.figure7:
                try:
                    written += figure7.make(r1_nets, folder, args)
                except UserError as e:  # the other figures stand without it
                    print(f"figures.py: figure 7 of {name} skipped: {e}", file=sys.stderr)
        if any(g.original != g.key for g in group_runs(these)):
            written += curves.make(these, folder, args)
    return written


def options(parser):
    figure7.options(parser)
    parser.add_argument(
        "--no-figure7",
        dest="figure7",
        action="store_false",
        help="skip figure 7 (it reads every checkpoint and the test set)",
    )


if __name__ == "__main__":
    run_script(__doc__, make, options)
