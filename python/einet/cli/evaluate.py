"""`einet evaluate`, `einet report` and `einet table`: the simulator's comparisons from profiles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..distributions import RELATIVE_KINDS
from ..errors import EinetValueError
from ..rules import RULES
from ..validation import check_memory, check_outputs, integer_option
from .common import (
    POSITIVE,
    _add_horizon_arguments,
    _horizon,
    _profile_files,
    _require,
    _table_outputs,
)

# What evaluate holds per sample, exit and drawn exit time (times, exits, answers: a generous estimate).
_DRAW_BYTES = 32


def _rule_for(args: argparse.Namespace, rule: Any) -> Any:
    """The rule to evaluate: the predictor's own (fitted with it), or --rule latest/best with its time-zero answer."""
    from dataclasses import replace

    if args.rule is None or args.rule == rule.name:
        return rule
    if args.rule == "ensemble":
        raise EinetValueError(f"{args.predictor} was fitted for rule {rule.name!r}: fit one with "
                              "`einet fit-predictor --rule ensemble` to evaluate rule ensemble")
    return replace(rule, name=args.rule, weights=None)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.bundle:
        from .bundle import evaluate_bundles

        return evaluate_bundles(args)
    _require(args, "profiles", "predictor")
    args.dist = args.dist or "uniform"
    from ..distributions import full_inference_time, relative_distribution
    from ..evaluation.simulate import compare, evaluate_all
    from ..evaluation.tables import csv_table, markdown_table
    from ..formats.predictor_file import read_predictor
    from ..formats.profiles import CSProfile, ETRecord

    folders = [Path(args.profiles), *([Path(args.compressed)] if args.compressed else [])]
    if args.out:
        check_outputs(_table_outputs(args.out), [("--predictor", args.predictor), *_profile_files(folders)],
                      creates_folders=True)
    et = ETRecord.load(Path(args.profiles) / "et.npz").profile
    holdout = CSProfile.load(Path(args.profiles) / "cs-holdout.npz")
    test = CSProfile.load(Path(args.profiles) / "cs-test.npz")
    check_memory(_DRAW_BYTES * test.num_samples * test.num_exits * args.draws,
                 f"--draws {args.draws} on {test.num_samples} samples")
    checked = read_predictor(args.predictor)
    native, rule, signal = checked.to_native(), _rule_for(args, checked.rule), checked.signal
    full = full_inference_time(et)
    compressed = None
    if args.compressed:
        compressed = (ETRecord.load(Path(args.compressed) / "et.npz").profile,
                      CSProfile.load(Path(args.compressed) / "cs-test.npz"))
    scale = _horizon(args, full) / full
    dist = relative_distribution(args.dist, full, scale)
    results = evaluate_all(et, dist, native, holdout, test, rule, args.draws, compressed, signal)
    rows = compare(results)
    title = (f"{test.meta.get('model', 'model')}, {args.dist} exit time (scale {scale:g} x full inference "
             f"{full * 1e3:.2f} ms), rule {rule.label()}, {test.num_samples} test samples x {args.draws} draws")
    table = markdown_table(rows, title)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table)
        out.with_suffix(".csv").write_text(csv_table(rows))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    """The paper's table over several profiled models: one row each (numpy only)."""
    from ..distributions import full_inference_time, relative_distribution
    from ..evaluation.simulate import evaluate_all
    from ..evaluation.tables import compressed_twin, csv_table, model_row, models_table
    from ..formats.predictor_file import read_predictor
    from ..formats.profiles import CSProfile, ETRecord

    folders = [Path(p) for p in args.profiles]
    if args.out:
        check_outputs(_table_outputs(args.out), _profile_files(folders, ("predictor.npz",)))
    tests = {folder: CSProfile.load(folder / "cs-test.npz") for folder in folders}
    rows = []
    for folder in folders:
        et = ETRecord.load(folder / "et.npz").profile
        meta = tests[folder].meta
        twin = compressed_twin({other: test.meta for other, test in tests.items()}, folder)
        compressed = (ETRecord.load(twin / "et.npz").profile, tests[twin]) if twin else None
        checked = read_predictor(folder / "predictor.npz")
        dist = relative_distribution(args.dist, full_inference_time(et))
        results = evaluate_all(et, dist, checked.to_native(), CSProfile.load(folder / "cs-holdout.npz"),
                               tests[folder], checked.rule, draws=1, compressed=compressed, signal=checked.signal)
        rows.append(model_row(str(meta.get("model", folder.name)), results))
    table = models_table(rows, f"Exact expected accuracy (%), {args.dist} exit time over one full inference")
    print(table)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(table)
        out.with_suffix(".csv").write_text(csv_table(rows))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    return 0


