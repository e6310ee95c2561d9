"""Every public class and function is documented, and the generated API reference (docs/api.md) is current."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")  # the reference covers the torch parts too

from einet.api_reference import public_modules, public_names, reference


def test_every_public_name_has_a_docstring():
    import inspect

    missing = [f"{module}.{name}" for module in public_modules() for name, value in public_names(module)
               if not inspect.getdoc(value)]
    assert not missing, f"undocumented: {missing}"


def test_the_committed_reference_is_the_generated_one():
    committed = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    assert committed == reference(), "docs/api.md is stale: python -m einet.api_reference > docs/api.md"
