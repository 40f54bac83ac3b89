"""[R1] figure 6 from runs: error (%) against iterations, training error dashed, test error bold;
one panel for the plain nets, one for the ResNets, one for ResNet-110 against ResNet-1202 (when
there are 1202-layer runs). Runs of one configuration over several seeds are averaged.

    python scripts/figure6.py outputs/r1_cifar/2026-11-24_10-00-00 --out figures
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from report import COLOURS, run_script, save_figure  # noqa: E402

from resnet_repro.errors import UserError  # noqa: E402
from resnet_repro.reproduction.runs import TEST_ERROR, TRAIN_ERROR, group_runs, one_data_set  # noqa: E402


def is_r1_cifar_net(m: dict) -> bool:
    return (
        m["arch"] == "cifar"
        and m["block"] == "basic"
        and m["activation"] == "original"
        and m["shortcut_variant"] == "identity"
        and (m["shortcut_scale"], m["residual_scale"]) == (1.0, 1.0)
    )


def panels(groups):
    plain = [g for g in groups if g.config["model"]["shortcut"] == "none"]
    resnets = [g for g in groups if g not in plain and g.config["model"]["depth"] != 1202]
    deep = [g for g in groups if g not in plain and g.config["model"]["depth"] in (110, 1202)]
    out = [("plain networks", plain), ("ResNets", resnets)]
    if any(g.config["model"]["depth"] == 1202 for g in deep):
        out.append(("ResNet-110 and ResNet-1202", deep))
    return [(title, gs) for title, gs in out if gs]


def draw(ax, title, groups, scale, top):
    for g in sorted(groups, key=lambda g: g.config["model"]["depth"]):
        depth = g.config["model"]["depth"]
        colour = COLOURS.get(depth, "black")
        label = g.label + (f" (n={len(g.finished)})" if len(g.finished) > 1 else "")
        if not g.finished:
            label += f" (unfinished: {g.runs[0].progress})"
        for key, style in ((TRAIN_ERROR, dict(ls="--", lw=1)), (TEST_ERROR, dict(lw=2.2))):
            x, y = g.curve(key)
            if y:
                ax.plot([i / scale for i in x], y, color=colour, **style)
        ax.plot([], [], color=colour, lw=2.2, label=label)
    ax.set_title(title)
    ax.set_ylim(0, top)
    ax.set_xlim(left=0)
    ax.set_xlabel("iter. (1e4)" if scale == 1e4 else "iterations")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    styles = [Line2D([], [], color="grey", ls="--", lw=1), Line2D([], [], color="grey", lw=2.2)]
    first = ax.legend(loc="upper right", fontsize=8)
    ax.add_artist(first)
    ax.legend(styles, ["training error", "test error"], loc="lower left", fontsize=8)


def y_top(groups) -> float:
    """[R1]'s axis, 0-20%, where every curve ends inside it; else room for the whole curves
    (a shortened schedule), the same for every panel."""
    curves = [g.curve(key)[1] for g in groups for key in (TRAIN_ERROR, TEST_ERROR)]
    curves = [c for c in curves if c]
    if all(c[-1] <= 20 for c in curves):
        return 20.0
    return min(100.0, 5 * math.ceil(max(max(c) for c in curves) / 5) + 5)


def make(runs, out, args):
    data = one_data_set(runs, "Figure 6")
    runs = [r for r in runs if is_r1_cifar_net(r.model)]
    if not runs:
        raise UserError(
            "figure 6 is of [R1]'s CIFAR nets (plain or ResNet, basic original units, identity "
            "shortcuts), and none of these runs is one."
        )
    groups = group_runs(runs)
    chosen = panels(groups)
    longest = max(r.planned_iterations or r.last_iteration for r in runs)
    scale = 1e4 if longest >= 20000 else 1
    fig, axes = plt.subplots(1, len(chosen), figsize=(5.2 * len(chosen), 4.2), squeeze=False)
    for ax, (title, gs) in zip(axes[0], chosen, strict=True):
        draw(ax, title, gs, scale, y_top(groups))
    title = f"[R1] figure 6 from {len(runs)} run{'s' * (len(runs) != 1)} on {data}"
    return save_figure(fig, title, out / "figure6")


if __name__ == "__main__":
    run_script(__doc__, make)
