"""The papers' tables from runs, in Markdown: [R1] table 6 and [R2] tables 1-4, each row's
measured median, mean +- std and n beside the published number and the difference; runs that
have not finished are listed, never averaged in.

    python scripts/tables.py outputs/r2_table1/2026-11-24_10-00-00 --out figures
"""

from report import run_script

from resnet_repro.reproduction.tables import make_tables


def make(runs, out, args):
    text = make_tables(runs)
    path = out / "tables.md"
    path.write_text(text + "\n")
    print(text)
    return [path]


if __name__ == "__main__":
    run_script(__doc__, make)
