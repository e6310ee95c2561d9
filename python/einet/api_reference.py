"""The API reference, generated from the docstrings: ``python -m einet.api_reference > docs/api.md``.

No documentation tool is needed: every public module of the package (the command's implementation
modules aside) with its public classes and functions, their signatures and docstrings, in markdown.
``public_names`` is what the tests check is documented."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Any

# The command's modules implement `einet COMMAND`; their functions are not an API.
PRIVATE_PACKAGES = ("einet.cli.",)


def public_modules() -> list[str]:
    """Every importable public module of einet (needs the torch extra for the torch parts)."""
    import einet

    names = ["einet"]
    for info in pkgutil.walk_packages(einet.__path__, "einet."):
        last = info.name.rsplit(".", 1)[-1]
        if not last.startswith("_") and not info.name.startswith(PRIVATE_PACKAGES) and last != "__main__":
            names.append(info.name)
    return sorted(names)


def public_names(module_name: str) -> Iterator[tuple[str, Any]]:
    """(name, object) of the classes and functions a module defines and does not mark private."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", None) == module_name or (exported and name in exported):
            yield name, value


def _signature(value: Any) -> str:
    try:
        return str(inspect.signature(value))
    except (TypeError, ValueError):
        return "(...)"


def reference() -> str:
    """The whole reference, as markdown."""
    lines = ["# API reference", "", "Generated from the docstrings by `python -m einet.api_reference`; "
             "the design behind it: [design.md](design.md).", ""]
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", (inspect.getdoc(module) or "").split("\n\n")[0], ""]
        for name, value in public_names(module_name):
            kind = "class" if inspect.isclass(value) else "def"
            lines += [f"### `{kind} {name}{_signature(value)}`", "", inspect.getdoc(value) or "", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
