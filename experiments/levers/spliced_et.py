"""The ET-profile of a variant of a fixture's network, consistent with that fixture's timing.

A variant (the network with a second look, its exits refitted, or both) could be timed on its
own with `einet profile`; but a fixture compared with twins timed back to back on another day
must not pick up that day's speed (the same network timed on different days differed by 20%
here). So this script times the base network and the variant back to back, alternating, and
writes the base fixture's ET-profile with each block's measured difference added: each of the
variant's blocks costs its base block's time plus what the variant adds or saves there (with a
second look, block i of the first pass corresponds to base block i and block D + i of the second
pass to base block i too, plus what the flip and carrying the input cost). Pair it with the
CS-profiles `einet profile --skip-et` writes into the same folder.

    python experiments/levers/spliced_et.py benchmarks/fixtures/vgg16_fine_w025_cpu_light \
        --checkpoint runs/vgg16_fine_w025_light.pt --data ../shared/data/cifar10-jpeg.zip \
        --second-look flip --out experiments/levers/fixtures/vgg16_fine_w025_cpu_light_second_look

`--second-look flip --depth D`: the second look through the first D blocks of each pass.
`--variant CHECKPOINT`: the variant's own weights (e.g. `einet refit-exits`' output: the same
backbone, other exit heads), with or without a second look. `--base-has-second-look`: the fixture
is already of the network with that second look (both networks are timed with it).

Timing noise here is several microseconds per block, however many repeats: where the variant runs
exactly the base's module (the same structure and the same weights), the base's time is kept as it
is, so that a variant differs from its base only where it really differs (a refitted network: its
refitted heads), and twins spliced from one base share its times.

    python experiments/levers/spliced_et.py experiments/levers/fixtures/vgg16_fine_w025_cpu_light_second_look_d10 \
        --checkpoint benchmarks/fixtures/vgg16_fine_w025_cpu_light/model.pt --second-look flip --depth 10 \
        --base-has-second-look --variant runs/vgg16_fine_w025_light_refit.pt --data ../shared/data/cifar10-jpeg.zip \
        --out experiments/levers/fixtures/vgg16_fine_w025_cpu_light_refit_second_look_d10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from einet import data
from einet.formats.checkpoint import load_checkpoint
from einet.formats.profiles import ETRecord
from einet.models import MultiExitNetwork
from einet.models.second_look import VIEWS, with_second_look
from einet.profiling import profile_et


def parse_args() -> argparse.Namespace:
    """The command line, refused where it asks for nothing to splice or for options that need others."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path, help="the base network's fixture (its et.npz is spliced)")
    parser.add_argument("--checkpoint", required=True, help="the base network's checkpoint")
    parser.add_argument("--variant", help="the variant's checkpoint (default: the base network's)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data", required=True)
    parser.add_argument("--holdout", type=float, default=0.1, help="as given to `einet train`")
    parser.add_argument("--seed", type=int, default=0, help="as given to `einet train`")
    parser.add_argument("--second-look", choices=VIEWS, help="the variant runs a second look on this view")
    parser.add_argument("--depth", type=int, help="blocks per pass of the second look (default: all; see "
                                                  "einet.models.second_look)")
    parser.add_argument("--base-has-second-look", action="store_true",
                        help="the fixture is of the base network with this second look already")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two timings")
    parser.add_argument("--repeats", type=int, default=400, help="timed runs per round and network")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    if args.depth is not None and not args.second_look:
        raise SystemExit(f"--depth {args.depth} needs --second-look")
    if args.base_has_second_look and not args.second_look:
        raise SystemExit("--base-has-second-look needs --second-look (the view and depth it has)")
    if not (args.variant or (args.second_look and not args.base_has_second_look)):
        raise SystemExit("nothing to splice: give --variant, --second-look or both")
    return args


def load_networks(args: argparse.Namespace) -> tuple[MultiExitNetwork, MultiExitNetwork, MultiExitNetwork,
                                                      MultiExitNetwork]:
    """The base and the variant as loaded (plain), then as timed (with the second look where asked)."""
    plain_base, _ = load_checkpoint(args.checkpoint)
    plain_variant, _ = load_checkpoint(args.variant) if args.variant else (plain_base, None)
    if len(plain_variant.blocks) != len(plain_base.blocks):
        raise SystemExit(f"{args.variant} has {len(plain_variant.blocks)} blocks, {args.checkpoint} "
                         f"{len(plain_base.blocks)}: a variant keeps its base's blocks")
    model, variant = plain_base, plain_variant
    if args.second_look:
        try:
            variant = with_second_look(plain_variant, args.second_look, args.depth)
            if args.base_has_second_look:
                model = with_second_look(plain_base, args.second_look, args.depth)
        except ValueError as error:
            raise SystemExit(f"--depth/--second-look: {error}") from None
    return plain_base, plain_variant, model, variant


