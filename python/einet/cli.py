"""The ``einet`` command: train, profile, fit-predictor, evaluate, report and demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar10", help="mnist, fashion-mnist, cifar10, cifar100 or folder")
    parser.add_argument("--data", required=True, help="dataset root, IDX folder, CIFAR batch folder, or image zip")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from . import data
    from .models import TrainConfig, build, train

    torch.set_num_threads(args.threads)
    train_arrays = data.load(args.dataset, args.data, "train")
    test_arrays = data.load(args.dataset, args.data, "test")
    if args.holdout > 0:  # kept out of training: the predictor is fitted on it, never on the test split
        train_arrays, _ = train_arrays.split(args.holdout, seed=args.seed)
    spec = {"name": args.model, "num_classes": train_arrays.num_classes, "in_channels": train_arrays.channels,
            "width": args.width}
    torch.manual_seed(args.seed)  # the initial weights too
    model = build(**spec)  # type: ignore[arg-type]
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         schedule=args.schedule, seed=args.seed, freeze_backbone=False,
                         exit_weights=args.exit_weights, recipe=args.recipe)
    started = time.perf_counter()
    history = train(model, data.dataset_for(args.dataset, train_arrays, train=True),
                    data.dataset_for(args.dataset, test_arrays, train=False), config, checkpoint=args.out,
                    model_spec=spec)
    summary = {"model": spec, "recipe": args.recipe, "epochs": args.epochs, "seconds_this_run": time.perf_counter() - started,
               "seconds_total": sum(history.seconds), "test_accuracy_per_exit": history.test_accuracy[-1],
               "threads": args.threads, "command": " ".join(["einet", *sys.argv[1:]])}
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _model_from_checkpoint(path: str) -> tuple[Any, dict[str, Any]]:
    """The model and its provenance: zoo name first, width, training recipe."""
    from .models import load_checkpoint

    model, state = load_checkpoint(path)
    spec = dict(state["spec"])
    provenance = {"zoo": spec.get("name"), "width": spec.get("width", 1.0),
                  "recipe": (state.get("config") or {}).get("recipe", "joint")}
    return model, provenance


def _splits(args: argparse.Namespace) -> tuple[Any, Any]:
    """The held-out part of the training split (for the predictor) and the test split."""
    from . import data

    train_arrays = data.load(args.dataset, args.data, "train")
    _, holdout = train_arrays.split(args.holdout, seed=args.seed)
    return holdout, data.load(args.dataset, args.data, "test")


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from .data import dataset_for
    from .profiling import profile_cs, profile_et

    torch.set_num_threads(args.threads)
    model, provenance = _model_from_checkpoint(args.checkpoint)
    out = Path(args.out_dir)
    holdout, test = _splits(args)
    shape = (holdout.channels, *holdout.images.shape[1:3])
    name = f"{provenance['zoo']} (width {provenance['width']}, {provenance['recipe']})"
    # Real inputs, drawn across classes: block times depend on the data.
    examples = dataset_for(args.dataset, holdout.subset(np.random.default_rng(0).permutation(len(holdout))[:200]),
                           train=False).images
    if not args.skip_et:
        record = profile_et(model, shape, device=args.device, batch_size=args.batch_size, warmup=args.warmup,
                            repeats=args.repeats, name=name, threads=args.runtime_threads, samples=examples)
        record.save(out / "et.npz")
        print(f"ET-profile (ms, median) conv {np.round(record.conv * 1e3, 3).tolist()}")
        print(f"                        branch {np.round(record.branch * 1e3, 3).tolist()}")
    for split, arrays in (("holdout", holdout), ("test", test)):
        profile_cs(model, dataset_for(args.dataset, arrays, train=False), device=args.device, name=name,
                   split=split, extra_meta=provenance).save(out / f"cs-{split}.npz")
    print(f"wrote {'' if args.skip_et else str(out / 'et.npz') + ', '}{out / 'cs-holdout.npz'}, {out / 'cs-test.npz'}")
    return 0


def cmd_fit_predictor(args: argparse.Namespace) -> int:
    from .predictor import fit_predictor, save_predictor
    from .profiling import CSProfile

    holdout = CSProfile.load(args.cs)
    model, report = fit_predictor(holdout, args.target, hidden=args.hidden, epochs=args.epochs, seed=args.seed)
    save_predictor(args.out, model)
    print(f"predictor ({args.target}) trained: loss {report.loss[0]:.4f} -> {report.loss[-1]:.4f}; wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .predictor import load_predictor
    from .profiling import CSProfile, ETRecord
    from .simulate import compare, csv_table, evaluate_all, full_inference_time, markdown_table, relative_distribution

    et = ETRecord.load(Path(args.profiles) / "et.npz").profile
    holdout = CSProfile.load(Path(args.profiles) / "cs-holdout.npz")
    test = CSProfile.load(Path(args.profiles) / "cs-test.npz")
    native = load_predictor(args.predictor).to_native()
    full = full_inference_time(et)
    compressed = None
    if args.compressed:
        compressed = (ETRecord.load(Path(args.compressed) / "et.npz").profile,
                      CSProfile.load(Path(args.compressed) / "cs-test.npz"))
    dist = relative_distribution(args.dist, full, args.scale)
    results = evaluate_all(et, dist, native, holdout, test, args.rule, args.draws, compressed)
    rows = compare(results)
    title = (f"{test.meta.get('model', 'model')}, {args.dist} exit time (scale {args.scale} x full inference "
             f"{full * 1e3:.2f} ms), rule {args.rule}, {test.num_samples} test samples x {args.draws} draws")
    table = markdown_table(rows, title)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table)
        out.with_suffix(".csv").write_text(csv_table(rows))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .baselines import standard_policies
    from .predictor import load_predictor
    from .profiling import CSProfile, ETRecord
    from .simulate import accuracy_curves, plot_curves

    et = ETRecord.load(Path(args.profiles) / "et.npz").profile
    holdout = CSProfile.load(Path(args.profiles) / "cs-holdout.npz")
    test = CSProfile.load(Path(args.profiles) / "cs-test.npz")
    native = load_predictor(args.predictor).to_native()
    scales = [float(s) for s in args.scales]

    def policies(dist: Any) -> list[Any]:
        return [p for p in standard_policies(et, dist, native, holdout, args.rule)
                if p.name != "EINet (random search)"]

    curves = accuracy_curves(policies, test, et, args.dist, scales, draws=1)
    plot_curves(curves, args.out, f"{test.meta.get('model', 'model')}: {args.dist} exit time")
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="einet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a zoo model on a dataset (checkpointed every epoch, resumable)")
    _add_data_arguments(p)
    p.add_argument("--model", default="b_alexnet")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "step", "constant"])
    p.add_argument("--exit-weights", type=float, nargs="+", default=None)
    p.add_argument("--recipe", default="joint", choices=["joint", "distill", "distill-ensemble"],
                   help="joint: every exit's cross-entropy (the paper); distill: plus self-distillation from the "
                        "final exit; distill-ensemble: from the ensemble of all exits (default: %(default)s)")
    p.add_argument("--holdout", type=float, default=0.1, help="share of the training split held out for the predictor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="checkpoint path (.pt); a .json summary is written beside it")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("profile", help="ET-profile on this device, CS-profiles of the held-out and test splits")
    _add_data_arguments(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=400)
    p.add_argument("--holdout", type=float, default=0.1, help="as given to `einet train`")
    p.add_argument("--seed", type=int, default=0, help="as given to `einet train`")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the CS-profiles")
    p.add_argument("--skip-et", action="store_true",
                   help="keep the folder's ET-profile: write the CS-profiles only (e.g. to add log-probabilities)")
    p.add_argument("--runtime-threads", type=int, default=1,
                   help="torch threads the runtime will use (the ET-profile is measured with them)")
    p.set_defaults(run=cmd_profile)

    p = commands.add_parser("fit-predictor", help="train the confidence-score predictor on a held-out CS-profile")
    p.add_argument("--cs", required=True, help="cs-holdout.npz (never the test split)")
    p.add_argument("--target", default="correctness", choices=["correctness", "confidence"])
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_fit_predictor)

    for name, run, text in (("evaluate", cmd_evaluate, "trace-driven comparison of EINet with every baseline"),
                            ("report", cmd_report, "plot accuracy against the mean exit time, one line per policy")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--profiles", required=True, help="folder with et.npz, cs-holdout.npz, cs-test.npz")
        p.add_argument("--predictor", required=True)
        p.add_argument("--dist", default="uniform", choices=["uniform", "normal", "exponential"])
        p.add_argument("--rule", default="latest", choices=["latest", "best"])
        p.set_defaults(run=run)
    evaluate_parser, report_parser = commands.choices["evaluate"], commands.choices["report"]
    evaluate_parser.add_argument("--scale", type=float, default=1.0, help="exit-time horizon / full inference time")
    evaluate_parser.add_argument("--draws", type=int, default=100, help="exit times drawn per sample")
    evaluate_parser.add_argument("--compressed", help="profiles folder of the half-width single-exit model")
    evaluate_parser.add_argument("--out", help="write the table as OUT.md and OUT.csv")
    report_parser.add_argument("--scales", nargs="+", default=["0.25", "0.5", "0.75", "1.0", "1.25", "1.5", "2.0"])
    report_parser.add_argument("--out", required=True, help="PNG path")

    p = commands.add_parser("demo", help="the whole pipeline on embedded MNIST data, in under a minute")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--samples", type=int, default=1000, help="test samples run under real interrupts")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=cmd_demo)
    return parser


TORCH_EXTRA = {"torch", "tqdm", "PIL", "matplotlib"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ModuleNotFoundError as error:
        if error.name not in TORCH_EXTRA:
            raise
        extra = "plot" if error.name == "matplotlib" else "torch"
        print(f"einet {args.command} needs {error.name}: pip install 'einet[{extra}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
