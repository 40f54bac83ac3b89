"""`resnet-train --help`: what the tool does, its config groups and the papers' experiments, read
from conf/ so that a new preset or experiment shows up by itself."""

import itertools
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

INTRO = """\
resnet-train: train the ResNets of He et al., "Deep Residual Learning" [R1] and "Identity
Mappings in Deep Residual Networks" [R2], on CIFAR-10/100 and ImageNet, and reproduce their
results. Settings are key=value overrides (Hydra):

  resnet-train model=resnet110 data.root=/data/cifar10           one run, [R1]'s recipe
  resnet-train -m model=resnet20,resnet56 trainer.seed=0,1,2     a sweep (-m: multirun)
  resnet-train experiment=r1_cifar data.root=/data/cifar10       a result of the papers
  resnet-train experiment=r1_cifar hydra/launcher=local          its runs side by side, one
                                                                 a GPU (runs_per_gpu=4: four)
  torchrun --nproc_per_node=2 $(which resnet-train) model=resnet110   2 GPUs (see README)

Run the same command again to resume a stopped run (hydra.run.dir=<its directory>).
"""

OUTRO = """\
Figures and tables from runs: make figures RUNS="outputs/r1_cifar/<date>" (scripts/figures.py).
Every setting and its default: resnet-train --cfg job. Hydra's own options: --hydra-help.
"""


def sweep_grid(params) -> tuple[list[list[str]], list[str | None]]:
    """An experiment's hydra.sweeper.params as Hydra's basic sweeper expands them: the overrides
    of each point of the grid but for the seed, and the seeds ([None]: the config's own). A seed
    changes no configuration, so callers that build each configuration do it once a point."""
    axes = {k: [v.strip() for v in str(vals).split(",")] for k, vals in (params or {}).items()}
    seeds = axes.pop("trainer.seed", [None])
    points = itertools.product(*([f"{k}={v}" for v in values] for k, values in axes.items()))
    return [list(p) for p in points], seeds


def experiment_line(path: Path) -> str:
    """The file's first comment line and how many runs its sweep makes."""
    lines = path.read_text().splitlines()
    about = next((ln[2:] for ln in lines[1:] if ln.startswith("# ")), "")
    points, seeds = sweep_grid(OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params"))
    runs = len(points) * len(seeds)
    count = f"{runs} run{'s' if runs > 1 else ''}"
    return wrap(f"  {path.stem:<19} {count:>8}  {about}", 32)


def wrap(line: str, indent: int) -> str:
    return textwrap.fill(line, 100, subsequent_indent=" " * indent, break_on_hyphens=False)


def usage(conf_dir: Path) -> str:
    groups = []
    for folder in sorted(p for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"):
        if folder.name == "experiment":
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        groups.append(wrap(f"  {folder.name + ':':<15} {', '.join(options)}", 18))
    experiments = [experiment_line(p) for p in sorted((conf_dir / "experiment").glob("*.yaml"))]
    return "\n".join(
        [
            INTRO,
            "Config groups (group=option; defaults in conf/config.yaml):",
            *groups,
            "",
            "Experiments (experiment=NAME; each is a sweep, in outputs/NAME/<date>/):",
            *experiments,
            "",
            OUTRO,
        ]
    )
