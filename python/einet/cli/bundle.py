"""The bundle commands: ``einet build``, ``einet run``, and ``einet profile`` / ``einet evaluate`` on a bundle.

They parse and call the library (einet.pipeline, einet.bundle, einet.runtime.realtime); nothing here decides."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..distributions import RELATIVE_KINDS
from ..errors import EinetValueError


def cmd_build(args: argparse.Namespace) -> int:
    from ..build_config import read_config
    from ..pipeline import build

    config = read_config(args.config, args.constructor)
    import torch  # noqa: F401  (the torch extra: named before any work)

    build(config, progress=not args.quiet and sys.stderr.isatty(), force=args.force)
    return 0


def refuse_unused(args: argparse.Namespace, command: str, **defaults: Any) -> None:
    """Refuse options that `command` does not use with a BUNDLE (given, i.e. not at their `defaults`):
    an option either does what it says or is refused, never ignored."""
    given = [f"--{name.replace('_', '-')}" for name, default in defaults.items() if getattr(args, name) != default]
    if given:
        raise EinetValueError(f"einet {command} BUNDLE does not use {', '.join(given)}: the bundle holds "
                              f"{'them' if len(given) > 1 else 'it'} (see einet {command} --help)")


def profile_bundle(args: argparse.Namespace, device: str) -> int:
    """`einet profile BUNDLE --device D`: time the bundle's network here, select for this device, add it."""
    import torch

    refuse_unused(args, "profile", dataset="cifar10", data=None, checkpoint=None, out_dir=None, batch_size=1,
                  holdout=None, seed=None, skip_et=False, skip_cs=False, second_look=None, second_look_depth=None)
    bundle = _bundle_folder(args.bundle, "profile")
    torch.set_num_threads(args.threads)
    return _time_and_add(args, bundle, device, args.runtime_threads)


def _bundle_folder(path: str, command: str) -> Any:
    from ..bundle import read_bundle

    bundle = read_bundle(path)
    if not Path(path).is_dir():
        raise EinetValueError(f"{path} is a packed bundle: {command} its folder (unpack) and pack again")
    return bundle


