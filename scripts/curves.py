"""[R2] figures 3 and 6 from runs: training curves of each shortcut type or unit against the
original unit of the same net; training loss dashed (left axis), test error solid (right axis),
one panel per variant with its original in grey. Seeds of one configuration are averaged.

    python scripts/curves.py outputs/r2_table1/2026-11-24_10-00-00 --out figures
"""

import dataclasses
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report import run_script, save_figure  # noqa: E402

from resnet_repro.runs import TEST_ERROR, TRAIN_LOSS, group_runs, one_data_set  # noqa: E402
from resnet_repro.units import UnitOptions  # noqa: E402

# The original unit and identity shortcut: UnitOptions' defaults for what a variant changes.
ORIGINAL_UNIT = {
    f.name: f.default
    for f in dataclasses.fields(UnitOptions)
    if f.name not in ("block", "shortcut", "stride_on")
}


def original_of(group) -> str:
    """The configuration of the same net with the original unit and identity shortcut."""
    c = json.loads(group.runs[0].experiment())
    c["model"] |= {k: v for k, v in ORIGINAL_UNIT.items() if k in c["model"]}
    return json.dumps(c, sort_keys=True)


def draw(ax, groups, colours):
    right = ax.twinx()
    for g, colour in zip(groups, colours, strict=True):
        label = g.label + ("" if g.finished else " (unfinished)")
        x, loss = g.curve(TRAIN_LOSS)
        ax.plot(x, loss, ls="--", lw=1, color=colour)
        x, err = g.curve(TEST_ERROR)
        right.plot(x, err, lw=2, color=colour, label=label)
    ax.set_xlabel("iterations")
    ax.set_ylabel("training loss (dashed)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    right.set_ylabel("test error % (solid)")
    right.set_ylim(0, 100 if max(right.get_ylim()) > 40 else 20)
    right.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)


def make(runs, out, args):
    data = one_data_set(runs, "The training curves")
    groups = group_runs(runs)
    by_key = {g.runs[0].experiment(): g for g in groups}
    variants = [g for g in groups if original_of(g) != g.runs[0].experiment()]
    panels = [[by_key[original_of(g)], g] if original_of(g) in by_key else [g] for g in variants]
    if not panels:  # only original units: one panel each
        panels = [[g] for g in groups]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.9 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        colours = ["grey", "tab:red"] if len(panel) == 2 else ["tab:blue"]
        draw(ax, panel, colours)
        ax.set_title(panel[-1].label, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return save_figure(
        fig, f"Training curves on {data} ([R2] figures 3 and 6), {len(runs)} runs", out / "curves"
    )


if __name__ == "__main__":
    run_script(__doc__, make)