def time_both(args: argparse.Namespace, model: MultiExitNetwork,
              variant: MultiExitNetwork) -> tuple[list[ETRecord], list[ETRecord]]:
    """ET-profiles of the base and the variant, alternating for --rounds, on the inputs `einet profile` times with."""
    _, holdout = data.load(args.dataset, args.data, "train").split(args.holdout, seed=args.seed)
    samples = data.timing_images(args.dataset, holdout)  # the inputs `einet profile` times with
    shape = tuple(samples.shape[1:])
    plain, varied = [], []
    for _ in range(args.rounds):
        plain.append(profile_et(model, shape, repeats=args.repeats, warmup=20, progress=False, samples=samples))
        varied.append(profile_et(variant, shape, repeats=args.repeats, warmup=20, progress=False, samples=samples))
    return plain, varied


def splice(base: ETRecord, plain: list[ETRecord], varied: list[ETRecord], base_of: np.ndarray,
           unchanged: dict[str, list[bool]]) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Each time field of the variant: its base block's time plus what the variant measured adds there (nothing
    where `unchanged`); and what was added, in us."""
    spliced, added_us = {}, {}
    for field in ETRecord.TIMES:
        measured_plain = np.mean([getattr(r, field) for r in plain], axis=0)
        measured_variant = np.mean([getattr(r, field) for r in varied], axis=0)
        added = measured_variant - measured_plain[base_of]  # what the variant adds per block (may be < 0)
        added[unchanged[field.split("_")[0]]] = 0.0  # the base's own module: its time is kept
        base_times = getattr(base, field)[base_of]
        spliced[field] = np.maximum(base_times + added, 1e-7)
        added_us[field] = np.round(1e6 * (spliced[field] - base_times), 2).tolist()
    return spliced, added_us


def main() -> None:
    """Times the base and the variant back to back and writes the base's ET-profile spliced with the difference."""
    args = parse_args()
    plain_base, plain_variant, model, variant = load_networks(args)
    adds_look = bool(args.second_look) and not args.base_has_second_look
    labels = [f"variant {Path(args.variant).name}"] if args.variant else []
    if adds_look:
        labels.append(variant.label)
    n = model.num_exits
    # the base block each of the variant's blocks corresponds to, and the plain network's index of both
    base_of = np.tile(np.arange(variant.num_exits // 2), 2) if adds_look else np.arange(n)
    plain_index = base_of % len(variant.blocks)
    base = ETRecord.load(args.fixture / "et.npz")
    if len(base.conv) != n:
        raise SystemExit(f"{args.fixture / 'et.npz'} has {len(base.conv)} blocks, the base network {n}")
    plain, varied = time_both(args, model, variant)
    # a module the base runs the same way (no second look added) with the same weights keeps the base's time
    unchanged = {"conv": [not adds_look and _same_module(plain_base.blocks[j], plain_variant.blocks[j])
                          for j in plain_index],
                 "branch": [not adds_look and _same_module(plain_base.exits[j], plain_variant.exits[j])
                            for j in plain_index]}
    spliced, added_us = splice(base, plain, varied, base_of, unchanged)
    provenance = {"rounds": args.rounds, "repeats": args.repeats, "added_conv_us": added_us["conv"],
                  "added_branch_us": added_us["branch"]}
    meta = {**base.meta, "model": " + ".join([base.meta.get("model", "model"), *labels]), "spliced": provenance}
    if args.second_look:
        meta["second_look"] = {"view": args.second_look, "depth": variant.num_exits // 2}
    ETRecord(**spliced, meta=meta).save(args.out / "et.npz")
    print(f"added per block (us): {added_us['conv']}")
    print(f"added per branch (us): {added_us['branch']}")
    print(f"wrote {args.out / 'et.npz'}")

def _same_module(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """The same kind of module with the same weights: it runs in the same time."""
    left, right = a.state_dict(), b.state_dict()
    return type(a) is type(b) and left.keys() == right.keys() and all(
        left[k].shape == right[k].shape and torch.equal(left[k], right[k]) for k in left)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
