"""The package's layers, read from its source (ast): the file formats import nothing above them, and
no modules import each other in a cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "einet"

# What einet.formats may import of einet: itself and the leaf modules beneath it (numpy and the native
# planner at most: no policy building, selection, models, runtime or command).
FORMATS_MAY_IMPORT = ("einet.formats", "einet._atomic", "einet._core", "einet.errors", "einet.choices",
                      "einet.validation", "einet.planner", "einet.distributions", "einet.rules", "einet.signals",
                      "einet.policies.kinds", "einet.variants")
FORMATS_MAY_IMPORT_OUTSIDE = ("numpy", "typing_extensions")  # and the standard library
# Named exceptions, each a format that is torch's own or reads a cache: the checkpoint's loader builds the
# network it holds (torch; the models it names), and a packed bundle is unpacked into the user's cache folder.
EXCEPTIONS = {
    "einet.formats.checkpoint": ("torch", "einet.models.base", "einet.models.constructor", "einet.models.zoo",
                                 "einet.models"),
    "einet.formats.packed": ("einet.data.folder",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    return (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def imports(path: Path, top_level: bool) -> set[str]:
    """The modules `path` imports (relative imports resolved; `from package import module` as the module);
    `top_level`: only those run on import (not inside functions, not for type checkers only)."""
    name, known = module_name(path), modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt] | list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
                continue
            if top_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join([*base, *([node.module] if node.module else [])])
                if node.module:  # (`from . import module` imports the module, its package is a parent's)
                    found.add(source)
                found.update(f"{source}.{alias.name}" for alias in node.names
                             if not node.module or f"{source}.{alias.name}" in known)
            visit(list(ast.iter_child_nodes(node)))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found - {"__future__"}


def _allowed(module: str, imported: str) -> bool:
    top = imported.split(".")[0]
    if top != "einet":
        return top in sys.stdlib_module_names or top in FORMATS_MAY_IMPORT_OUTSIDE or imported in EXCEPTIONS.get(
            module, ())
    return any(imported == allowed or imported.startswith(allowed + ".") for allowed in FORMATS_MAY_IMPORT) or \
        imported in EXCEPTIONS.get(module, ())


def test_the_file_formats_import_nothing_above_them():
    offending = {name: sorted(imported for imported in imports(path, top_level=False) if not _allowed(name, imported))
                 for name, path in modules().items() if name.startswith("einet.formats")}
    assert not {name: found for name, found in offending.items() if found}


def test_no_import_cycle_among_the_packages_modules():
    known = modules()
    graph = {name: sorted(imported for imported in imports(path, top_level=True) if imported in known and
                          imported != name) for name, path in known.items()}
    cycles, state, stack = [], dict.fromkeys(graph, 0), []  # 0 unseen, 1 on the stack, 2 done

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state[nxt] == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif state[nxt] == 0:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in graph:
        if state[name] == 0:
            walk(name)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
