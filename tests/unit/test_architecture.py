"""The shape of the house, held against the code's own imports.

- No import circle between modules (an import inside a function counts: it is still an arrow).
- No circle between rooms either: a room is a subpackage of ``pipeline`` (``pipeline/data``) or
  one of its top-level modules (``pipeline/privacy.py``), and ``serving`` and ``flows``. An
  arrow from a room to a room that imports it back is an arrow that runs up the flow.
- ``pipeline`` imports nothing from ``serving``, ``flows``, ``tests`` or ``benchmarks``.
- No module over 500 lines and no function over 80 in the product, the flows and benchmarks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from pipeline.config import PROJECT_ROOT

PACKAGES = ("pipeline", "serving", "flows")
CHECKED = (*PACKAGES, "benchmarks")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(roots: Iterable[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in roots:
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _sources(PACKAGES)


def _resolve(name: str) -> str | None:
    """The module of ours that an import of ``name`` loads last (a package's face is its
    ``__init__``), or None when it is not ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    """Every module of ours that ``module`` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            target = _resolve(name)
            if target and target != module:
                out.add(target)
    return out


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _why(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]


def test_resolver_reads_relative_and_package_imports():
    assert _resolve("pipeline.config.Settings") == "pipeline.config"
    assert _resolve("numpy") is None
    assert _room("pipeline.data.ingest") == "pipeline.data"
    assert _room("serving.api.deps") == "serving"
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_circle_between_modules():
    circles = _cycles(GRAPH)
    assert not circles, "\n".join(" | ".join(_why(GRAPH, c)) for c in circles)


def test_no_arrow_runs_back_up_between_rooms():
    arrows: dict[tuple[str, str], list[str]] = {}
    for module, targets in sorted(GRAPH.items()):
        for target in sorted(targets):
            if _room(target) != _room(module):
                arrows.setdefault((_room(module), _room(target)), []).append(
                    f"{module} -> {target}"
                )
    rooms: dict[str, set[str]] = {}
    for a, b in arrows:
        rooms.setdefault(a, set()).add(b)
    circles = _cycles(rooms)
    # The evidence: of two rooms importing each other, the thinner direction runs up.
    evidence = [
        line
        for (a, b), lines in arrows.items()
        if (b, a) in arrows and len(lines) <= len(arrows[(b, a)])
        for line in lines
    ]
    assert not circles, f"rooms in a circle {circles}; arrows up:\n" + "\n".join(evidence)


def test_pipeline_imports_nothing_above_it():
    above = ("serving", "flows", "tests", "benchmarks")
    wrong = []
    for module, path in MODULES.items():
        if not module.startswith("pipeline"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            wrong += [f"{module} imports {n}" for n in names if n.split(".")[0] in above]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("root", CHECKED)
def test_modules_and_functions_small_enough_to_read(root: str):
    too_long = []
    for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        name = path.relative_to(PROJECT_ROOT)
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "\n".join(too_long)
