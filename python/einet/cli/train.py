"""`einet train` and `einet refit-exits`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..choices import EXIT_HEADS, OPTIMIZERS, PRECISIONS, RECIPES, SCHEDULES
from ..errors import EinetValueError
from ..validation import check_outputs, integer_option, real_option, summary_path
from .common import (
    BATCH,
    COUNT,
    HOLDOUT,
    SEED,
    THREADS,
    _add_data_arguments,
    _add_quiet,
    _add_torch_arguments,
    _check_trained_on,
    _device,
    _model_from_checkpoint,
    _progress,
    _train_and_holdout,
)


def cmd_train(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "its summary": summary_path(args.out)},
                  {"--data": args.data, "--backbone-weights": args.backbone_weights})
    import torch

    from .. import data
    from ..models import build
    from ..training import TrainConfig, train
    from ..training.distributed import finish_distributed, init_distributed

    device = _device(args.device)
    torch.set_num_threads(args.threads)
    from ..formats.split import HeldOutSplit

    train_arrays = data.load(args.dataset, args.data, "train")
    test_arrays = data.load(args.dataset, args.data, "test")
    split = HeldOutSplit.of(train_arrays, args.holdout, args.seed)  # recorded: later stages cut the same images
    train_arrays, _ = split.apply(train_arrays)  # kept out of training: the predictor is fitted on the rest
    spec = _model_spec(args, train_arrays)
    # Under torchrun (WORLD_SIZE > 1) every process joins one group; train() then runs DDP on shards.
    rank, world_size, device = init_distributed(device)
    try:
        if str(device).startswith("cuda"):  # same seed, same weights: cuDNN's deterministic kernels, no autotuning
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.manual_seed(args.seed)  # the initial weights too (alike in every process)
        train_set = data.dataset_for(args.dataset, train_arrays, train=True)
        model = _converted_model(args, spec, train_set) if args.constructor else build(**spec)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                             schedule=args.schedule, seed=args.seed, freeze_backbone=args.freeze_backbone,
                             exit_weights=args.exit_weights, recipe=args.recipe, device=device,
                             precision=args.precision, channels_last=args.channels_last)
        started = time.perf_counter()
        history = train(model, train_set, data.dataset_for(args.dataset, test_arrays, train=False), config,
                        checkpoint=args.out, model_spec=spec, progress=_progress(args), split=split.as_dict())
    finally:
        finish_distributed()
    if rank == 0:
        summary = {"model": spec, "recipe": args.recipe, "epochs": args.epochs,
                   "freeze_backbone": args.freeze_backbone, "seconds_this_run": time.perf_counter() - started,
                   "seconds_total": sum(history.seconds), "test_accuracy_per_exit": history.test_accuracy[-1],
                   "world_size": world_size, "batch_size": args.batch_size, "train_samples": len(train_set),
                   "threads": args.threads, "device": device, "precision": str(config.autocast_dtype or torch.float32),
                   "memory_format": str(config.memory_format), "command": " ".join(["einet", *sys.argv[1:]])}
        summary_path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    return 0


def _model_spec(args: argparse.Namespace, train_arrays: Any) -> dict[str, Any]:
    """The spec of the network to train (a zoo model, or the user's converted one); when --out exists
    already, it must hold this model (train() checks the rest before resuming)."""
    if args.constructor and args.exit_head != "paper":
        raise EinetValueError("--exit-head is for zoo models: a converted model's branches are the paper's")
    if args.constructor:  # the user's own single-exit network, converted
        spec = _converted_spec(args, train_arrays)
    elif args.exits or args.backbone_weights or args.constructor_kwargs != "{}":
        raise EinetValueError("--exits, --backbone-weights and --constructor-kwargs go with --constructor")
    else:
        spec = {"name": args.model, "num_classes": train_arrays.num_classes, "in_channels": train_arrays.channels,
                "width": args.width}
        if args.exit_head != "paper":  # only when asked: checkpoints of the paper's branches keep their spec
            spec["exit_head"] = args.exit_head
    if Path(args.out).exists():  # resumed: it must be this model (train() checks the rest)
        from ..training.resume import comparable

        _, _, state = _model_from_checkpoint(args.out, args.constructor)
        stored = state["spec"]
        if comparable(stored) != comparable(spec):
            raise EinetValueError(f"--out {args.out} holds a checkpoint of another model ({stored}, not {spec}): "
                                  "give another --out, or the same model to resume it")
    return spec


def _converted_spec(args: argparse.Namespace, train_arrays: Any) -> dict[str, Any]:
    """The checkpoint spec of `--constructor` with `--constructor-kwargs` and `--exits` on this data."""
    try:
        kwargs = json.loads(args.constructor_kwargs)
    except json.JSONDecodeError as error:
        raise EinetValueError(f"--constructor-kwargs is not JSON: {error}") from None
    if not isinstance(kwargs, dict):
        raise EinetValueError(f"--constructor-kwargs must be a JSON object, got {args.constructor_kwargs}")
    return {"name": "converted", "constructor": args.constructor, "kwargs": kwargs, "exits": args.exits,
            "input_shape": [train_arrays.channels, *train_arrays.images.shape[1:3]],
            "num_classes": train_arrays.num_classes}


def _converted_model(args: argparse.Namespace, spec: dict[str, Any], train_set: Any) -> Any:
    """`--constructor` built, `--backbone-weights` loaded, converted with `--exits` (real images trace it)."""
    from ..models.constructor import build_converted

    model, built = build_converted(args.constructor, spec["kwargs"], train_set.images[:8], args.exits,
                                   args.backbone_weights)
    if built["num_classes"] != spec["num_classes"]:
        raise EinetValueError(f"{args.constructor} returns {built['num_classes']} classes but the dataset has "
                              f"{spec['num_classes']}: set its class count in --constructor-kwargs")
    return model


def cmd_refit_exits(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "its summary": summary_path(args.out)},
                  {"--checkpoint": args.checkpoint, "--data": args.data})
    import torch

    from .. import data
    from ..formats.checkpoint import load_checkpoint, save_checkpoint
    from ..models.base import light_pools
    from ..models.refit import refit_light_exits

    torch.set_num_threads(args.threads)
    model, state = load_checkpoint(args.checkpoint)
    train_arrays, holdout_arrays, split = _train_and_holdout(args, state)
    _check_trained_on(args, state["spec"], holdout_arrays, "refit")
    started = time.perf_counter()
    refitted, report = refit_light_exits(
        model, data.dataset_for(args.dataset, train_arrays, train=False),
        data.dataset_for(args.dataset, holdout_arrays, train=False), pool=args.pool, epochs=args.epochs,
        seed=split.seed, progress=_progress(args))
    spec = dict(state["spec"]) | {"exit_pools": light_pools(refitted)}
    rows = [r.as_dict() for r in report]
    save_checkpoint(args.out, refitted, spec, config=state.get("config") or {}, refit=rows, split=split.as_dict())
    print("| exit | map | held-out accuracy, old pool | new pool | kept |\n|---:|---|---:|---:|---|")
    for r in report:
        print(f"| {r.exit + 1} | {r.map_size[0]}x{r.map_size[1]} | {100 * r.old_accuracy:.2f} "
              f"({r.old_pool}x{r.old_pool}) | {100 * r.new_accuracy:.2f} ({r.new_pool}x{r.new_pool}) | "
              f"{'yes' if r.kept else 'no'} |")
    summary = {"checkpoint": args.checkpoint, "model": spec, "seconds": time.perf_counter() - started,
               "refit": rows, "command": " ".join(["einet", *sys.argv[1:]])}
    summary_path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser("train", help="train a zoo model on a dataset (checkpointed every epoch, resumable)")
    _add_data_arguments(p)
    p.add_argument("--model", default="b_alexnet", help="zoo model (docs/models.md)")
    p.add_argument("--width", type=real_option(0.0, 16.0, low_open=True), default=1.0, help="channel width multiplier")
    p.add_argument("--epochs", type=COUNT, default=10, help="training epochs")
    p.add_argument("--batch-size", type=BATCH, default=128, help="training batch size")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--lr", type=real_option(0.0, 100.0, low_open=True), default=0.05, help="peak learning rate")
    p.add_argument("--schedule", default="onecycle", choices=SCHEDULES,
                   help="learning-rate schedule")
    p.add_argument("--exit-head", default="paper", choices=EXIT_HEADS,
                   help="the early exits' branch: paper (conv + two FC layers) or light (pool + one linear layer, "
                        "several times cheaper at batch size 1: docs/anytime.md) (default: %(default)s)")
    p.add_argument("--exit-weights", type=real_option(0.0, 1e6), nargs="+", default=None,
                   help="loss weight per exit (default: uniform)")
    p.add_argument("--recipe", default="joint", choices=RECIPES,
                   help="joint: every exit's cross-entropy (the paper); distill: plus self-distillation from the "
                        "final exit; distill-ensemble: from the ensemble of all exits (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="bf16: forward and loss under bfloat16 autocast (weights stay float32); auto: bf16 on CUDA, "
                        "fp32 on CPU (default: %(default)s)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout for the convolutions (default: on for CUDA, off for CPU)")
    p.add_argument("--holdout", type=HOLDOUT, default=0.1,
                   help="share of the training split held out for the predictor")
    p.add_argument("--seed", type=SEED, default=0,
                   help="fixes the initial weights, the held-out split, the data order and the augmentation")
    p.add_argument("--constructor", metavar="PACKAGE.MODULE:CALLABLE",
                   help="your own single-exit network instead of a zoo model: imported, called with "
                        "--constructor-kwargs and converted to a multi-exit network (cut after --exits)")
    p.add_argument("--constructor-kwargs", default="{}", metavar="JSON", help="keyword arguments, a JSON object")
    p.add_argument("--exits", nargs="+", metavar="MODULE",
                   help="module names to cut after, in run order (default: a cut after every conv region)")
    p.add_argument("--backbone-weights", metavar="FILE", help="the original network's state_dict to start from")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train the exit branches only; the backbone and its final classifier keep their weights")
    _add_torch_arguments(p)
    p.add_argument("--out", required=True,
                   help="checkpoint path (.pt); a summary, NAME.summary.json, is written beside it")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("refit-exits", help="refit a trained network's early light exits at a finer pool on its "
                                                "frozen features; each kept only where held-out data says it is better")
    _add_data_arguments(p)
    p.add_argument("--checkpoint", required=True, help="a checkpoint of a network with light exits (`einet train "
                                                        "--exit-head light`)")
    p.add_argument("--pool", type=integer_option(1, 64), default=8,
                   help="the refitted exits' pooled map, pool x pool (default: %(default)s)")
    p.add_argument("--epochs", type=COUNT, default=16, help="passes over the frozen features per exit")
    p.add_argument("--holdout", type=HOLDOUT, default=None,
                   help="for checkpoints that do not record their split: as given to `einet train` (default 0.1)")
    p.add_argument("--seed", type=SEED, default=None,
                   help="for checkpoints that do not record their split: as given to `einet train` (default 0); "
                        "also fixes the fit's order")
    p.add_argument("--threads", type=THREADS, default=2, help="torch threads")
    _add_quiet(p)
    p.add_argument("--out", required=True,
                   help="the refitted checkpoint (.pt); a summary, NAME.summary.json, is written beside it")
    p.set_defaults(run=cmd_refit_exits)

