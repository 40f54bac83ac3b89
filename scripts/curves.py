"""[R2] figures 3 and 6 from runs: training curves of each shortcut type or unit against the
original unit of the same net; training loss dashed (left axis), test error solid (right axis),
one panel per variant with its original in grey. Seeds of one configuration are averaged, and
the band around a curve spans them (the spread between seeds, to set beside the gap between
the curves). Every panel has the same axes, so that panels compare too. curves.md holds the
numbers drawn: each configuration's training loss at every few records, test error after the
slash where it was evaluated.

    python scripts/curves.py outputs/shortcuts_cpu/2026-12-01_09-16-44 --out figures
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report import run_script, save_figure  # noqa: E402

from resnet_repro.reproduction.runs import TEST_ERROR, TRAIN_LOSS, group_runs, one_data_set  # noqa: E402


def draw_one(ax, g, key, colour, **style):
    x, runs = g.curves(key)
    if not x:
        return None
    mean = [sum(v) / len(v) for v in zip(*runs, strict=True)]
    line = ax.plot(x, mean, color=colour, **style)[0]
    if len(runs) > 1:
        low, high = ([f(v) for v in zip(*runs, strict=True)] for f in (min, max))
        ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    return line


def label(g) -> str:
    n = len(g.finished)
    return g.label + (f" (n={n})" if n > 1 else "") + ("" if n else " (unfinished)")


def draw(ax, groups, colours, loss_top):
    right = ax.twinx()
    for g, colour in zip(groups, colours, strict=True):
        draw_one(ax, g, TRAIN_LOSS, colour, ls="--", lw=1)
        if draw_one(right, g, TEST_ERROR, colour, lw=2, marker="o", ms=3) is None:
            right.plot([], [], color=colour, lw=2)  # no evaluation yet: the legend still names it
        right.lines[-1].set_label(label(g))
    ax.set_xlabel("iterations")
    ax.set_ylabel("training loss (dashed)")
    ax.set_ylim(0, loss_top)
    ax.set_xlim(left=0)
    right.set_ylabel("test error % (solid)")
    right.set_ylim(0, 100 if max(right.get_ylim()) > 40 else 20)
    right.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)


def loss_axis(groups) -> float:
    """One training-loss axis for every panel: room for every curve after its first record
    (which, at lr 0.1 from scratch, can be far above the rest)."""
    tops = [max(v[1:] or v) for g in groups for v in g.curves(TRAIN_LOSS)[1] if v]
    return math.ceil(max(tops, default=1) * 1.1 * 4) / 4


def records_table(groups, rows: int = 8) -> str:
    """The means the figure draws, as Markdown: about `rows` records, the last one always."""
    curves = [
        tuple(dict(zip(*g.curve(key), strict=True)) for key in (TRAIN_LOSS, TEST_ERROR))
        for g in groups
    ]
    iterations = sorted(set().union(*(loss for loss, _ in curves)))
    step = max(1, math.ceil(len(iterations) / rows))
    chosen = iterations[len(iterations) - 1 :: -step][::-1]
    lines = [
        "| iteration | " + " | ".join(label(g) for g in groups) + " |",
        "|---" * (len(groups) + 1) + "|",
    ]
    for i in chosen:
        cells = [
            (f"{loss[i]:.3f}" if i in loss else "") + (f" / {error[i]:.1f}" if i in error else "")
            for loss, error in curves
        ]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def make(runs, out, args):
    data = one_data_set(runs, "The training curves")
    groups = group_runs(runs)
    by_key = {g.key: g for g in groups}
    variants = [g for g in groups if g.original != g.key]
    panels = [[by_key[g.original], g] if g.original in by_key else [g] for g in variants]
    if not panels:  # only original units: one panel each
        panels = [[g] for g in groups]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.9 * rows), squeeze=False)
    top = loss_axis(groups)
    for ax, panel in zip(axes.flat, panels, strict=False):
        colours = ["grey", "tab:red"] if len(panel) == 2 else ["tab:blue"]
        draw(ax, panel, colours, top)
        ax.set_title(panel[-1].label, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    numbers = out / "curves.md"
    numbers.write_text(
        f"# The numbers of curves.png: training loss (test error % after the slash), the mean "
        f"over seeds\n\n{len(runs)} runs on {data}.\n\n" + records_table(groups)
    )
    title = f"Training curves on {data} ([R2] figures 3 and 6), {len(runs)} runs"
    return save_figure(fig, title, out / "curves") + [numbers]


if __name__ == "__main__":
    run_script(__doc__, make)
