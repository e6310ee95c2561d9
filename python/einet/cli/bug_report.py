"""What the `einet` command does with an exception nobody raised on purpose: a bug in einet, not a
mistake of its user. The full traceback goes to a file the user can attach to a report; the terminal
gets one line naming it."""

from __future__ import annotations

import os
import platform
import shlex
import tempfile
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

BUG_EXIT_STATUS = 70  # EX_SOFTWARE (sysexits.h): an internal software error


def _installed_version(package: str) -> str:
    """A package's version without importing it (importing torch to report a crash would cost seconds)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def write_bug_report(command: str, argv: Sequence[str], error: BaseException) -> Path:
    """Write what a maintainer needs to reproduce `error` (versions, the command line, the traceback) to
    a new file under the system's temporary folder, and return its path. The file is created with
    mkstemp: never an existing file, never one another user placed there."""
    from .. import __version__

    stamp = time.strftime("%Y%m%dT%H%M%S")
    handle, name = tempfile.mkstemp(prefix=f"einet-{command}-{stamp}-{os.getpid()}-", suffix=".txt")
    lines = [f"einet {__version__}",
             f"command: einet {shlex.join(argv)}",
             f"python {platform.python_version()} ({platform.platform()})",
             f"numpy {_installed_version('numpy')}, torch {_installed_version('torch')}",
             "",
             *traceback.format_exception(error)]
    with os.fdopen(handle, "w", encoding="utf-8") as report:
        report.write("\n".join(line.rstrip("\n") for line in lines) + "\n")
    return Path(name)
