"""`einet demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..choices import LOADS
from ..validation import check_outputs, integer_option
from .common import COUNT, _add_torch_arguments, _device, _progress


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, run_demo

    if args.out_dir:
        from ..formats.deployment import DEPLOYED_PREDICTOR, DEPLOYMENT_NAME

        check_outputs({f"--out-dir {args.out_dir}: {name}": Path(args.out_dir) / name
                       for name in (DEPLOYMENT_NAME, DEPLOYED_PREDICTOR)}, creates_folders=True)
    options = DemoOptions(epochs=args.epochs, samples=args.samples, out_dir=args.out_dir, threads=args.threads,
                          device=_device(args.device), progress=_progress(args), threaded=args.threaded,
                          eager=args.eager)
    from ..runtime.stress import Burners

    with Burners.for_load(args.stress, limit=3600):
        return run_demo(options)


def add_commands(commands: Any) -> None:
    p = commands.add_parser("demo", help="the whole pipeline on embedded MNIST data, in under a minute")
    p.add_argument("--epochs", type=COUNT, default=8, help="training epochs")
    p.add_argument("--samples", type=integer_option(1, 10_000), default=1000,
                   help="test samples run under real interrupts")
    p.add_argument("--out-dir", default=None, help="keep the deployment file (and its predictor) here "
                                                   "(default: a temporary folder)")
    p.add_argument("--stress", default="idle", choices=LOADS,
                   help="run it on a busy device: two CPU burners always on (steady) or switched on and off "
                        "every 1.5 s (switching), started and stopped with the demo (einet.runtime.stress)")
    p.add_argument("--threaded", action="store_true",
                   help="run the blocks on the runtime's worker thread, which returns at an interrupt at once, "
                        "instead of in this thread (ElasticRuntime(inline=True), the default here)")
    p.add_argument("--eager", action="store_true",
                   help="run the network as trained, not in its fastest verified form here (for comparison)")
    _add_torch_arguments(p)
    p.set_defaults(run=cmd_demo)

