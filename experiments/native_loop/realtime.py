"""What a user is told and what a user gets, on the native engine against the Python loop.

For a README bundle (default: the VGG-16 row's; runs/NAME.einet, built where missing), its blocks compiled
for one thread and its cpu entry re-timed here in the fastest form (as `einet compile` + `einet profile`
do), on the CIFAR-10 test images at deadlines drawn from its exit times, under each load (idle, two
steady CPU burners, two burners switched every 1.5 s):

- the four adaptive runtimes side by side (einet.runtime.realtime.run_streams: each image through each,
  the order rotating): the Python loop and the native engine, each inline and on a worker (threaded, the
  default driver): real-time accuracy, native minus Python per driver (paired);
- each runtime minus its promise (the simulator with its planned times plus recent part delays, paired);
- each runtime minus what `einet evaluate` says for the same device entry (the exact expected accuracy
  over the bundle's exit times, on the same images).

Run: python -m experiments.native_loop.realtime [--bundle NAME] [--limit N] [--loads idle steady switching]
Writes experiments/native_loop/results/realtime.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from einet.bundle import read_bundle
from einet.evaluation.bundles import evaluate_bundle
from einet.evaluation.simulate import ci95_half_width
from einet.runtime.realtime import promised, run_streams
from einet.runtime.stress import Burners
from experiments.fast_blocks.promise import compiled_test_stream
from experiments.fast_blocks.readme_rows import CIFAR, bundle_of

HERE = Path(__file__).resolve().parent
MODES = {"Python inline": ("python", True), "native inline": ("native", True),
         "Python threaded": ("python", False), "native threaded": ("native", False)}


def paired(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "ci95": float(ci95_half_width(values))}


def run_under(path: Path, load_name: str, images: torch.Tensor, labels: np.ndarray, deadlines: np.ndarray,
              evaluated: np.ndarray) -> dict:
    bundle = read_bundle(path)
    test = bundle.test().subset(np.arange(len(labels)))
    assert np.array_equal(test.labels, labels), "the test CS-profile is of other images"
    runtimes = [bundle.runtime("cpu", 1, inline=inline, engine=engine) for engine, inline in MODES.values()]
    try:
        with Burners.for_load(load_name):
            for runtime in runtimes:  # a cold start, then the estimates settle
                for k in range(100):
                    runtime.infer(images[k:k + 1])
            streams = run_streams([(runtime, None) for runtime in runtimes], images, labels, deadlines)
        promises = [promised(stream, test, runtime.rule) for stream, runtime in zip(streams, runtimes)]
    finally:
        for runtime in runtimes:
            runtime.close()
    correct = dict(zip(MODES, [stream.correct.astype(float) for stream in streams]))
    row: dict = {"load": load_name, "native_minus_python": {
        driver: paired(correct[f"native {driver}"] - correct[f"Python {driver}"]) for driver in ("inline", "threaded")}}
    for mode, promise in zip(MODES, promises):
        row[mode] = {"accuracy": float(correct[mode].mean()), "minus_promise": paired(correct[mode] - promise),
                     "minus_evaluate": paired(correct[mode] - evaluated)}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="vgg16_fine_deployed")
    parser.add_argument("--limit", type=int, default=10000, help="test images per load")
    parser.add_argument("--loads", nargs="+", default=["idle", "steady", "switching"])
    args = parser.parse_args(argv)
    if not CIFAR.exists():
        print(f"needs {CIFAR.name} in ../shared/data", file=sys.stderr)
        return 2
    path = bundle_of(args.bundle)
    record, images, labels, deadlines = compiled_test_stream(path, args.limit)
    count, bundle = len(labels), read_bundle(path)
    evaluation = evaluate_bundle(bundle, bundle.distribution(), "cpu")  # what `einet evaluate BUNDLE` says
    evaluated = np.asarray(evaluation.result.per_sample_expected)[:count]
    result = {"bundle": args.bundle, "form": record.meta["form"]["name"], "full_ms": 1e3 * record.profile.total(),
              "images": count, "evaluate": float(evaluated.mean()), "loads": []}
    for load_name in args.loads:
        result["loads"].append(run_under(path, load_name, images, labels, deadlines, evaluated))
        print(json.dumps(result["loads"][-1]), flush=True)
    out = HERE / "results" / "realtime"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(result))
    print(table(result))
    return 0


def table(result: dict) -> str:
    def pp(figure: dict) -> str:
        return f"{100 * figure['mean']:+.2f} ± {100 * figure['ci95']:.2f} pp"

    lines = [f"{result['bundle']}, {result['form']} form ({result['full_ms']:.3f} ms full inference), "
             f"{result['images']} CIFAR-10 test images per load; `einet evaluate` (this entry, the bundle's exit "
             f"times): {100 * result['evaluate']:.2f}%", "",
             "| load | runtime | accuracy | minus its promise | minus `einet evaluate` | native minus Python |",
             "|---|---|---:|---:|---:|---:|"]
    for row in result["loads"]:
        for mode in MODES:
            figure = row[mode]
            versus = pp(row["native_minus_python"][mode.split()[1]]) if mode.startswith("native") else ""
            lines.append(f"| {row['load']} | {mode} | {100 * figure['accuracy']:.2f}% | {pp(figure['minus_promise'])} "
                         f"| {pp(figure['minus_evaluate'])} | {versus} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
