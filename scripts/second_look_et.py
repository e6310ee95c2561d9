"""The ET-profile of a network with a second look, consistent with its base fixture's timing.

`einet profile --second-look flip` times the 2N-block network on its own; but a fixture compared
with twins timed back to back on another day must not pick up that day's speed (the same network
timed on different days differed by 20% here). So this script times the base network and its
second-look version back to back, alternating, and writes the base fixture's ET-profile with each
block's measured difference added: block i of the first pass costs the base's block i plus what
carrying the input costs, block N + i of the second pass the base's block i plus what the flip
and the carrying cost (or save). Pair it with the CS-profiles `einet profile --second-look flip
--skip-et` writes into the same folder.

    python scripts/second_look_et.py benchmarks/fixtures/vgg16_fine_w025_cpu_light \
        --checkpoint runs/vgg16_fine_w025_light.pt --data ../shared/data/cifar10-jpeg.zip \
        --out benchmarks/fixtures/vgg16_fine_w025_cpu_light_second_look

`--depth D` does the same for the second look through the first D blocks of each pass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from einet import data
from einet.models import load_checkpoint
from einet.models.second_look import with_second_look
from einet.profiling import ETRecord, profile_et


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path, help="the base network's fixture (its et.npz is spliced)")
    parser.add_argument("--checkpoint", required=True, help="the base network's checkpoint")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data", required=True)
    parser.add_argument("--holdout", type=float, default=0.1, help="as given to `einet train`")
    parser.add_argument("--seed", type=int, default=0, help="as given to `einet train`")
    parser.add_argument("--view", default="flip")
    parser.add_argument("--depth", type=int, help="blocks per pass (default: all; see einet.models.second_look)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two timings")
    parser.add_argument("--repeats", type=int, default=400, help="timed runs per round and network")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    model, _ = load_checkpoint(args.checkpoint)
    try:
        looked = with_second_look(model, args.view, args.depth)
    except ValueError as error:
        raise SystemExit(f"--depth/--view: {error}") from None
    depth = looked.num_exits // 2
    base = ETRecord.load(args.fixture / "et.npz")
    n = model.num_exits
    if len(base.conv) != n:
        raise SystemExit(f"{args.fixture / 'et.npz'} has {len(base.conv)} blocks, {args.checkpoint} {n} exits")
    _, holdout = data.load(args.dataset, args.data, "train").split(args.holdout, seed=args.seed)
    samples = data.timing_images(args.dataset, holdout)  # the inputs `einet profile` times with
    shape = tuple(samples.shape[1:])
    plain, second = [], []
    for _ in range(args.rounds):
        plain.append(profile_et(model, shape, repeats=args.repeats, warmup=20, progress=False, samples=samples))
        second.append(profile_et(looked, shape, repeats=args.repeats, warmup=20, progress=False, samples=samples))
    spliced, added_us = {}, {}
    for field in ETRecord.TIMES:
        measured_plain = np.mean([getattr(r, field) for r in plain], axis=0)
        measured_second = np.mean([getattr(r, field) for r in second], axis=0)
        added = measured_second - np.tile(measured_plain[:depth], 2)  # what the wrapper adds per block (may be < 0)
        base_times = np.tile(getattr(base, field)[:depth], 2)
        spliced[field] = np.maximum(base_times + added, 1e-7)
        added_us[field] = np.round(1e6 * (spliced[field] - base_times), 2).tolist()
    name = f"{base.meta.get('model', 'model')} + {looked.label}"
    ETRecord(**spliced, meta={**base.meta, "model": name, "second_look": {
        "view": args.view, "depth": depth, "rounds": args.rounds, "repeats": args.repeats,
        "added_conv_us": added_us["conv"]}}
    ).save(args.out / "et.npz")
    print(f"added per block (us): {added_us['conv']}")
    print(f"added per branch (us): {added_us['branch']}")
    print(f"wrote {args.out / 'et.npz'}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
