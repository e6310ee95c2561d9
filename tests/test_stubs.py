"""The typed stubs of einet._core list exactly the names the native module has."""

import ast
from pathlib import Path

import einet
from einet import _core


def test_stub_names_match_the_native_module():
    stub = ast.parse(Path(einet.__file__).with_name("_core.pyi").read_text())
    stub_names = set()
    for node in stub.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stub_names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub_names.add(node.target.id)
    stub_names = {name for name in stub_names if not name.startswith("_") or name == "__version__"}
    native = {name for name in dir(_core) if not name.startswith("_") or name == "__version__"}
    assert stub_names == native


def test_public_names_are_exported():
    for name in einet.__all__:
        assert hasattr(einet, name), name
