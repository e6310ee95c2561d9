"""`einet select`: the deployment chosen on held-out data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..distributions import RELATIVE_KINDS
from ..errors import EinetValueError
from ..rules import RULES
from ..signals import SIGNALS
from ..validation import check_outputs, real_option
from .common import (
    COUNT,
    SEED,
    _add_horizon_arguments,
    _add_quiet,
    _horizon,
    _progress,
)


def cmd_select(args: argparse.Namespace) -> int:
    from ..distributions import full_inference_time
    from ..evaluation.select import DEPLOYED_PREDICTOR, save_deployment, select_network
    from ..formats.profiles import CSProfile, ETRecord

    if len({Path(folder).resolve() for folder in args.profiles}) != len(args.profiles):
        raise EinetValueError(f"--profiles names a folder twice: {' '.join(args.profiles)}")
    check_outputs({"--out": args.out, "its predictor": Path(args.out).parent / DEPLOYED_PREDICTOR},
                  [(f"--profiles {folder}: {name}", Path(folder) / name) for folder in args.profiles
                   for name in ("et.npz", "cs-holdout.npz")])
    candidates = {folder: (ETRecord.load(Path(folder) / "et.npz").profile,
                           CSProfile.load(Path(folder) / "cs-holdout.npz")) for folder in args.profiles}
    first_et = next(iter(candidates.values()))[0]
    horizon = _horizon(args, full_inference_time(first_et))
    planning = None if args.planning_us is None else args.planning_us * 1e-6
    deployment, predictor = select_network(candidates, kinds=args.dist, horizon=horizon, rules=args.rules,
                                           predictor_epochs=args.epochs, seed=args.seed, signals=args.signals,
                                           planning=planning, progress=_progress(args))
    save_deployment(args.out, deployment, predictor)
    network = f"{deployment.network}: " if len(candidates) > 1 else ""
    print(f"chosen on held-out data: {network}{deployment.policy}, rule {deployment.rule.label()} "
          f"(exit times over {1e3 * horizon:.3f} ms); wrote {args.out}")
    for name, value in list(deployment.validation.items())[:8]:
        print(f"  {100 * value:6.2f}%  {name}")
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser("select", help="choose policy, rule and time-zero answer on held-out data; write them "
                                           "to a deployment file for the runtime")
    p.add_argument("--profiles", required=True, nargs="+",
                   help="folder with et.npz and cs-holdout.npz; several: the network is chosen too (the same "
                        "held-out images, the same exit times in seconds: see --horizon-ms)")
    p.add_argument("--dist", nargs="+", default=["uniform", "normal"], choices=list(RELATIVE_KINDS),
                   help="exit-time distributions to score under (averaged; the first is deployed)")
    _add_horizon_arguments(p, "of the first --profiles network")
    p.add_argument("--rules", nargs="+", default=list(RULES),
                   choices=RULES, help="candidate output rules")
    p.add_argument("--signals", nargs="+", default=["confidence"],
                   choices=SIGNALS,
                   help="candidate signals EINet's predictor may read per observed exit (rules latest/best)")
    p.add_argument("--epochs", type=COUNT, default=40, help="predictor training epochs")
    p.add_argument("--seed", type=SEED, default=0, help="fixes the predictor training")
    p.add_argument("--planning-us", type=real_option(0.0, 1e6), default=None,
                   help="microseconds EINet's re-planning adds per branch where it runs (default: timed on this "
                        "machine; 0 where the runtime overlaps it, e.g. on a GPU, behind queued kernels)")
    p.add_argument("--out", required=True, help="deployment file (.json); the predictor is written beside it")
    _add_quiet(p)
    p.set_defaults(run=cmd_select)