def _time_and_add(args: argparse.Namespace, bundle: Any, device: str, threads: int) -> int:
    """Time the bundle's network here in its fastest verified form, select for this device, add the entry."""
    from ..bundle import device_identity
    from ..forms import add_timed_device

    record, deployment = add_timed_device(args.bundle, device, threads, args.warmup, args.repeats, args.constructor,
                                          progress=not args.quiet and sys.stderr.isatty())
    print(f"timed {bundle.name} on {device_identity(device, threads)['name']} ({threads} "
          f"thread{'s' * (threads != 1)}), {record.meta['form']['name']} form: full inference "
          f"{1e3 * record.profile.total():.3f} ms; chosen for it: {deployment.policy}, rule "
          f"{deployment.rule.label()}; added to {args.bundle}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """`einet compile BUNDLE`: its blocks and exits compiled for this CPU and thread count into the cache,
    verified; then timed here and selected for, as `einet profile` does."""
    import torch

    from ..forms import compile_bundle, ensure_compiled
    from ..models.compiled import CompileError

    bundle = _bundle_folder(args.bundle, "compile")
    threads = args.threads or bundle.threads
    torch.set_num_threads(threads)
    try:
        (compile_bundle if args.force else ensure_compiled)(bundle, threads, args.constructor,
                                                            log=print if not args.quiet else lambda _: None)
    except CompileError as error:
        print(f"einet compile: {error}: {args.bundle} runs its prepared form", file=sys.stderr)
        return 1
    print(f"compiled {bundle.name} for this CPU and {threads} thread{'s' * (threads != 1)}, verified")
    return _time_and_add(args, bundle, "cpu", threads)


def cmd_export_native(args: argparse.Namespace) -> int:
    """`einet export-native BUNDLE OUT`: the compiled bundle as a folder for the Python-free program."""
    from ..native_export import MANIFEST, export_native

    exported = export_native(args.bundle, args.out, args.threads)
    if exported.timed_form != "compiled":
        print(f"einet export-native: note: the device entry's ET-profile timed the {exported.timed_form} form, not "
              "the compiled packages: its plans (and --replay) use those times", file=sys.stderr)
    print(f"exported {args.bundle} for the Python-free program: {exported.policy}, rule {exported.rule}, into "
          f"{exported.folder} ({MANIFEST}); run it with `einet-run {exported.folder} INPUTS.pt`")
    return 0


def evaluate_bundles(args: argparse.Namespace) -> int:
    """`einet evaluate BUNDLE [--against OTHER]`: exact expected accuracy on the test split's CS-profile,
    paired over the same images and exit times (the first bundle's horizon)."""
    from ..bundle import exit_distribution, read_bundle
    from ..evaluation.bundles import evaluate_bundle
    from ..evaluation.simulate import paired_difference

    refuse_unused(args, "evaluate", profiles=None, predictor=None, rule=None, scale=1.0, draws=100, compressed=None,
                  out=None)
    bundles = [read_bundle(args.bundle), *([read_bundle(args.against)] if args.against else [])]
    tests = [b.test() for b in bundles]
    if len(bundles) == 2 and (bundles[0].test_data != bundles[1].test_data
                              or not np.array_equal(tests[0].labels, tests[1].labels)):
        raise EinetValueError(f"{args.bundle} and {args.against} were not evaluated on the same test images (their "
                              "test data's fingerprints differ): a paired difference needs the same images")
    horizon_ms = args.horizon_ms or bundles[0].horizon_ms
    kind = args.dist or bundles[0].dist_kind
    dist = exit_distribution(kind, horizon_ms)
    print(f"exact expected accuracy on {tests[0].num_samples} test images, exit times over {horizon_ms:.3f} ms")
    results = []
    for bundle in bundles:
        evaluation = evaluate_bundle(bundle, dist)
        if not evaluation.own_device:
            _say_other_device(bundle, evaluation.entry)
        deployment = evaluation.entry.deployment
        results.append(evaluation.result)
        print(f"  {kind:12s} {100 * evaluation.result.expected:6.2f}%  {bundle.name}: {deployment.policy}, rule "
              f"{deployment.rule.label()} ({evaluation.entry.key})")
    if len(results) == 2:
        diff = paired_difference(results[0], results[1])
        print(f"  {kind:12s} {bundles[0].name} minus {bundles[1].name}: {100 * diff.mean:+.2f} ± "
              f"{100 * diff.ci95:.2f} pp (paired 95%){' *' if diff.significant else ''}")
    return 0


def _say_other_device(bundle: Any, entry: Any) -> None:
    """One line on stderr: this machine has no entry in the bundle, so its figures are another device's."""
    print(f"einet evaluate: note: {bundle.path} has no entry for this machine's cpu: evaluated with the entry of "
          f"{entry.key}, so the figures are that device's (add this one with `einet profile {bundle.path}`)",
          file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    """Real-time inference on image files, each answer written; accuracy where labels exist."""
    import torch

    from .. import data
    from ..bundle import read_bundle
    from ..evaluation.bundles import draw_deadlines, remap_classes, run_images, simulate_run
    from ..evaluation.simulate import ci95_half_width
    from ..runtime import check_engine

    check_engine(args.engine)
    if args.out:
        from ..validation import check_outputs

        check_outputs({"--out": args.out}, {"BUNDLE": args.bundle, "--images": args.images})
    bundle = read_bundle(args.bundle)
    arrays = data.load_image_folder(args.images, args.split)
    if args.limit:
        arrays = arrays.subset(np.arange(min(args.limit, len(arrays))))
    arrays = remap_classes(arrays, bundle.classes)
    deadlines, what = draw_deadlines(bundle, len(arrays), args.deadline_ms, args.dist, args.horizon_ms, args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    inline = True if args.inline else False if args.threaded else None  # (None: the runtime's rule decides)
    if args.inline:  # the blocks run in this thread: with the thread count the bundle was timed with
        torch.set_num_threads(bundle.threads)
    stream = run_images(bundle, arrays, deadlines, adapt=not args.static, inline=inline, eager=args.eager,
                        warmup=args.warmup, constructor=args.constructor,
                        progress=not args.quiet and sys.stderr.isatty(), engine=args.engine)
    seconds = time.perf_counter() - started
    print(f"{len(arrays)} images, {what}, {'static' if args.static else 'adaptive'} runtime: real-time accuracy "
          f"{100 * stream.accuracy:.2f}% ({seconds:.0f} s)")
    if args.check_simulator:
        for how, simulated in simulate_run(bundle, stream, arrays, constructor=args.constructor):
            difference = stream.correct.astype(np.float64) - simulated
            print(f"simulator at the same deadlines, {how}: {100 * simulated.mean():.2f}%; runtime minus simulator "
                  f"{100 * difference.mean():+.2f} ± {100 * ci95_half_width(difference):.2f} pp (paired 95%)")
    if args.out:
        write_answers(args.out, stream, arrays.labels, deadlines, bundle.classes)
        print(f"wrote {args.out}")
    return 0


def write_answers(path: str, stream: Any, labels: np.ndarray, deadlines: np.ndarray, classes: tuple[str, ...]) -> None:
    """Every answer as a CSV row, written atomically (a run stopped half-way leaves the previous file)."""
    import io

    from .._atomic import atomic_write

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["index", "label", "prediction", "exit", "confidence", "elapsed_ms", "deadline_ms", "interrupted",
                     "correct"])
    for k, answer in enumerate(stream.answers):
        writer.writerow([k, classes[labels[k]], "" if answer.prediction is None else classes[answer.prediction],
                         "" if answer.exit is None else answer.exit, f"{answer.confidence:.4f}",
                         f"{1e3 * answer.elapsed:.3f}", f"{1e3 * deadlines[k]:.3f}", int(answer.interrupted),
                         int(stream.correct[k])])
    with atomic_write(path) as f:
        f.write(text.getvalue().encode())


def add_commands(commands: Any) -> None:
    from ..validation import integer_option
    from .common import COUNT as count
    from .common import POSITIVE as positive
    from .common import SEED as seed
    from .common import THREADS as threads

    p = commands.add_parser("build", help="the whole pipeline from a TOML config to a deployment bundle: train, "
                                          "levers, profile, select on held-out data (stages resumable)")
    p.add_argument("config", help="the build config (.toml; see examples/)")
    p.add_argument("--force", action="store_true", help="run every stage again, even where its inputs are unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--constructor", metavar="PACKAGE.MODULE:CALLABLE",
                   help="trust the config's network.constructor, named again here: building imports and runs it")
    p.set_defaults(run=cmd_build)

    p = commands.add_parser("compile", help="compile a bundle's blocks and exits for this CPU (AOTInductor, into "
                                            "the user's cache, verified), then time and select for them here")
    p.add_argument("bundle", help="a bundle folder written by `einet build`")
    p.add_argument("--threads", type=threads, default=None,
                   help="torch threads the runtime will use (default: the bundle's); packages are fixed to them")
    p.add_argument("--warmup", type=integer_option(0, 1_000_000), default=20, help="untimed runs before timing")
    p.add_argument("--repeats", type=count, default=400, help="timed runs of the ET-profile")
    p.add_argument("--constructor", metavar="PACKAGE.MODULE:CALLABLE",
                   help="for a network converted from your constructor: its name (loading imports it)")
    p.add_argument("--force", action="store_true", help="compile again, even where verified packages are cached")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(run=cmd_compile)

    p = commands.add_parser("export-native", help="a compiled bundle as a folder for the Python-free program "
                                                  "einet-run (its packages and a text manifest; no adaptation)")
    p.add_argument("bundle", help="a bundle compiled for this CPU (`einet compile`)")
    p.add_argument("out", help="the folder to write (new, empty, or an earlier export, which is replaced)")
    p.add_argument("--threads", type=threads, default=None,
                   help="the threads the packages were compiled for (default: the bundle's)")
    p.set_defaults(run=cmd_export_native)

    p = commands.add_parser("run", help="real-time elastic inference of a bundle on image files")
    p.add_argument("bundle", help="a bundle written by `einet build`")
    p.add_argument("--images", required=True, help="class-folder images (a folder or a zip): [SPLIT/]CLASS/IMAGE")
    p.add_argument("--split", default=None, help="the split folder inside --images (e.g. test)")
    deadline = p.add_mutually_exclusive_group()
    deadline.add_argument("--deadline-ms", type=positive, default=None, help="the same deadline for every image")
    deadline.add_argument("--dist", choices=list(RELATIVE_KINDS), default=None,
                          help="deadlines drawn from this distribution (default: the bundle's)")
    p.add_argument("--horizon-ms", type=positive, default=None, help="its horizon (default: the bundle's)")
    p.add_argument("--static", action="store_true", help="do not adapt to measured block and exit times")
    driver = p.add_mutually_exclusive_group()
    driver.add_argument("--inline", action="store_true",
                        help="run the blocks in this thread (no hand-over; a call returns once the part in flight "
                             "ends)")
    driver.add_argument("--threaded", action="store_true",
                        help="run the blocks on a worker thread (a call returns at its deadline). Default: inline "
                             "where the native engine runs parts of at most 0.5 ms, else threaded")
    p.add_argument("--eager", action="store_true",
                   help="run the network as trained, not in the form its ET-profile timed (for comparison)")
    p.add_argument("--engine", default="auto",  # (checked by the runtime, which defines the engines)
                   help="what runs the blocks: native (the compiled blocks, the policy and the rule in C++), python "
                        "(the Python loop) or auto (native where the bundle is compiled and a compiler is here; the "
                        "default)")
    p.add_argument("--limit", type=count, default=None, help="the first N images only")
    p.add_argument("--warmup", type=integer_option(0, 1_000_000), default=100, help="uninterrupted runs first")
    p.add_argument("--seed", type=seed, default=0, help="fixes the drawn deadlines")
    p.add_argument("--check-simulator", action="store_true",
                   help="also replay each image in the simulator at its deadline, and print the paired difference")
    p.add_argument("--constructor", metavar="PACKAGE.MODULE:CALLABLE",
                   help="for a network converted from your constructor: its name (loading imports it)")
    p.add_argument("--threads", type=threads, default=2, help="torch threads of the caller")
    p.add_argument("--out", default=None, help="write every answer to this CSV file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_run)
