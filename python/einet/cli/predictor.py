"""`einet fit-predictor`."""

from __future__ import annotations

import argparse
from typing import Any

from ..formats.predictor_file import MAX_PREDICTOR_WIDTH
from ..rules import RULES
from ..signals import SIGNALS
from ..validation import check_outputs, integer_option
from .common import (
    COUNT,
    SEED,
    _add_quiet,
    _progress,
)


def cmd_fit_predictor(args: argparse.Namespace) -> int:
    from ..formats.predictor_file import check_predictor_size
    from ..formats.profiles import CSProfile
    from ..rules import AnswerRule, time_zero_answer

    check_outputs({"--out": args.out}, {"--cs": args.cs})
    holdout = CSProfile.load(args.cs)
    check_predictor_size(holdout.num_exits, args.hidden)
    from ..predictor import fit_ensemble_weights, fit_predictor, save_predictor  # torch: after the checks

    weights = fit_ensemble_weights(holdout, seed=args.seed) if args.rule == "ensemble" else None
    rule = AnswerRule(args.rule, weights, *(time_zero_answer(holdout.labels) if args.time_zero else (None, 0.0)))
    model, report = fit_predictor(holdout, args.target, hidden=args.hidden, epochs=args.epochs, seed=args.seed,
                                  rule=rule, signal=args.signal, progress=_progress(args))
    save_predictor(args.out, model)
    print(f"predictor ({args.target}, rule {rule.label()}) trained: loss {report.loss[0]:.4f} -> "
          f"{report.loss[-1]:.4f}; wrote {args.out}")
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser("fit-predictor", help="train the confidence-score predictor on a held-out CS-profile")
    p.add_argument("--cs", required=True, help="cs-holdout.npz (never the test split)")
    p.add_argument("--target", default="correctness", choices=["correctness", "confidence"],
                   help="correctness: whether an exit is right (calibrated); confidence: its softmax maximum")
    p.add_argument("--rule", default="latest", choices=RULES,
                   help="the output rule it predicts for; ensemble also fits per-exit ensemble weights "
                        "(default: %(default)s)")
    p.add_argument("--signal", default="confidence", choices=SIGNALS,
                   help="what it reads per observed exit (rules latest/best; needs log-probabilities)")
    p.add_argument("--time-zero", action="store_true",
                   help="hold the held-out split's most frequent class before the first branch finishes")
    p.add_argument("--hidden", type=integer_option(1, MAX_PREDICTOR_WIDTH), nargs="+", default=[64, 64],
                   help="hidden layer sizes of the MLP")
    p.add_argument("--epochs", type=COUNT, default=60, help="training epochs")
    p.add_argument("--seed", type=SEED, default=0, help="fixes the initial weights and the drawn observations")
    p.add_argument("--out", required=True, help="predictor file (.npz)")
    _add_quiet(p)
    p.set_defaults(run=cmd_fit_predictor)

