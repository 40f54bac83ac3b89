"""The papers' tables filled in from runs: Markdown, the measured numbers beside the published."""

from .paper import FAIL, FAIL_ABOVE, TABLES, Table
from .runs import TEST_ERROR, Group, Run, group_runs, model_label

HEADER = (
    "| network | iterations | n | median | mean +- std | best | paper | difference | not counted |",
    "|---|---|---|---|---|---|---|---|---|",
)


def paper_cell(value) -> str:
    if value == FAIL:
        return f"fail (> {FAIL_ABOVE:g})"
    return "" if value is None else f"{value:.2f}"


def difference(measured: float, paper, statistic: str) -> str:
    if paper == FAIL:
        return "fails too" if measured > FAIL_ABOVE else f"did not fail (<= {FAIL_ABOVE:g})"
    if paper is None:
        return ""
    return f"{measured - paper:+.2f}" + ("" if statistic == "median" else f" ({statistic})")


def unfinished_cell(group: Group) -> str:
    runs = group.unfinished
    if not runs:
        return ""
    furthest = max(runs, key=lambda r: r.last_iteration)
    return f"{len(runs)} unfinished (furthest: {furthest.progress})"


def group_line(name: str, group: Group, paper, note: str = "", statistic: str = "median") -> str:
    s = group.stats(TEST_ERROR)
    paper_text = paper_cell(paper) + (f" ({note})" if note else "")
    cells = [name, str(group.iterations or "?"), str(s.n if s else 0)]
    if s is None:
        cells += ["unfinished", "", "", paper_text, ""]
    else:
        cells += [
            f"{s.median:.2f}",
            f"{s.mean:.2f} +- {s.std:.2f}",
            f"{s.best:.2f}",
            paper_text,
            difference(getattr(s, statistic), paper, statistic),
        ]
    return "| " + " | ".join(cells + [unfinished_cell(group)]) + " |"


def table_lines(table: Table, groups: list[Group]) -> list[str]:
    """The table, if any group belongs to it: every paper row, with its runs or 'not run'."""
    matched = [(row, [g for g in groups if row.match(g.config)]) for row in table.rows]
    if not any(found for _, found in matched):
        return []
    lines = [f"## {table.title}", "", *HEADER]
    for row, found in matched:
        if not found:
            lines.append(f"| {row.name} | | 0 | not run | | | {paper_cell(row.paper)} | | |")
        for group in found:
            lines.append(group_line(row.name, group, row.paper, row.note, row.statistic))
    return lines + [""]


def other_lines(groups: list[Group]) -> list[str]:
    """Groups that no paper row is about (another depth, data set or recipe)."""
    others = [g for g in groups if not any(r.match(g.config) for t in TABLES for r in t.rows)]
    if not others:
        return []
    lines = ["## Runs that no table of the papers reports", "", *HEADER]
    for g in others:
        lines.append(group_line(f"{model_label(g.config['model'])} on {g.runs[0].data}", g, None))
    return lines + [""]


def evidence_lines(runs: list[Run]) -> list[str]:
    """What the numbers rest on: how many runs, where they ran, how long they took."""
    done = [r for r in runs if r.finished]
    hardware = sorted(
        {
            (r.summary.get("hardware") or {}).get("gpu")
            or (r.summary.get("hardware") or {}).get("cpu")
            or "unknown hardware"
            for r in done
        }
    )
    hours = sum(r.summary.get("wall_time_s", 0) for r in done) / 3600
    schedules = sorted({str(r.planned_iterations) for r in runs})
    return [
        f"{len(runs)} runs, {len(done)} finished; {hours:.2f} h of training in all, on "
        f"{', '.join(hardware) or 'no finished run'}; iterations per run: {', '.join(schedules)}.",
        "n counts finished runs only; unfinished runs are listed, never averaged in. The papers'"
        " CIFAR schedule is 64000 iterations: a shorter run is not comparable with the paper's "
        "number, only with runs of its own length.",
        "",
    ]


def make_tables(runs: list[Run]) -> str:
    groups = group_runs(runs)
    lines = []
    for table in TABLES:
        lines += table_lines(table, groups)
    lines += other_lines(groups)
    return "\n".join(["# Test error against the papers", "", *evidence_lines(runs), *lines])