def _check_image_format(out: str) -> None:
    """Refuse an --out whose suffix names no image format the plot can be saved in, before any work."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix and suffix not in formats:
        raise EinetValueError(f"--out {out}: .{suffix} is no image format the plot can be saved in; "
                              f"use one of {', '.join('.' + name for name in sorted(formats))}")


def cmd_report(args: argparse.Namespace) -> int:
    import matplotlib  # noqa: F401  (the plot extra: named before any work is done)

    from ..evaluation.tables import accuracy_curves, plot_curves
    from ..formats.predictor_file import read_predictor
    from ..formats.profiles import CSProfile, ETRecord
    from ..policies import standard_policies

    check_outputs({"--out": args.out}, [("--predictor", args.predictor), *_profile_files([Path(args.profiles)])])
    _check_image_format(args.out)
    args.dist = args.dist or "uniform"
    et = ETRecord.load(Path(args.profiles) / "et.npz").profile
    holdout = CSProfile.load(Path(args.profiles) / "cs-holdout.npz")
    test = CSProfile.load(Path(args.profiles) / "cs-test.npz")
    checked = read_predictor(args.predictor)
    native, rule, signal = checked.to_native(), _rule_for(args, checked.rule), checked.signal
    scales = args.scales

    def policies(dist: Any) -> list[Any]:
        return [p for p in standard_policies(et, dist, native, holdout, rule, signal)
                if p.name != "EINet (random search)"]

    curves = accuracy_curves(policies, test, et, args.dist, scales, draws=1, rule=rule)
    plot_curves(curves, args.out, f"{test.meta.get('model', 'model')}: {args.dist} exit time")
    print(f"wrote {args.out}")
    return 0


def add_commands(commands: Any) -> None:
    for name, run, text in (("evaluate", cmd_evaluate, "trace-driven comparison of EINet with every baseline"),
                            ("report", cmd_report, "plot accuracy against the mean exit time, one line per policy")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--profiles", required=name == "report", help="folder with et.npz, cs-holdout.npz, cs-test.npz")
        p.add_argument("--predictor", required=name == "report", help="a predictor written by `einet fit-predictor`")
        p.add_argument("--dist", default=None, choices=list(RELATIVE_KINDS),
                       help="exit-time distribution over the horizon (default: uniform; a bundle's own)")
        p.add_argument("--rule", default=None, choices=RULES,
                       help="output rule (default: the one the predictor was fitted for)")
        p.set_defaults(run=run)
    evaluate_parser, report_parser = commands.choices["evaluate"], commands.choices["report"]
    evaluate_parser.add_argument("bundle", nargs="?", default=None,
                                 help="a bundle (`einet build`): its deployed configuration on its test split, "
                                      "exactly, instead of --profiles and --predictor")
    evaluate_parser.add_argument("--against", metavar="OTHER", help="with a BUNDLE: another bundle, paired over the "
                                                                    "same test images and exit times")
    _add_horizon_arguments(evaluate_parser, "of this network")
    evaluate_parser.add_argument("--draws", type=integer_option(1, 100_000), default=100,
                                 help="exit times drawn per sample")
    evaluate_parser.add_argument("--compressed", help="profiles folder of the half-width single-exit model")
    evaluate_parser.add_argument("--out", help="write the table as OUT.md and OUT.csv")
    report_parser.add_argument("--scales", type=POSITIVE, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                               help="exit-time horizons / full inference time, one point per line each")
    report_parser.add_argument("--out", required=True, help="image path (.png, .pdf, .svg); its folder must exist")

    p = commands.add_parser("table", help="the paper's table: one row per profiled model, every policy, "
                                          "EINet minus the statistics plan paired (numpy only)")
    p.add_argument("--profiles", nargs="+", required=True,
                   help="folders with et.npz, cs-holdout.npz, cs-test.npz and predictor.npz, one per model")
    p.add_argument("--dist", default="uniform", choices=list(RELATIVE_KINDS),
                   help="exit-time distribution over one full inference")
    p.add_argument("--out", default=None, help="write the table as OUT.md and OUT.csv")
    p.set_defaults(run=cmd_table)

