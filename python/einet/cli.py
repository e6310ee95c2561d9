"""The ``einet`` command: train, profile, fit-predictor, evaluate, report and demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path


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
    model = build(**spec)  # type: ignore[arg-type]
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         schedule=args.schedule, seed=args.seed, freeze_backbone=False,
                         exit_weights=args.exit_weights)
    started = time.perf_counter()
    history = train(model, data.dataset_for(args.dataset, train_arrays, train=True),
                    data.dataset_for(args.dataset, test_arrays, train=False), config, checkpoint=args.out,
                    model_spec=spec)
    summary = {"model": spec, "epochs": args.epochs, "seconds_this_run": time.perf_counter() - started,
               "seconds_total": sum(history.seconds), "test_accuracy_per_exit": history.test_accuracy[-1],
               "threads": args.threads, "command": " ".join(["einet", *sys.argv[1:]])}
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


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
    p.add_argument("--holdout", type=float, default=0.1, help="share of the training split held out for the predictor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="checkpoint path (.pt); a .json summary is written beside it")
    p.set_defaults(run=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
