"""The shape docs/architecture.md promises, checked on the source: small modules and functions,
no import cycle, the CLI on top (nothing else imports it), paramiko only inside hpcnb/ssh/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hpcnb"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import, at any depth, except those only for type checkers."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative import
        package = importer.split(".")[: -node.level] if importer in MODULES else importer.split(".")
        base = ".".join([*package, base]) if base else ".".join(package)
    # `from hpcnb.ssh import auth` imports the module hpcnb.ssh.auth
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


GRAPH = {
    name: {t for node in _imports(ast.parse(path.read_text())) for t in _targets(node, name)
           if t in MODULES and t != name}
    for name, path in MODULES.items()
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines (split it by idea)"


def test_functions_are_short() -> None:
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_entry_point_imports_the_cli() -> None:
    outside = sorted(name for name, targets in GRAPH.items()
                     if any(t == "hpcnb.cli" or t.startswith("hpcnb.cli.") for t in targets)
                     and not name.startswith("hpcnb.cli") and name != "hpcnb.__main__")
    assert outside == []


def test_paramiko_only_in_the_ssh_package() -> None:
    users = sorted(name for name, path in MODULES.items()
                   if not name.startswith("hpcnb.ssh")
                   and any("paramiko" in t for n in _imports(ast.parse(path.read_text()))
                           for t in _targets(n, name)))
    assert users == []


def test_test_files_have_unique_names() -> None:
    """pytest imports test modules by their base name (no __init__.py here): two test_x.py in
    different folders stop the whole collection."""
    tests = Path(__file__).resolve().parents[1]
    names: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
