"""The package's shape, checked: imports flow one way, methods are known by one table, the loop stays short."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from slate.config import Method
from slate.methods import METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "slate"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the package's modules it imports, at module level or inside a function (both count: an import
    hidden in a function still runs, and a circle through it is one a reader has to untangle)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x, from ..a import b
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from slate.trainer import checkpoint` imports the module slate.trainer.checkpoint
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:  # `import slate.x.y` counts as slate.x.y
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules, the first repeated at the end), or None: a depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_import_graph_finds_a_circle_it_is_given() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_circles() -> None:
    graph = import_graph()
    assert "slate.trainer.checkpoint" in graph["slate.trainer.loop"]  # `from slate.trainer import checkpoint`
    assert "slate.judge.openai_backend" in graph["slate.judge.factory"]  # an import inside a function counts
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_every_method_of_the_config_is_a_line_of_the_table() -> None:
    assert set(METHODS) == set(get_args(Method))
    assert [name for name, m in METHODS.items() if m.is_truncated] == ["slate", "slate_em", "slate_ig"]
    assert [name for name, m in METHODS.items() if m.needs_scorer] == ["igpo", "slate_ig"]
    assert [name for name, m in METHODS.items() if m.needs_judge] == ["slate", "slate_full"]


def test_only_the_table_knows_a_method_by_its_name() -> None:
    """No module but methods.py compares ``.method`` with a string (``== "stepsearch"``, ``in ("slate", …)``)."""
    offenders = []
    for name, path in modules().items():
        if name == "slate.methods":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            names_method = any(isinstance(side, ast.Attribute) and side.attr == "method" for side in sides)
            strings = [c for side in sides for c in ast.walk(side) if isinstance(c, ast.Constant)
                       and c.value in METHODS]
            if names_method and strings:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_the_training_loop_reads_in_one_scroll() -> None:
    assert len((PACKAGE / "trainer" / "loop.py").read_text().splitlines()) <= 300
