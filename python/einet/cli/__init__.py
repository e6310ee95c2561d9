"""The ``einet`` command: train, profile, fit-predictor, evaluate, report, table, select and demo."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..predictor_file import MAX_PREDICTOR_WIDTH
from ..validation import MAX_THREADS, check_memory, check_outputs, integer_option, real_option, summary_path

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
    parser.add_argument("--dataset", default="cifar10", choices=["mnist", "fashion-mnist", "cifar10", "cifar100",
                                                                  "folder"], help="dataset format")
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
        raise ValueError("--device cuda: torch sees no CUDA device here (no GPU, or a CPU-only torch); "
                         "use --device cpu or auto")
    return requested


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: not with --quiet, not into a log file or pipe."""
    return not args.quiet and sys.stderr.isatty()


# What evaluate holds per sample, exit and drawn exit time (times, exits, answers: a generous estimate).
_DRAW_BYTES = 32


def _table_outputs(out: str) -> dict[str, Path]:
    """The two files `--out OUT` of a table names: OUT.md and OUT.csv."""
    return {f"--out ({suffix})": Path(out).with_suffix(suffix) for suffix in (".md", ".csv")}


def _profile_files(folders: Sequence[Path], extra: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """The files a command reads from profile folders, named for check_outputs."""
    return [(f"--profiles {folder}: {name}", folder / name) for folder in folders
            for name in ("et.npz", "cs-holdout.npz", "cs-test.npz", *extra)]


def cmd_train(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "its summary": summary_path(args.out)},
                  {"--data": args.data, "--backbone-weights": args.backbone_weights})
    import torch

    from .. import data
    from ..models import TrainConfig, build, train
    from ..models.training import finish_distributed, init_distributed

    device = _device(args.device)
    torch.set_num_threads(args.threads)
    from ..split import HeldOutSplit

    train_arrays = data.load(args.dataset, args.data, "train")
    test_arrays = data.load(args.dataset, args.data, "test")
    split = HeldOutSplit.of(train_arrays, args.holdout, args.seed)  # recorded: later stages cut the same images
    train_arrays, _ = split.apply(train_arrays)  # kept out of training: the predictor is fitted on the rest
    if args.constructor and args.exit_head != "paper":
        raise ValueError("--exit-head is for zoo models: a converted model's branches are the paper's")
    if args.constructor:  # the user's own single-exit network, converted
        spec = _converted_spec(args, train_arrays)
    elif args.exits or args.backbone_weights or args.constructor_kwargs != "{}":
        raise ValueError("--exits, --backbone-weights and --constructor-kwargs go with --constructor")
    else:
        spec = {"name": args.model, "num_classes": train_arrays.num_classes, "in_channels": train_arrays.channels,
                "width": args.width}
        if args.exit_head != "paper":  # only when asked: checkpoints of the paper's branches keep their spec
            spec["exit_head"] = args.exit_head
    if Path(args.out).exists():  # resumed: it must be this model (train() checks the settings)
        _, _, state = _model_from_checkpoint(args.out, args.constructor)
        stored = state["spec"]
        if _without_defaults(stored) != _without_defaults(spec):
            raise ValueError(f"--out {args.out} holds a checkpoint of another model ({stored}, not {spec}): "
                             "give another --out, or the same model to resume it")
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


