"""Copy what the tables and figures read from runs (config.yaml, metrics.jsonl, summary.json,
and scripts/classic_cifar.py's seed<N>.json) into the checkout, so that a docs page's numbers
can be checked against their runs without the runs (tests/test_r1_table6.py does):

    python scripts/evidence.py ~/runs/r1_table6 --out docs/r1_table6/runs

Checkpoints, logs and TensorBoard files stay behind. Folders keep their layout below each
source (a sweep's run numbers, a run's name).
"""

import argparse
import shutil
from pathlib import Path

KEPT = ("config.yaml", "metrics.jsonl", "summary.json")


def kept(source: Path):
    for f in sorted(source.rglob("*")):
        parts = f.relative_to(source).parts
        if f.is_file() and ".hydra" not in parts and "checkpoints" not in parts:
            if f.name in KEPT or (f.name.startswith("seed") and f.suffix == ".json"):
                yield f


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sources", nargs="+", help="run directories, sweeps or folders of them")
    p.add_argument("--out", required=True, help="where the copies go, one folder per source")
    args = p.parse_args()
    for source in map(lambda s: Path(s).expanduser(), args.sources):
        for f in kept(source):
            to = Path(args.out) / source.name / f.relative_to(source)
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, to)
            print(to)


if __name__ == "__main__":
    main()
