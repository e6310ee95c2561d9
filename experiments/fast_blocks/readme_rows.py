"""What faster blocks buy the README's rows, at the same deadlines in seconds.

For each README row's deployed bundle (rebuilt by `einet build examples/NAME.toml` where runs/NAME.einet
is missing; its blocks compiled for one thread unless --no-compile), on this machine, one torch thread:

1. the network timed twice, back to back on its timing images: as trained (eager) and in its fastest
   verified form here (einet.forms.time_here: prepared, or compiled where quicker);
2. for each timing, the configuration selected again on the bundle's held-out data, as `einet profile`
   does, into its own copy of the bundle (its only cpu entry);
3. exact expected accuracy on the test split's CS-profile under the bundle's exit times (its horizon in
   milliseconds, uniform and normal): fastest form minus eager, paired over the test images;
4. real time: both copies' adaptive inline runtimes on the 10,000 CIFAR-10 test images, side by side
   (einet.runtime.realtime.run_streams: each image through both, order rotating), deadlines drawn from
   the bundle's distribution: the real-time gain, paired, against the gain the simulator predicts at
   the same deadlines from each copy's profile (the promise: planned times plus recent part delays).

Run: python experiments/fast_blocks/readme_rows.py [--rows NAME ...] [--limit N] [--no-compile]
Writes experiments/fast_blocks/results/readme_rows.{md,json}, keeping the rows not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from einet.bundle import device_identity, read_bundle
from einet.data import load
from einet.distributions import sample_exit_times
from einet.evaluation.simulate import ci95_half_width, evaluate, paired_difference
from einet.formats.manifest import add_device
from einet.forms import ensure_compiled, time_here
from einet.models.inference import InferenceForm
from einet.pipeline import reselect
from einet.profiling import profile_et
from einet.runtime.realtime import run_streams, simulations

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip"
ROWS = {"vgg16_fine_deployed": "VGG-16 fine, w0.25", "b_alexnet_thumbnail": "B-AlexNet, w0.5",
        "b_alexnet_w025_light": "B-AlexNet, w0.25", "resnet50_fine": "ResNet-50 fine, w0.125",
        "flex_vgg16": "FlexVGG-16, w0.25"}


def bundle_of(name: str) -> Path:
    """runs/NAME.einet, built from examples/NAME.toml where missing."""
    path = ROOT / "runs" / f"{name}.einet"
    if not path.exists():
        subprocess.run(["einet", "build", str(ROOT / "examples" / f"{name}.toml"), "--quiet"], check=True)
    return path


def timed_copy(source: Path, folder: Path, record) -> Path:
    """A copy of the bundle whose only cpu entry is `record`, selected for as `einet profile` does."""
    copy = folder / source.name
    shutil.copytree(source, copy)
    identity = device_identity("cpu", 1)
    deployment, predictor = reselect(copy, identity, record)
    add_device(copy, identity, record, deployment, predictor)
    return copy


def exact(copies: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each copy's exact expected accuracy on the test split, fast minus eager paired, per exit-time kind."""
    out = {}
    for kind in ("uniform", "normal"):
        results = {}
        for form, copy in copies.items():
            bundle = read_bundle(copy)
            entry = bundle.entry("cpu", 1)
            et = bundle.et(entry).profile
            dist = bundle.distribution(kind)
            results[form] = evaluate(bundle.policy(entry, et, dist, bundle.predictor(entry)), bundle.test(),
                                     bundle.planned_profile(entry, et), dist, draws=1, rule=entry.deployment.rule)
        diff = paired_difference(results["fast"], results["eager"])
        out[kind] = {"eager": results["eager"].expected, "fast": results["fast"].expected, "gain": diff.mean,
                     "ci95": diff.ci95}
    return out