def _without_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A model spec without the keys that only repeat a default (the paper's exit head)."""
    return {key: value for key, value in spec.items() if not (key == "exit_head" and value == "paper")}


def _converted_spec(args: argparse.Namespace, train_arrays: Any) -> dict[str, Any]:
    """The checkpoint spec of `--constructor` with `--constructor-kwargs` and `--exits` on this data."""
    try:
        kwargs = json.loads(args.constructor_kwargs)
    except json.JSONDecodeError as error:
        raise ValueError(f"--constructor-kwargs is not JSON: {error}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--constructor-kwargs must be a JSON object, got {args.constructor_kwargs}")
    return {"name": "converted", "constructor": args.constructor, "kwargs": kwargs, "exits": args.exits,
            "input_shape": [train_arrays.channels, *train_arrays.images.shape[1:3]],
            "num_classes": train_arrays.num_classes}


def _converted_model(args: argparse.Namespace, spec: dict[str, Any], train_set: Any) -> Any:
    """`--constructor` built, `--backbone-weights` loaded, converted with `--exits` (real images trace it)."""
    from ..models.convert import build_converted

    model, built = build_converted(args.constructor, spec["kwargs"], train_set.images[:8], args.exits,
                                   args.backbone_weights)
    if built["num_classes"] != spec["num_classes"]:
        raise ValueError(f"{args.constructor} returns {built['num_classes']} classes but the dataset has "
                         f"{spec['num_classes']}: set its class count in --constructor-kwargs")
    return model


def _model_from_checkpoint(path: str, constructor: str | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The model, its provenance (zoo name first, width, training recipe) and the checkpoint. A checkpoint of a
    converted model loads only with `constructor` (--constructor) naming the constructor it stores:
    loading imports that module (see einet.models.load_checkpoint)."""
    from ..models import load_checkpoint

    model, state = load_checkpoint(path, constructor=constructor)
    spec = dict(state["spec"])
    config = state.get("config") or {}
    recipe = config.get("recipe", "joint")
    if spec.get("exit_head", "paper") != "paper":
        recipe += f", {spec['exit_head']} exits"
    if spec.get("exit_pools"):  # refitted exits (einet refit-exits) answer differently: part of the recipe
        recipe += _pools_label(model)
    provenance = {"zoo": spec.get("constructor", spec.get("name")), "width": spec.get("width", 1.0)}
    if config.get("exit_weights"):  # a schedule is part of the recipe: twins must not share a name
        runs = [(w, len(list(group))) for w, group in itertools.groupby(config["exit_weights"])]
        recipe += ", exit weights " + "/".join(f"{w:g}" + (f"x{n}" if n > 1 else "") for w, n in runs)
        provenance["exit_weights"] = list(config["exit_weights"])
    provenance["recipe"] = recipe
    return model, provenance, state


def _pools_label(model: Any) -> str:
    """E.g. ", exits 1-4 pooled 8x8": the light exits whose pool is not the light head's default."""
    from ..models.base import DEFAULT_LIGHT_POOL, light_exits

    changed = [(i + 1, model.exits[i].pool) for i in light_exits(model) if model.exits[i].pool != DEFAULT_LIGHT_POOL]
    parts = []
    for pool, group in itertools.groupby(changed, key=lambda item: item[1]):
        numbers = [i for i, _ in group]
        exits = f"{numbers[0]}-{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) and \
            len(numbers) > 1 else ", ".join(map(str, numbers))
        parts.append(f", exit{'s' if len(numbers) > 1 else ''} {exits} pooled {pool}x{pool}")
    return "".join(parts)


def _train_and_holdout(args: argparse.Namespace, state: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The training split without its held-out part, that part, and the split: as the checkpoint
    (`state`) records it, or (older checkpoints) as --holdout and --seed say `einet train` cut them."""
    from .. import data
    from ..models.training import recorded_split
    from ..split import resolve

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
        raise ValueError(f"{args.checkpoint} takes {trained_on[0]}-channel images and {trained_on[1]} classes, but "
                         f"--dataset {args.dataset} --data {args.data} has {arrays.channels}-channel images and "
                         f"{arrays.num_classes} classes: {verb} a checkpoint on the data it was trained on")


def _require(args: argparse.Namespace, *options: str) -> None:
    """Options a command needs when it is not given a bundle (with one, the bundle holds them)."""
    missing = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name) is None]
    if missing:
        raise ValueError(f"without a BUNDLE, {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")


def cmd_profile(args: argparse.Namespace) -> int:
    if args.bundle:
        from .bundle import profile_bundle

        return profile_bundle(args, _device(args.device))
    _require(args, "data", "checkpoint", "out_dir")
    if args.second_look_depth is not None and not args.second_look:
        raise ValueError(f"--second-look-depth {args.second_look_depth} needs --second-look")
    out = Path(args.out_dir)
    written = ([] if args.skip_et else ["et.npz"]) + ([] if args.skip_cs else ["cs-holdout.npz", "cs-test.npz"])
    check_outputs({f"--out-dir {args.out_dir}: {name}": out / name for name in written},
                  {"--checkpoint": args.checkpoint, "--data": args.data}, creates_folders=True)
    import torch

    from ..data import dataset_for, timing_images
    from ..profiling import profile_cs, profile_et

    device = _device(args.device)
    torch.set_num_threads(args.threads)
    model, provenance, state = _model_from_checkpoint(args.checkpoint, args.constructor)
    spec = state["spec"]
    if args.second_look:
        from ..models.second_look import with_second_look

        model = with_second_look(model, args.second_look, args.second_look_depth)
        provenance["recipe"] += f", {model.label}"
    holdout, test = _splits(args, state)
    _check_trained_on(args, spec, holdout, "profile")
    shape = (holdout.channels, *holdout.images.shape[1:3])
    provenance["dataset"] = args.dataset
    name = f"{provenance['zoo']} ({args.dataset}, width {provenance['width']}, {provenance['recipe']})"
    examples = timing_images(args.dataset, holdout)
    if not args.skip_et:
        record = profile_et(model, shape, device=device, batch_size=args.batch_size, warmup=args.warmup,
                            repeats=args.repeats, name=name, threads=args.runtime_threads, samples=examples,
                            progress=_progress(args))
        record.save(out / "et.npz")
        print(f"ET-profile (ms, median) conv {np.round(record.conv * 1e3, 3).tolist()}")
        print(f"                        branch {np.round(record.branch * 1e3, 3).tolist()}")
    for split, arrays in () if args.skip_cs else (("holdout", holdout), ("test", test)):
        profile_cs(model, dataset_for(args.dataset, arrays, train=False), device=device, name=name,
                   split=split, extra_meta=provenance, progress=_progress(args)).save(out / f"cs-{split}.npz")
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    return 0


def cmd_refit_exits(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "its summary": summary_path(args.out)},
                  {"--checkpoint": args.checkpoint, "--data": args.data})
    import torch

    from .. import data
    from ..models import load_checkpoint, save_checkpoint
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


def cmd_fit_predictor(args: argparse.Namespace) -> int:
    from ..predictor_file import check_predictor_size
    from ..profiling import CSProfile
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


def _rule_for(args: argparse.Namespace, rule: Any) -> Any:
    """The rule to evaluate: the predictor's own (fitted with it), or --rule latest/best with its time-zero answer."""
    from dataclasses import replace

    if args.rule is None or args.rule == rule.name:
        return rule
    if args.rule == "ensemble":
        raise ValueError(f"{args.predictor} was fitted for rule {rule.name!r}: fit one with "
                         "`einet fit-predictor --rule ensemble` to evaluate rule ensemble")
    return replace(rule, name=args.rule, weights=None)


def _horizon(args: argparse.Namespace, full_time: float) -> float:
    """The exit-time horizon in seconds: --horizon-ms, else --scale x `full_time` (a network's full inference)."""
    for flag, value in (("--scale", args.scale), ("--horizon-ms", args.horizon_ms)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a finite number > 0, got {value}")
    return float(args.scale * full_time if args.horizon_ms is None else args.horizon_ms * 1e-3)


def cmd_select(args: argparse.Namespace) -> int:
    from ..profiling import CSProfile, ETRecord
    from ..select import DEPLOYED_PREDICTOR, save_deployment, select_network
    from ..simulate import full_inference_time

    if len({Path(folder).resolve() for folder in args.profiles}) != len(args.profiles):
        raise ValueError(f"--profiles names a folder twice: {' '.join(args.profiles)}")
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.bundle:
        from .bundle import evaluate_bundles

        return evaluate_bundles(args)
    _require(args, "profiles", "predictor")
    args.dist = args.dist or "uniform"
    from ..predictor_file import read_predictor
    from ..profiling import CSProfile, ETRecord
    from ..simulate import compare, csv_table, evaluate_all, full_inference_time, markdown_table, relative_distribution

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


def _zoo_and_width(meta: dict[str, Any]) -> tuple[str | None, float]:
    """A profile's zoo model and width: from its metadata, or (format-1 profiles) its model name."""
    import re

    if meta.get("zoo") is not None:
        return str(meta["zoo"]), float(meta.get("width", 1.0))
    named = re.match(r"(\w+) \(width ([0-9.]+)", str(meta.get("model", "")))
    return (named[1], float(named[2])) if named else (None, 0.0)


def cmd_table(args: argparse.Namespace) -> int:
    """The paper's table over several profiled models: one row each (numpy only)."""
    from ..predictor_file import read_predictor
    from ..profiling import CSProfile, ETRecord
    from ..simulate import csv_table, evaluate_all, full_inference_time, model_row, models_table, relative_distribution

    folders = [Path(p) for p in args.profiles]
    if args.out:
        check_outputs(_table_outputs(args.out), _profile_files(folders, ("predictor.npz",)))
    tests = {folder: CSProfile.load(folder / "cs-test.npz") for folder in folders}
    rows = []
    for folder in folders:
        et = ETRecord.load(folder / "et.npz").profile
        meta = tests[folder].meta
        zoo, width = _zoo_and_width(meta)
        # the compressed single-exit model: the same network at half width, same data, profiled on the same device
        twin = next((other for other in folders if other is not folder and zoo is not None
                     and _zoo_and_width(tests[other].meta) == (zoo, width / 2)
                     and all(tests[other].meta.get(key) == meta.get(key) for key in ("device", "dataset"))), None)
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


def cmd_report(args: argparse.Namespace) -> int:
    import matplotlib  # noqa: F401  (the plot extra: named before any work is done)

    from ..policies import standard_policies
    from ..predictor_file import read_predictor
    from ..profiling import CSProfile, ETRecord
    from ..simulate import accuracy_curves, plot_curves

    check_outputs({"--out": args.out}, [("--predictor", args.predictor), *_profile_files([Path(args.profiles)])])
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


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    if args.out_dir:
        from ..select import DEPLOYED_PREDICTOR, DEPLOYMENT_NAME

        check_outputs({f"--out-dir {args.out_dir}: {name}": Path(args.out_dir) / name
                       for name in (DEPLOYMENT_NAME, DEPLOYED_PREDICTOR)}, creates_folders=True)
    args.device, args.progress = _device(args.device), _progress(args)
    from ..stress import Burners

    with Burners.for_load(args.stress, limit=3600):
        return run_demo(args)


def _add_horizon_arguments(p: argparse.ArgumentParser, whose: str) -> None:
    horizon = p.add_mutually_exclusive_group()
    horizon.add_argument("--scale", type=POSITIVE, default=1.0,
                         help=f"exit-time horizon / full inference time ({whose})")
    horizon.add_argument("--horizon-ms", type=POSITIVE, default=None,
                         help="exit-time horizon in milliseconds (to compare networks of different speed under the "
                              "same deadlines)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="einet", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a zoo model on a dataset (checkpointed every epoch, resumable)")
    _add_data_arguments(p)
    p.add_argument("--model", default="b_alexnet", help="zoo model (docs/models.md)")
    p.add_argument("--width", type=real_option(0.0, 16.0, low_open=True), default=1.0, help="channel width multiplier")
    p.add_argument("--epochs", type=COUNT, default=10, help="training epochs")
    p.add_argument("--batch-size", type=BATCH, default=128, help="training batch size")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="optimizer")
    p.add_argument("--lr", type=real_option(0.0, 100.0, low_open=True), default=0.05, help="peak learning rate")
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "step", "constant"],
                   help="learning-rate schedule")
    p.add_argument("--exit-head", default="paper", choices=["paper", "light"],
                   help="the early exits' branch: paper (conv + two FC layers) or light (pool + one linear layer, "
                        "several times cheaper at batch size 1: docs/anytime.md) (default: %(default)s)")
    p.add_argument("--exit-weights", type=real_option(0.0, 1e6), nargs="+", default=None,
                   help="loss weight per exit (default: uniform)")
    p.add_argument("--recipe", default="joint", choices=["joint", "distill", "distill-ensemble"],
                   help="joint: every exit's cross-entropy (the paper); distill: plus self-distillation from the "
                        "final exit; distill-ensemble: from the ensemble of all exits (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
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

    p = commands.add_parser("profile", help="ET-profile on this device, CS-profiles of the held-out and test splits; "
                                            "or, given a BUNDLE, time it on this device and add what is chosen for it")
    p.add_argument("bundle", nargs="?", default=None,
                   help="a bundle folder (`einet build`): time its network here, select its configuration for this "
                        "device on its held-out data, and add both to it (no other input needed)")
    _add_data_arguments(p, required=False)
    p.add_argument("--checkpoint", help="a checkpoint written by `einet train` (without a BUNDLE)")
    p.add_argument("--constructor", metavar="PACKAGE.MODULE:CALLABLE",
                   help="for a checkpoint of a converted network: the constructor it names (loading imports it)")
    p.add_argument("--out-dir", help="folder for et.npz, cs-holdout.npz and cs-test.npz (without a BUNDLE)")
    p.add_argument("--batch-size", type=integer_option(1, 4096), default=1, help="batch size of the ET-profile")
    p.add_argument("--warmup", type=integer_option(0, 1_000_000), default=20, help="untimed runs before the ET-profile")
    p.add_argument("--repeats", type=COUNT, default=400, help="timed runs of the ET-profile")
    p.add_argument("--holdout", type=HOLDOUT, default=None,
                   help="for checkpoints that do not record their split: as given to `einet train` (default 0.1)")
    p.add_argument("--seed", type=SEED, default=None,
                   help="for checkpoints that do not record their split: as given to `einet train` (default 0)")
    _add_torch_arguments(p, "torch threads for the CS-profiles")
    skip = p.add_mutually_exclusive_group()
    skip.add_argument("--skip-et", action="store_true",
                      help="keep the folder's ET-profile: write the CS-profiles only (e.g. to add log-probabilities)")
    skip.add_argument("--skip-cs", action="store_true",
                      help="keep the folder's CS-profiles: write the ET-profile only (block times depend on the "
                           "device and its load, confidences do not: re-time on the target device)")
    p.add_argument("--runtime-threads", type=THREADS, default=1,
                   help="torch threads the runtime will use (the ET-profile is measured with them)")
    p.add_argument("--second-look", choices=["flip"],
                   help="profile the network followed by a second pass of itself on this view of the input "
                        "(2N exits; einet.models.second_look): spare time before a deadline buys accuracy")
    p.add_argument("--second-look-depth", type=integer_option(1, 100_000), metavar="D",
                   help="with --second-look: each pass runs the first D blocks only (2D exits; choose D on "
                        "held-out data: `einet build` with levers.second_look)")
    p.set_defaults(run=cmd_profile)

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

    p = commands.add_parser("fit-predictor", help="train the confidence-score predictor on a held-out CS-profile")
    p.add_argument("--cs", required=True, help="cs-holdout.npz (never the test split)")
    p.add_argument("--target", default="correctness", choices=["correctness", "confidence"],
                   help="correctness: whether an exit is right (calibrated); confidence: its softmax maximum")
    p.add_argument("--rule", default="latest", choices=["latest", "best", "ensemble"],
                   help="the output rule it predicts for; ensemble also fits per-exit ensemble weights "
                        "(default: %(default)s)")
    p.add_argument("--signal", default="confidence", choices=["confidence", "entropy", "margin", "agreement"],
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

    for name, run, text in (("evaluate", cmd_evaluate, "trace-driven comparison of EINet with every baseline"),
                            ("report", cmd_report, "plot accuracy against the mean exit time, one line per policy")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--profiles", required=name == "report", help="folder with et.npz, cs-holdout.npz, cs-test.npz")
        p.add_argument("--predictor", required=name == "report", help="a predictor written by `einet fit-predictor`")
        p.add_argument("--dist", default=None, choices=["uniform", "normal", "exponential"],
                       help="exit-time distribution over the horizon (default: uniform; a bundle's own)")
        p.add_argument("--rule", default=None, choices=["latest", "best", "ensemble"],
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
    p.add_argument("--dist", default="uniform", choices=["uniform", "normal", "exponential"],
                   help="exit-time distribution over one full inference")
    p.add_argument("--out", default=None, help="write the table as OUT.md and OUT.csv")
    p.set_defaults(run=cmd_table)

    p = commands.add_parser("select", help="choose policy, rule and time-zero answer on held-out data; write them "
                                           "to a deployment file for the runtime")
    p.add_argument("--profiles", required=True, nargs="+",
                   help="folder with et.npz and cs-holdout.npz; several: the network is chosen too (the same "
                        "held-out images, the same exit times in seconds: see --horizon-ms)")
    p.add_argument("--dist", nargs="+", default=["uniform", "normal"], choices=["uniform", "normal", "exponential"],
                   help="exit-time distributions to score under (averaged; the first is deployed)")
    _add_horizon_arguments(p, "of the first --profiles network")
    p.add_argument("--rules", nargs="+", default=["latest", "best", "ensemble"],
                   choices=["latest", "best", "ensemble"], help="candidate output rules")
    p.add_argument("--signals", nargs="+", default=["confidence"],
                   choices=["confidence", "entropy", "margin", "agreement"],
                   help="candidate signals EINet's predictor may read per observed exit (rules latest/best)")
    p.add_argument("--epochs", type=COUNT, default=40, help="predictor training epochs")
    p.add_argument("--seed", type=SEED, default=0, help="fixes the predictor training")
    p.add_argument("--planning-us", type=real_option(0.0, 1e6), default=None,
                   help="microseconds EINet's re-planning adds per branch where it runs (default: timed on this "
                        "machine; 0 where the runtime overlaps it, e.g. on a GPU, behind queued kernels)")
    p.add_argument("--out", required=True, help="deployment file (.json); the predictor is written beside it")
    _add_quiet(p)
    p.set_defaults(run=cmd_select)

    p = commands.add_parser("demo", help="the whole pipeline on embedded MNIST data, in under a minute")
    p.add_argument("--epochs", type=COUNT, default=8, help="training epochs")
    p.add_argument("--samples", type=integer_option(1, 10_000), default=1000,
                   help="test samples run under real interrupts")
    p.add_argument("--out-dir", default=None, help="keep the deployment file (and its predictor) here "
                                                   "(default: a temporary folder)")
    p.add_argument("--stress", default="idle", choices=["idle", "steady", "switching"],
                   help="run it on a busy device: two CPU burners always on (steady) or switched on and off "
                        "every 1.5 s (switching), started and stopped with the demo (einet.stress)")
    _add_torch_arguments(p)
    p.set_defaults(run=cmd_demo)

    from .bundle import add_commands

    add_commands(commands, COUNT, THREADS, POSITIVE, SEED)
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
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ModuleNotFoundError as error:
        if error.name not in TORCH_EXTRA:
            raise
        extra = "plot" if error.name == "matplotlib" else "torch"
        print(f"einet {args.command} needs {error.name}: pip install 'einet[{extra}]'", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        if getattr(args, "debug", False):
            raise
        print(f"einet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
