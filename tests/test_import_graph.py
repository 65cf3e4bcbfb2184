"""The package reads as a pipeline: stage packages import downward only (no cycles between
them), and nothing below the application layer imports `app` or `cli`."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# The application layer: the wiring, the command line and the demo built on them.
TOP = frozenset({"app", "cli", "__main__", "demo"})


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _unit(module: str) -> str:
    """The node of the graph: a stage package (sentinel.rules) or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[tuple[str, str, str]]]:
    """unit -> {(imported unit, importing module, imported module)}, every import counted
    (also those only for type checking: they couple the packages all the same)."""
    edges: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for path in sorted((SRC / "sentinel").rglob("*.py")):
        module = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("sentinel.") and _unit(name) != _unit(module):
                    edges[_unit(module)].add((_unit(name), module, name))
    return edges


def cycles(edges: dict[str, set[tuple[str, str, str]]]) -> list[list[str]]:
    """Strongly connected sets of more than one unit (Tarjan)."""
    graph = {unit: {target for target, _, _ in out} for unit, out in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for target in graph.get(unit, ()):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in on_stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == unit:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def test_no_cycle_between_packages() -> None:
    """No two stage packages (or top-level modules) import each other, directly or not."""
    edges = import_graph()
    found = cycles(edges)
    detail = []
    for group in found:
        members = set(group)
        detail += [f"  {m} imports {n}" for unit in group for target, m, n in
                   sorted(edges[unit]) if target in members]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_nothing_below_the_application_imports_it() -> None:
    """Stages never import app, cli or the demo."""
    wrong = sorted(f"{m} imports {n}" for unit, out in import_graph().items()
                   if unit not in TOP for target, m, n in out if target in TOP)
    assert not wrong, "\n".join(wrong)


def test_the_graph_is_computed_from_real_imports() -> None:
    """The checker sees the pipeline's own edges (it cannot pass by seeing nothing)."""
    edges = import_graph()
    assert ("incidents", "sentinel.escalation.engine", "sentinel.incidents.model") in \
        edges["escalation"]
    assert cycles({"a": {("b", "a.x", "b.y")}, "b": {("a", "b.y", "a.x")}}) == [["a", "b"]]
