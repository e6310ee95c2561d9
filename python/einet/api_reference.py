"""The API reference, generated from the docstrings: ``python -m einet.api_reference > docs/api.md``.

It documents the curated API only, so that what a user may build on is written down in one place:
``einet`` (its ``__all__``) and ``PUBLIC_MODULES``, stable; then :mod:`einet.lab`, apart, with no
stability promise. Every other module is internal. No documentation tool is needed: each module's
classes and functions (its ``__all__`` where it has one), their signatures and docstrings, in markdown;
an object is documented once, where it first appears."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# The stable API beyond `einet` itself, in reading order (importing the torch parts needs einet[torch]).
PUBLIC_MODULES = (
    "einet",
    "einet.reference",
    "einet.distributions",
    "einet.rules",
    "einet.policies",
    "einet.evaluation.simulate",
    "einet.bundle",
    "einet.runtime",
    "einet.runtime.adaptive",
    "einet.models",
    "einet.training",
    "einet.training.distributed",
    "einet.profiling",
    "einet.predictor",
    "einet.data",
    "einet.formats.profiles",
    "einet.formats.predictor_file",
    "einet.formats.checkpoint",
)
LAB = "einet.lab"


def lab_modules() -> dict[str, str]:
    """The lab's modules: their name in the lab (``einet.lab.stress``) -> the module's own name."""
    lab = importlib.import_module(LAB)
    return {f"{LAB}.{alias}": getattr(lab, alias).__name__ for alias in lab.__all__}


def public_names(module_name: str) -> Iterator[tuple[str, Any]]:
    """(name, object) of the classes and functions a module offers: its ``__all__``, else those it defines
    and does not mark private; in a public module, not those a lab module defines (documented in the lab)."""
    module = importlib.import_module(module_name)
    lab = set(lab_modules().values()) - {module_name}
    exported = getattr(module, "__all__", None)
    names = exported if exported is not None else [
        name for name, value in vars(module).items() if getattr(value, "__module__", None) == module_name]
    for name in names:
        value = getattr(module, name)
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value)) \
                and value.__module__ not in lab:
            yield name, value


def _signature(value: Any) -> str:
    try:
        return str(inspect.signature(value))
    except (TypeError, ValueError):
        return "(...)"


def _section(heading: str, module: ModuleType, documented: set[int]) -> list[str]:
    """One module's section; names whose object an earlier section documented are only named."""
    lines = [f"## {heading}", "", (inspect.getdoc(module) or "").split("\n\n")[0], ""]
    again = []
    for name, value in public_names(module.__name__):
        if id(value) in documented:
            again.append(f"`{name}`")
            continue
        documented.add(id(value))
        kind = "class" if inspect.isclass(value) else "def"
        lines += [f"### `{kind} {name}{_signature(value)}`", "", inspect.getdoc(value) or "", ""]
    if again:
        lines += [f"Also here (documented above): {', '.join(again)}.", ""]
    return lines


def reference() -> str:
    """The whole reference, as markdown."""
    lines = ["# API reference", "", "Generated from the docstrings by `python -m einet.api_reference`; "
             "the design behind it: [design.md](design.md). The stable API: `einet` and the modules below; "
             "the lab, apart at the end, has no stability promise; any module not listed is internal.", ""]
    documented: set[int] = set()
    for module_name in PUBLIC_MODULES:
        lines += _section(f"`{module_name}`", importlib.import_module(module_name), documented)
    lab = importlib.import_module(LAB)
    lines += ["# Lab: no stability promise", "", inspect.getdoc(lab) or "", ""]
    for name, module_name in lab_modules().items():
        lines += _section(f"`{name}` (`{module_name}`)", importlib.import_module(module_name), documented)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