def real_time(copies: dict[str, Path], limit: int | None, seed: int = 0) -> dict[str, float]:
    """Both copies' inline runtimes on the CIFAR-10 test images at the same drawn deadlines."""
    arrays = load("cifar10", str(CIFAR), "test")
    bundles = {form: read_bundle(copy) for form, copy in copies.items()}
    first = bundles["eager"]
    labels = np.array([first.classes.index(arrays.classes[k]) for k in arrays.labels])
    count = min(limit or len(labels), len(labels))
    images = first.preprocess(arrays.images[:count])
    deadlines = sample_exit_times(first.distribution(), (count,), np.random.default_rng(seed))
    runtimes = [bundles[form].runtime("cpu", 1, inline=True, engine="python") for form in ("eager", "fast")]
    try:
        for runtime in runtimes:  # a cold start, then the estimates settle
            for k in range(100):
                runtime.infer(images[k:k + 1])
        streams = run_streams([(r, None) for r in runtimes], images, labels[:count], deadlines)
    finally:
        for runtime in runtimes:
            runtime.close()
    test = first.test().subset(np.arange(count))
    assert np.array_equal(test.labels, labels[:count]), "the test CS-profile is of other images"
    real = streams[1].correct.astype(float) - streams[0].correct.astype(float)
    promised = [dict(simulations(stream, test, runtime.rule)) for stream, runtime in zip(streams, runtimes)]
    key = next(name for name in promised[0] if "promise" in name)
    predicted = promised[1][key] - promised[0][key]
    return {"images": count, "eager": streams[0].accuracy, "fast": streams[1].accuracy,
            "gain": real.mean(), "ci95": ci95_half_width(real), "predicted_gain": predicted.mean(),
            "real_minus_predicted": (real - predicted).mean(), "ci95_real_minus_predicted": ci95_half_width(
                real - predicted),
            "promise_eager": promised[0][key].mean(), "promise_fast": promised[1][key].mean()}


def study(name: str, limit: int | None, compile_too: bool) -> dict:
    source = bundle_of(name)
    bundle = read_bundle(source)
    torch.set_num_threads(1)
    if compile_too:
        ensure_compiled(bundle, 1, log=lambda _: None)
    samples = bundle.preprocess(bundle.timing_images())
    eager = profile_et(bundle.network(), tuple(samples.shape[1:]), warmup=20, repeats=400, threads=1,
                       samples=samples, name=bundle.name, progress=False, form=InferenceForm())
    fast = time_here(bundle, "cpu", 1, 20, 400)
    row = {"row": ROWS[name], "horizon_ms": bundle.horizon_ms, "form": fast.meta["form"]["name"],
           "eager_ms": 1e3 * eager.profile.total(), "fast_ms": 1e3 * fast.profile.total()}
    with tempfile.TemporaryDirectory() as folder:
        copies = {}
        for form, record in (("eager", eager), ("fast", fast)):
            (Path(folder) / form).mkdir()
            copies[form] = timed_copy(source, Path(folder) / form, record)
        row["exact"] = exact(copies)
        row["real_time"] = real_time(copies, limit)
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| row (horizon) | form: full inference, eager -> fastest | exact, uniform: fastest minus eager | "
             "exact, normal | real time (inline, the bundle's exit times): fastest minus eager | simulator's "
             "promise of that gain | real minus promised |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        e, r = row["exact"], row["real_time"]
        lines.append(
            f"| {row['row']} ({row['horizon_ms']:.3f} ms) | {row['form']}: {row['eager_ms']:.3f} -> "
            f"{row['fast_ms']:.3f} ms | {100 * e['uniform']['gain']:+.2f} ± {100 * e['uniform']['ci95']:.2f} pp | "
            f"{100 * e['normal']['gain']:+.2f} ± {100 * e['normal']['ci95']:.2f} pp | {100 * r['gain']:+.2f} ± "
            f"{100 * r['ci95']:.2f} pp ({100 * r['eager']:.2f} -> {100 * r['fast']:.2f}%, {r['images']} images) | "
            f"{100 * r['predicted_gain']:+.2f} pp | {100 * r['real_minus_predicted']:+.2f} ± "
            f"{100 * r['ci95_real_minus_predicted']:.2f} pp |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--limit", type=int, default=None, help="the first N test images only, in real time")
    parser.add_argument("--no-compile", action="store_true", help="the prepared form only")
    parser.add_argument("--out", default=str(HERE / "results" / "readme_rows"))
    args = parser.parse_args(argv)
    if not CIFAR.exists():
        print(f"needs {CIFAR.relative_to(ROOT.parent)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else []
    fresh = {ROWS[name]: study(name, args.limit, not args.no_compile) for name in args.rows}
    rows = [fresh.pop(row["row"], row) for row in kept] + list(fresh.values())  # rows not run again are kept
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
