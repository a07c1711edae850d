"""The shape the code keeps: layers import one way, SQL only in the store, no import cycles, no
source file past 500 lines, and an opening docstring in every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.fixtures import REPO

PACKAGES = ("service", "policies", "adapters")
SQL = re.compile(r"\bSELECT\b.+\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|"
                 r"\b(?:CREATE|ALTER|DROP)\s+(?:TABLE|INDEX)\b|\bPRAGMA\s+\w+|\bBEGIN\s+IMMEDIATE\b", re.S)  # upper case, as every query here is written


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """First-party modules `path` imports, anywhere in it (inside functions too)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def test_policies_and_adapters_never_import_service():
    for name, path in modules().items():
        if name.startswith(("policies", "adapters")):
            bad = {m for m in imports(path, name) if m.startswith("service")}
            assert not bad, f"{name} imports {bad}"


def test_adapters_never_import_policies_back_from_where_policies_import_adapters():
    # policies/ is pure logic over text: it never imports adapters/ (adapters/ may use policies/).
    for name, path in modules().items():
        if name.startswith("policies"):
            bad = {m for m in imports(path, name) if m.startswith("adapters")}
            assert not bad, f"{name} imports {bad}"


def test_no_import_cycles():
    mods = modules()
    graph = {n: {m for m in imports(p, n) if m in mods and m != n} for n, p in mods.items()}
    # A package's __init__ re-exporting its own modules is not a cycle through them.
    for n in graph:
        graph[n] = {m for m in graph[n] if not (m.startswith(n + ".") and mods[n].name == "__init__.py")
                    and not (n.startswith(m + ".") and mods[m].name == "__init__.py")}
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_sql_only_in_the_store():
    for name, path in modules().items():
        if name.startswith("service.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                raise AssertionError(f"{name}:{node.lineno} holds SQL: {node.value[:60]!r}")


def test_no_source_file_over_500_lines_and_every_module_says_why():
    for name, path in modules().items():
        lines = path.read_text().count("\n")
        assert lines <= 500, f"{name} has {lines} lines"
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no opening docstring"
