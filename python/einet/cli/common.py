"""What every command shares: option types and bounds, the parser's one-line errors, the device, progress
bars, and reading a checkpoint with its held-out split."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..errors import EinetValueError
from ..validation import MAX_THREADS, integer_option, real_option

# Option bounds: wide enough for any real use, narrow enough that no value can make a command
# allocate without limit or loop for ever (the memory estimates in the commands cover the rest).
COUNT = integer_option(1, 1_000_000)  # epochs, repeats, draws, samples
SEED = integer_option(0, 2**32 - 1)
THREADS = integer_option(1, MAX_THREADS)
BATCH = integer_option(1, 65_536)
HOLDOUT = real_option(0.0, 0.99)
POSITIVE = real_option(0.0, 1e9, low_open=True)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line on stderr, `einet <command>: error: <problem>`, exit status 2."""

    def error(self, message: str) -> Any:  # argparse's own prints the whole usage first
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless it has none (required options, flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.required or default is None or default is False or default == argparse.SUPPRESS \
                or "%(default)" in text:
            return text
        if isinstance(default, list):
            return f"{text} (default: {' '.join(str(v) for v in default)})"
        return str(super()._get_help_string(action))


def _add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--dataset", default="cifar10", choices=DATASETS, help="dataset format")
    parser.add_argument("--data", required=required, help="dataset root, IDX folder, CIFAR batch folder, or image zip")


def _add_torch_arguments(parser: argparse.ArgumentParser, threads_help: str = "torch threads") -> None:
    """--device, --threads and --quiet: for the commands that run torch."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where torch runs; auto: cuda when available, else cpu")
    parser.add_argument("--threads", type=THREADS, default=2, help=threads_help)
    _add_quiet(parser)


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (they are off anyway when stderr is not a terminal)")


def _device(requested: str) -> str:
    """`--device` resolved: auto is cuda when torch sees a GPU; cuda without one is a mistake."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise EinetValueError("--device cuda: torch sees no CUDA device here (no GPU, or a CPU-only torch); "
                              "use --device cpu or auto")
    return requested


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: not with --quiet, not into a log file or pipe."""
    return not args.quiet and sys.stderr.isatty()


def _table_outputs(out: str) -> dict[str, Path]:
    """The two files `--out OUT` of a table names: OUT.md and OUT.csv."""
    return {f"--out ({suffix})": Path(out).with_suffix(suffix) for suffix in (".md", ".csv")}


def _profile_files(folders: Sequence[Path], extra: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """The files a command reads from profile folders, named for check_outputs."""
    return [(f"--profiles {folder}: {name}", folder / name) for folder in folders
            for name in ("et.npz", "cs-holdout.npz", "cs-test.npz", *extra)]


def _model_from_checkpoint(path: str, constructor: str | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The model, its provenance (einet.models.provenance) and the checkpoint. A checkpoint of a
    converted model loads only with `constructor` (--constructor) naming the constructor it stores:
    loading imports that module (see einet.formats.checkpoint.load_checkpoint)."""
    from ..formats.checkpoint import load_checkpoint
    from ..models.provenance import provenance

    model, state = load_checkpoint(path, constructor=constructor)
    return model, provenance(model, state), state


def _train_and_holdout(args: argparse.Namespace, state: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The training split without its held-out part, that part, and the split: as the checkpoint
    (`state`) records it, or (older checkpoints) as --holdout and --seed say `einet train` cut them."""
    from .. import data
    from ..formats.checkpoint import recorded_split
    from ..formats.split import resolve

    arrays = data.load(args.dataset, args.data, "train")
    split = resolve(recorded_split(args.checkpoint, state), args.holdout, args.seed, arrays, args.checkpoint)
    return (*split.apply(arrays, f"--data {args.data}"), split)


def _splits(args: argparse.Namespace, state: dict[str, Any]) -> tuple[Any, Any]:
    """The held-out part of the training split (for the predictor) and the test split."""
    from .. import data

    return _train_and_holdout(args, state)[1], data.load(args.dataset, args.data, "test")


def _check_trained_on(args: argparse.Namespace, spec: dict[str, Any], arrays: Any, verb: str) -> None:
    """Refuse a checkpoint whose input channels or classes are not the dataset's, before torch fails on it."""
    trained_on = (spec.get("in_channels", (spec.get("input_shape") or [None])[0]), spec.get("num_classes"))
    if trained_on != (arrays.channels, arrays.num_classes):
        raise EinetValueError(f"{args.checkpoint} takes {trained_on[0]}-channel images and {trained_on[1]} "
                              "classes, but "
                              f"--dataset {args.dataset} --data {args.data} has {arrays.channels}-channel images and "
                              f"{arrays.num_classes} classes: {verb} a checkpoint on the data it was trained on")


def _require(args: argparse.Namespace, *options: str) -> None:
    """Options a command needs when it is not given a bundle (with one, the bundle holds them)."""
    missing = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name) is None]
    if missing:
        raise EinetValueError(f"without a BUNDLE, {' and '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} required")


def _horizon(args: argparse.Namespace, full_time: float) -> float:
    """The exit-time horizon in seconds: --horizon-ms, else --scale x `full_time` (a network's full inference)."""
    for flag, value in (("--scale", args.scale), ("--horizon-ms", args.horizon_ms)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise EinetValueError(f"{flag} must be a finite number > 0, got {value}")
    return float(args.scale * full_time if args.horizon_ms is None else args.horizon_ms * 1e-3)


def _add_horizon_arguments(p: argparse.ArgumentParser, whose: str) -> None:
    horizon = p.add_mutually_exclusive_group()
    horizon.add_argument("--scale", type=POSITIVE, default=1.0,
                         help=f"exit-time horizon / full inference time ({whose})")
    horizon.add_argument("--horizon-ms", type=POSITIVE, default=None,
                         help="exit-time horizon in milliseconds (to compare networks of different speed under the "
                              "same deadlines)")
