"""`einet profile`: a checkpoint's ET- and CS-profiles, or a bundle timed on this device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EinetValueError
from ..validation import check_outputs, integer_option
from .common import (
    COUNT,
    HOLDOUT,
    SEED,
    THREADS,
    _add_data_arguments,
    _add_torch_arguments,
    _check_trained_on,
    _device,
    _model_from_checkpoint,
    _progress,
    _require,
    _splits,
)


def cmd_profile(args: argparse.Namespace) -> int:
    if args.bundle:
        from .bundle import profile_bundle

        return profile_bundle(args, _device(args.device))
    _require(args, "data", "checkpoint", "out_dir")
    if args.second_look_depth is not None and not args.second_look:
        raise EinetValueError(f"--second-look-depth {args.second_look_depth} needs --second-look")
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


def add_commands(commands: Any) -> None:
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

