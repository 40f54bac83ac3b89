"""The code's shape: the README's picture of the package is the package, and no module or
function outgrows what one reads on a screen or two (STYLE.md)."""

import ast
import re

from conftest import ROOT

PACKAGE = ROOT / "resnet_repro"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def modules() -> list[str]:
    return sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") or p.parent.name == "data"
    )


def readme_tree() -> list[str]:
    """The modules the README's "The code" section draws, as paths below resnet_repro/."""
    text = (ROOT / "README.md").read_text().split("## The code", 1)[1]
    block = text.split("```", 2)[1]
    names, folder = [], ""
    for line in block.splitlines():
        m = re.match(r"( *)(\S+)", line)
        if not m or m.group(2) == "resnet_repro/":
            continue
        indent, name = len(m.group(1)), m.group(2)
        if indent == 0:  # conf/, scripts/: beside the package
            break
        if indent == 2 and name.endswith("/"):
            folder = name
            if name == "data/":
                names.append("data/__init__.py")  # the interface lives in the package itself
        elif name.endswith(".py"):
            names.append((folder if indent == 4 else "") + name)
    return sorted(names)


def test_the_readme_draws_every_module_and_no_other():
    assert readme_tree() == modules()


def test_no_module_or_function_is_too_long():
    long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path.name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}: {node.name}, {lines} lines")
    assert not long
