"""The ``einet`` command: train, profile, fit-predictor, evaluate, report, table, select and demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

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

# What the library raises for bad input (DatasetError, ProfileFormatError, ConversionError, bad
# settings...) and for files it cannot read or write: a user's mistake, told in one line. Anything
# else (an AssertionError, a RuntimeError from deep inside torch) is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:  # not "[Errno 2] ..."
        text = f"{error.strerror}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `einet` command; a user's mistake is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ModuleNotFoundError as error:
        if error.name not in TORCH_EXTRA:
            raise
        extra = "plot" if error.name == "matplotlib" else "torch"
        print(f"einet {args.command} needs {error.name}: pip install 'einet[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what a command has finished is kept (a build resumes where it stopped)
        again = "; run the same command again to resume" if args.command == "build" else ""
        print(f"einet {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if getattr(args, "debug", False):
            raise
        print(f"einet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
