"""[R1] figure 7 from trained checkpoints: the standard deviation of each 3x3 layer's response
(after BN, before the addition and ReLU) on the test set, in layer order and sorted by size, for
the CIFAR nets with original units among the runs (the paper: plain-20/56, ResNet-20/56/110).
Runs of one configuration over several seeds are averaged. See
resnet_repro/reproduction/responses.py.

    python scripts/figure7.py outputs/r1_cifar/2026-11-24_10-00-00 --out figures

A run whose checkpoints are gone (its evidence copied into docs/ by scripts/evidence.py) is
measured from its exported weights, given with --weights: the file whose description names the
run's model, data, seed and last iteration.

    python scripts/figure7.py docs/r1_table6/runs/resnet20 --weights weights/resnet20.pt
"""

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from report import COLOURS, run_script, save_figure  # noqa: E402

from resnet_repro.data import class_count, load_dataset  # noqa: E402
from resnet_repro.data.tensors import EvalBatches  # noqa: E402
from resnet_repro.errors import UserError  # noqa: E402
from resnet_repro.nets.models import build_model, model_defaults  # noqa: E402
from resnet_repro.reproduction.responses import layer_responses  # noqa: E402
from resnet_repro.reproduction.runs import group_runs, one_data_set, what_it_trains  # noqa: E402
from resnet_repro.weights import Weights, read  # noqa: E402

STYLE = {"plain": dict(ls="--"), "ResNet": dict(ls="-")}


def test_batches(config: dict, data_root: str | None) -> EvalBatches:
    data_args = {k: v for k, v in config["data"].items() if k != "batch_size"}
    if data_root and "root" in data_args:  # synthetic data has no root
        data_args["root"] = data_root
    if "download" in data_args:
        data_args["download"] = False  # a figure reads the data the runs trained on
    data = load_dataset(**data_args)
    _, eval_sets = data.sources(128, 0, 500, torch.device("cpu"))  # as the runs normalised
    return eval_sets["test"]


def is_of(w: Weights, run) -> bool:
    """Whether a weights file's description says it is this run's net at its last iteration."""
    if w.model is None or w.data is None:
        return False
    same_model = what_it_trains("model", model_defaults() | w.model) == what_it_trains(
        "model", run.model
    )
    return (
        same_model
        and w.data.get("name") == run.data
        and w.trained.get("seed") == run.config["trainer"]["seed"]
        and w.trained.get("iteration") == run.last_iteration
    )


def run_weights(run, shipped: list[Weights]) -> dict:
    """The run's trained state: its newest good checkpoint, else the weights file of it."""
    if (Path(run.path) / "checkpoints").is_dir():
        return read(run.path).state
    for w in shipped:
        if is_of(w, run):
            return w.state
    raise UserError(
        f"{run.path} has no checkpoint (checkpoints/last.pt) to measure, and no weights file "
        "given with --weights is of it (the same model, data and seed, at its last iteration "
        f"{run.last_iteration}): give the file resnet-export wrote from it, or --no-figure7."
    )


def responses(run, batches, shipped: list[Weights]) -> list[float]:
    model = build_model(**run.model, num_classes=class_count(**run.config["data"]))
    model.load_state_dict(run_weights(run, shipped))
    return layer_responses(model, batches)


def make(runs, out, args):
    one_data_set(runs, "Figure 7")
    runs = [r for r in runs if r.model["arch"] == "cifar" and r.model["activation"] == "original"]
    if not runs:
        raise UserError("figure 7 measures CIFAR nets with original units; none of these is.")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    shipped = [read(path) for path in args.weights]
    batches = test_batches(runs[0].config, args.data_root)
    fig, axes = plt.subplots(2, 1, figsize=(7, 6.5))
    measured = {}  # label -> each layer's standard deviation, in layer order
    for g in sorted(
        group_runs(runs), key=lambda g: (g.label[0] != "p", g.config["model"]["depth"])
    ):
        per_run = [responses(r, batches, shipped) for r in (g.finished or g.runs)]
        std = [statistics.fmean(layer) for layer in zip(*per_run, strict=True)]
        kind = "plain" if g.config["model"]["shortcut"] == "none" else "ResNet"
        label = g.label + ("" if g.finished else " (unfinished)")
        style = dict(color=COLOURS.get(g.config["model"]["depth"], "black"), **STYLE[kind])
        x = range(1, len(std) + 1)
        axes[0].plot(x, std, label=label, **style)
        axes[1].plot(x, sorted(std, reverse=True), label=label, **style)
        measured[label] = std
    for ax, order in zip(axes, ("original", "sorted by magnitude"), strict=True):
        ax.set_xlabel(f"layer index ({order})")
        ax.set_ylabel("std")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    (out / "figure7.json").write_text(json.dumps(measured, indent=1) + "\n")
    return [out / "figure7.json"] + save_figure(
        fig, "[R1] figure 7: std of the 3x3 layers' responses on the test set", out / "figure7"
    )


def options(parser):
    parser.add_argument("--data-root", help="where the data is now, if not at the runs' data.root")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    parser.add_argument(
        "--weights",
        nargs="+",
        default=[],
        metavar="FILE",
        help="exported weights (resnet-export) of runs whose checkpoints are gone",
    )


if __name__ == "__main__":
    run_script(__doc__, make, options)
