"""The package type-checks under ``mypy --strict`` (settings in pyproject.toml): kept true by CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_package_type_checks_strictly(tmp_path):
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_a_type_checker_sees_every_lazy_name_where_it_is_imported():
    """einet's lazy attributes are typed by imports under TYPE_CHECKING: the two lists must agree."""
    import ast

    import einet

    tree = ast.parse(Path(einet.__file__).read_text())
    checking = next(node for node in tree.body
                    if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in checking.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert imported == einet._LAZY
