"""The ``einet`` command: train, profile, fit-predictor, evaluate, report, table, select and demo."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ..errors import EinetError
from .bug_report import BUG_EXIT_STATUS, write_bug_report
from .common import _HelpFormatter, _Parser


def build_parser() -> Any:
    """The `einet` argument parser: every command's options with their types, bounds and defaults."""
    from .. import __version__
    from . import bundle, demo, evaluate, predictor, profile, select, train

    parser = _Parser(prog="einet", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (bundle, train, profile, predictor, evaluate, select, demo):
        command.add_commands(commands)
    for sub in commands.choices.values():
        sub.formatter_class = _HelpFormatter
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the traceback of an error")
    return parser


TORCH_EXTRA = {"torch", "tqdm", "PIL", "matplotlib"}

# What einet refuses on purpose (EinetError: DatasetError, ProfileFormatError, ConversionError, bad
# settings...) and files it cannot read or write: a user's mistake, told in one line, exit status 2.
# Anything else (a RuntimeError deep inside torch, an AssertionError, a plain ValueError nobody meant)
# is a bug in einet: its traceback goes to a file (bug_report), exit status 70.
USER_ERRORS = (EinetError, OSError)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:  # not "[Errno 2] ..."
        text = f"{error.strerror}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _missing_extra(error: Exception) -> str | None:
    """What to install, when `error` is a module of an einet extra that is not installed; else None."""
    if not isinstance(error, ModuleNotFoundError) or error.name not in TORCH_EXTRA:
        return None
    return f"{error.name}: pip install 'einet[{'plot' if error.name == 'matplotlib' else 'torch'}]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `einet` command. A user's mistake is one line on stderr and exit status 2; a bug is one
    line naming the file that holds its traceback, exit status 70; --debug shows either's traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # Ctrl-C: what a command has finished is kept (a build resumes where it stopped)
        again = "; run the same command again to resume" if args.command == "build" else ""
        print(f"einet {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except MemoryError:  # the machine ran out, not einet: as Python reports it (a build resumes where it stopped)
        raise
    except Exception as error:
        install = _missing_extra(error)
        if install:
            print(f"einet {args.command} needs {install}", file=sys.stderr)
            return 2
        if getattr(args, "debug", False):
            raise
        if isinstance(error, USER_ERRORS):
            print(f"einet {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        return _report_bug(args.command, argv, error)


def _report_bug(command: str, argv: Sequence[str], error: Exception) -> int:
    """One line on stderr naming the file with the traceback (or the traceback itself, if no file can be written)."""
    said = (f"einet {command}: internal error, a bug in einet (not in what you gave it): "
            f"{type(error).__name__}: {_one_line(error)}")
    try:
        report = write_bug_report(command, argv, error)
    except OSError as unwritable:
        traceback.print_exception(error)
        print(f"{said}; its traceback is above (no report file: {_one_line(unwritable)})", file=sys.stderr)
        return BUG_EXIT_STATUS
    print(f"{said}; the full traceback is in {report}: please attach it to a report, or run again with --debug",
          file=sys.stderr)
    return BUG_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
