"""The controls of docs/r1_table6.md: how much of a full-schedule error is the data copy's doing
and how much resnet-train's. ResNet-20 trains [R1]'s recipe on a shortened schedule, with the
same seeds, three ways:
- fp32/: resnet-train in fp32;
- bf16/: resnet-train with bf16 autocast (the default on GPUs);
- classic/: scripts/classic_cifar.py --train, a per-image PIL pipeline and a loop of its own,
  with the same initial weights for each seed (seed<N>.json).
Any of the three may be missing; a run not finished is listed and not averaged in. A fourth,
fp32_nchw/ (resnet-train in fp32 with trainer.channels_last=false: the memory format of the
classic arm), is a diagnostic, listed only where it was run.

    python scripts/controls.py ~/runs/r1_table6_short --out docs/r1_table6

writes controls.md: the test error of each seed, the mean, and the difference from resnet-train
in fp32 seed by seed (same seed, same initial weights).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from resnet_repro.errors import UserError
from resnet_repro.reproduction.runs import TEST_ERROR, find_runs

ARMS = (
    ("fp32", "resnet-train", "fp32"),
    ("bf16", "resnet-train", "bf16 autocast"),
    ("classic", "scripts/classic_cifar.py --train", "fp32"),
    ("fp32_nchw", "resnet-train, trainer.channels_last=false", "fp32"),
)
OPTIONAL = {"fp32_nchw"}  # a row only where the folder is there
BASELINE = "fp32"


def read_arm(folder: Path, arm: str) -> tuple[dict[int, float], list[str], dict]:
    """{seed: final test error} of an arm's finished runs, notes on the unfinished ones, and
    the schedule they trained (iterations, milestones)."""
    path = folder / arm
    if not path.is_dir():
        return {}, [], {}
    if arm == "classic":
        errors, schedule = {}, {}
        for f in sorted(path.glob("seed*.json")):
            r = json.loads(f.read_text())
            errors[r["seed"]] = r["test_error"]
            schedule = {"iterations": r["iterations"], "milestones": r["milestones"]}
        return errors, [], schedule
    if not any(path.rglob("config.yaml")):  # the sweep has not started its first run
        return {}, ["not started"], {}
    runs = find_runs([path])
    errors = {r.config["trainer"]["seed"]: r.summary[TEST_ERROR] for r in runs if r.finished}
    notes = [f"seed {r.config['trainer']['seed']}: {r.progress}" for r in runs if not r.finished]
    s = runs[0].config["schedule"]
    return errors, notes, {"iterations": s.get("iterations"), "milestones": s.get("milestones")}


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def controls_table(folder: Path) -> str:
    arms = {arm: read_arm(folder, arm) for arm, _, _ in ARMS}
    if not any(errors or notes for errors, notes, _ in arms.values()):
        raise UserError(
            f"{folder} holds none of fp32/, bf16/, classic/: give the controls' folder."
        )
    schedules = {json.dumps(s, sort_keys=True) for _, _, s in arms.values() if s}
    if len(schedules) > 1:
        raise UserError(f"the arms in {folder} trained different schedules: {sorted(schedules)}.")
    schedule = json.loads(schedules.pop())
    seeds = sorted({seed for errors, _, _ in arms.values() for seed in errors})
    base = arms[BASELINE][0]
    lines = [
        f"ResNet-20, [R1]'s recipe on {schedule['iterations']} iterations (lr divided by 10 at "
        f"{' and '.join(map(str, schedule['milestones']))}), final test error (%) of each seed.",
        "",
        row(
            ["pipeline", "precision", "n", *(f"seed {s}" for s in seeds), "mean +- std"]
            + ["minus resnet-train fp32, same seed: mean (range)", "not counted"]
        ),
        row(["---"] * (len(seeds) + 6)),
    ]
    for arm, pipeline, precision in ARMS:
        errors, notes, _ = arms[arm]
        if arm in OPTIONAL and not (errors or notes):
            continue
        values = list(errors.values())
        if not values:
            spread = "not run" if not notes else "unfinished"
        elif len(values) == 1:
            spread = f"{values[0]:.2f}"
        else:
            spread = f"{statistics.fmean(values):.2f} +- {statistics.stdev(values):.2f}"
        paired = [errors[s] - base[s] for s in errors if s in base]
        versus = ""
        if arm != BASELINE and paired:
            versus = f"{statistics.fmean(paired):+.2f} ({min(paired):+.2f} to {max(paired):+.2f})"
        cells = [pipeline, precision, str(len(values))]
        cells += [f"{errors[s]:.2f}" if s in errors else "" for s in seeds]
        cells += [spread, versus, "; ".join(notes)]
        lines.append(row(cells))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folder", help="the controls' folder: fp32/, bf16/, classic/ below it")
    p.add_argument("--out", default="figures", help="folder for controls.md (default: figures)")
    args = p.parse_args()
    try:
        text = controls_table(Path(args.folder).expanduser())
    except UserError as e:
        print(f"controls.py: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "controls.md").write_text(text + "\n")
    print(text)
    print(out / "controls.md")


if __name__ == "__main__":
    main()
