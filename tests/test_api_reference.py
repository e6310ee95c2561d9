"""The curated API: every public class and function is documented, docs/api.md documents exactly the
public modules and the lab (nothing internal), and it is the generated reference."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the reference covers the torch parts too

import einet
from einet.api_reference import PUBLIC_MODULES, lab_modules, public_names, reference

API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_public_name_has_a_docstring():
    modules = [*PUBLIC_MODULES, *lab_modules().values()]
    missing = [f"{module}.{name}" for module in modules for name, value in public_names(module)
               if not inspect.getdoc(value)]
    assert not missing, f"undocumented: {missing}"


def test_the_reference_documents_the_public_modules_then_the_lab_and_nothing_else():
    sections = re.findall(r"^## `([\w.]+)`", API_MD.read_text(), re.MULTILINE)
    assert sections == [*PUBLIC_MODULES, *lab_modules()]


def test_the_reference_documents_every_class_and_function_einet_exports():
    text = API_MD.read_text()
    top = text[:text.index("\n## `einet.reference`")]
    exported = [name for name in einet.__all__
                if inspect.isclass(getattr(einet, name)) or inspect.isfunction(getattr(einet, name))]
    assert exported and [name for name in exported if f" {name}(" not in top] == []


def test_lab_tools_are_documented_in_the_lab_only():
    text = API_MD.read_text()
    stable = text[:text.index("# Lab: no stability promise")]
    for tool in ("class Burners", "class Clairvoyant", "def check_against_simulator", "def markdown_table"):
        assert tool not in stable and tool in text


def test_the_committed_reference_is_the_generated_one():
    assert API_MD.read_text() == reference(), "docs/api.md is stale: python -m einet.api_reference > docs/api.md"
