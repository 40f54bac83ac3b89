"""The papers' tables filled in from runs: Markdown, the measured numbers beside the published."""

from .paper import (
    FAIL,
    FAIL_ABOVE,
    PAPER_ITERATIONS,
    R1_TABLE6,
    R1_TABLE6_REPRODUCTIONS,
    R2_TABLE1,
    TABLES,
    Table,
    r2_table1_rows,
)
from .runs import TEST_ERROR, TRAIN_ERROR, TRAIN_LOSS, Group, Run, group_runs, model_label

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


def reproduction_lines(groups: list[Group]) -> list[str]:
    """[R1] table 6's rows trained on the paper's whole schedule, beside [R1] and independent
    reproductions of it (each with its recipe and source)."""
    rows = [
        (row, g)
        for row in R1_TABLE6.rows
        for g in groups
        if row.match(g.config) and g.iterations == PAPER_ITERATIONS and g.finished
    ]
    if not rows:
        return []
    names = [r.name for r in R1_TABLE6_REPRODUCTIONS]
    lines = [
        f"## [R1] table 6 at its own schedule ({PAPER_ITERATIONS} iterations), beside "
        "independent reproductions",
        "",
        "| network | data | here: median (n) | [R1] | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for row, g in rows:
        s = g.stats(TEST_ERROR)
        others = [
            f"{r.errors[row.name]:.2f}" if row.name in r.errors else ""
            for r in R1_TABLE6_REPRODUCTIONS
        ]
        cells = [
            row.name,
            g.runs[0].data,
            f"{s.median:.2f} ({s.n})",
            paper_cell(row.paper),
            *others,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {r.name}: {r.recipe}. {r.source}" for r in R1_TABLE6_REPRODUCTIONS]
    return lines + [""]


SHORTCUT_HEADER = (
    "| shortcut type | network | iterations | n | training loss | training error | test error "
    "| minus the identity's: loss, test error | [R2], ResNet-110, 64k iterations |",
    "|---|---|---|---|---|---|---|---|---|",
)


DIFFERENCES = (TRAIN_LOSS, TEST_ERROR)


def spread_cell(group: Group, key: str, digits: int = 2) -> str:
    """The mean over the finished seeds, and their range when there are several."""
    s = group.stats(key)
    if s is None:
        return "unfinished"
    values = [r.summary[key] for r in group.finished if key in r.summary]
    cell = f"{s.mean:.{digits}f}"
    return cell + (f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if s.n > 1 else "")


def shortcut_groups(groups: list[Group]) -> dict[str, list[tuple]]:
    """[R2] table 1's cases on nets that its table is not about (another depth or data set), by
    the net: {identity's key: [(row, group), ...]}, for nets where a case other than the
    identity ran. The identity of such a net is there too, though table 6 may show it."""
    rows = r2_table1_rows(None, None)
    in_table1 = {g.key for g in groups for r in R2_TABLE1.rows if r.match(g.config)}
    by_net: dict[str, list[tuple]] = {}
    for row in rows:
        for g in groups:
            if g.key not in in_table1 and row.match(g.config):
                by_net.setdefault(g.original, []).append((row, g))
    return {k: v for k, v in by_net.items() if any(g.key != k for _, g in v)}


def shortcut_lines(groups: list[Group]) -> list[str]:
    """[R2] table 1's shortcut types on a shorter schedule or another depth (shortcuts_cpu):
    the final training loss and errors of each, beside the identity's and [R2]'s number."""
    nets = shortcut_groups(groups)
    if not nets:
        return []
    lines = [
        "## [R2] table 1's shortcut types at another depth, schedule or data set",
        "",
        "The mean over seeds, with the range between them when there are several; training loss"
        " and error are the last record's (the mean over its iterations' augmented batches). [R2]'s"
        " number is for ResNet-110 after 64000 iterations: beside a shorter run it says which way"
        " the paper found each case, not what this run should reach.",
        "",
        *SHORTCUT_HEADER,
    ]
    for key, found in nets.items():
        identity = next((g for _, g in found if g.key == key), None)
        for row, g in found:
            versus = ""
            if identity and g is not identity and g.finished and identity.finished:
                loss, error = (g.stats(k).mean - identity.stats(k).mean for k in DIFFERENCES)
                versus = f"{loss:+.3f}, {error:+.2f}"
            cells = [
                row.name,
                f"{g.label} on {g.runs[0].data}" + (f"; {unfinished_cell(g)}" * bool(g.unfinished)),
                str(g.iterations or "?"),
                str(len(g.finished)),
                spread_cell(g, TRAIN_LOSS, 3),
                spread_cell(g, TRAIN_ERROR),
                spread_cell(g, TEST_ERROR),
                versus,
                paper_cell(row.paper),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def other_lines(groups: list[Group], shown: set[str]) -> list[str]:
    """Groups that no paper row is about (another depth, data set or recipe), and that no
    other table has shown."""
    others = [
        g
        for g in groups
        if g.key not in shown and not any(r.match(g.config) for t in TABLES for r in t.rows)
    ]
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
        f"{len(runs)} run{'s' * (len(runs) != 1)}, {len(done)} finished; {hours:.2f} h of training in all, on "
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
        lines += reproduction_lines(groups) if table is R1_TABLE6 else []
    lines += shortcut_lines(groups)
    shown = {g.key for found in shortcut_groups(groups).values() for _, g in found}
    lines += other_lines(groups, shown)
    return "\n".join(["# Test error against the papers", "", *evidence_lines(runs), *lines])
