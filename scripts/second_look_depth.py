"""Choose a second look's depth on held-out data: how many blocks each pass runs.

A full second look's profiles (a fixture with 2N exits: `einet profile --second-look flip` and
scripts/spliced_et.py) contain every shallower one: the depth-d network's exits are the full
network's exits 0..d-1 and N..N+d-1, computed the same way, and its blocks cost what theirs cost.
For each depth this script selects a deployment on held-out data (einet.select.select_network: the
same exit times in seconds for every candidate, the reference fixture's full inference time) and
prints every depth's held-out score beside the base network's (no second look); it never reads the
test split. Make the chosen depth's fixture with `einet profile --second-look flip
--second-look-depth D --skip-et` and either `scripts/spliced_et.py --second-look flip --depth D`
(timed anew) or `--write-et D FOLDER` here (the cut this selection scored), and measure it on the
test split with scripts/anytime_levers.py.

    python scripts/second_look_depth.py benchmarks/fixtures/vgg16_fine_w025_cpu_light_second_look \
        --base benchmarks/fixtures/vgg16_fine_w025_cpu_light \
        --reference benchmarks/fixtures/vgg16_fine_w025_cpu_joint --out docs/levers/second_look_depth.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from einet.planner import ETProfile
from einet.profiling import CSProfile, ETRecord
from einet.select import held_out_score, select_network
from einet.simulate import full_inference_time


def depth_exits(n: int, depth: int) -> np.ndarray:
    """The full second look's exits (2N) that the depth-`depth` one runs: 0..depth-1 and N..N+depth-1."""
    return np.r_[0:depth, n:n + depth]


def at_depth(et: ETRecord, holdout: CSProfile, depth: int) -> tuple[ETProfile, CSProfile]:
    """The depth-`depth` second look's profiles, cut from the full second look's 2N exits."""
    keep = depth_exits(len(et.conv) // 2, depth)
    return ETProfile(et.conv[keep], et.branch[keep]), holdout.subset_exits(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path, help="the full second look's fixture (2N exits)")
    parser.add_argument("--base", type=Path, required=True, help="the network's own fixture (N exits)")
    parser.add_argument("--reference", type=Path, required=True,
                        help="the fixture whose full inference time is the exit times' horizon")
    parser.add_argument("--depths", type=int, nargs="+", help="depths to try (default: 1..N)")
    parser.add_argument("--kinds", nargs="+", default=["uniform", "normal"])
    parser.add_argument("--rules", nargs="+", default=["latest", "best", "ensemble"])
    parser.add_argument("--out", type=Path, help="also write the table here (markdown, with a .json beside it)")
    parser.add_argument("--write-et", nargs=2, metavar=("D", "FOLDER"),
                        help="only write the depth-D second look's ET-profile, cut from the full one's, to FOLDER")
    args = parser.parse_args()
    et = ETRecord.load(args.fixture / "et.npz")
    holdout = CSProfile.load(args.fixture / "cs-holdout.npz")
    base_et = ETRecord.load(args.base / "et.npz").profile
    base_holdout = CSProfile.load(args.base / "cs-holdout.npz")
    n = len(et.conv) // 2
    if len(et.conv) != 2 * base_holdout.num_exits or holdout.num_exits != len(et.conv):
        raise SystemExit(f"{args.fixture} must hold twice the exits of {args.base}: a full second look of it")
    if args.write_et:
        depth, folder = int(args.write_et[0]), Path(args.write_et[1])
        if not 1 <= depth <= n:
            raise SystemExit(f"--write-et: the depth must lie in 1..{n}, got {depth}")
        keep = depth_exits(n, depth)
        meta = {key: value for key, value in et.meta.items() if key != "spliced"}  # per-block lists of 2N
        ETRecord(**{field: getattr(et, field)[keep] for field in ETRecord.TIMES},
                 meta=meta | {"model": f"{et.meta.get('model', 'model')}, cut to depth {depth}",
                              "second_look": {**et.meta.get("second_look", {}), "depth": depth},
                              "cut_from": args.fixture.name}).save(folder / "et.npz")
        print(f"wrote {folder / 'et.npz'}")
        return
    depths = args.depths or list(range(1, n + 1))
    if not all(1 <= d <= n for d in depths):
        raise SystemExit(f"--depths must lie in 1..{n}, got {depths}")
    horizon = full_inference_time(ETRecord.load(args.reference / "et.npz").profile)
    candidates = {"no second look": (base_et, base_holdout)} | {
        f"depth {d}": at_depth(et, holdout, d) for d in depths}
    scores: dict[str, dict[str, float]] = {name: {} for name in candidates}
    chosen = {}
    for kind in args.kinds:
        for name, profiles in tqdm(candidates.items(), desc=f"selecting each depth ({kind})", leave=False):
            deployment, _ = select_network({name: profiles}, (kind,), horizon=horizon, rules=args.rules,
                                           progress=False)
            scores[name][kind] = held_out_score(deployment)
        chosen[kind] = max(scores, key=lambda name: scores[name][kind])
        print(f"{kind}: chosen {chosen[kind]} ({100 * scores[chosen[kind]][kind]:.2f}% held out)", flush=True)
    lines = [f"Held-out exact accuracy (%) of each depth's deployed configuration, exit times over "
             f"{1e3 * horizon:.3f} ms (`{args.reference.name}`'s full inference); rules {', '.join(args.rules)}.",
             "", "| network | " + " | ".join(args.kinds) + " |", "|---|" + "---:|" * len(args.kinds)]
    for name, by_kind in scores.items():
        cells = [f"**{100 * by_kind[k]:.2f}**" if chosen[k] == name else f"{100 * by_kind[k]:.2f}" for k in args.kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"horizon_s": horizon, "rules": args.rules,
                                                             "scores": scores, "chosen": chosen}, indent=1) + "\n")


if __name__ == "__main__":
    main()
