"""The runtime over compiled blocks keeps its promise, idle and under load; a warm load is quick.

For a README bundle (runs/NAME.einet, built where missing; its blocks compiled for one thread, and its
cpu entry timed in the fastest form, as `einet compile` does), on the CIFAR-10 test images at deadlines
drawn from its exit times: real-time accuracy of the adaptive runtime (inline and threaded) minus its
promise (the simulator with its planned times plus the part delays of recent samples,
einet.runtime.realtime.promised), paired, idle, with two steady CPU burners, and with two burners
switched on and off every 1.5 s (einet.runtime.stress). Also `einet.load` to the first answer in a fresh
process with a warm cache, five times.

Run: python -m experiments.fast_blocks.promise [--bundle NAME] [--limit N]
Writes experiments/fast_blocks/results/promise.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from einet.bundle import read_bundle
from einet.data import load
from einet.distributions import sample_exit_times
from einet.evaluation.simulate import ci95_half_width
from einet.formats.profiles import ETRecord
from einet.forms import add_timed_device, ensure_compiled
from einet.runtime.realtime import promised, run_stream
from einet.runtime.stress import Burners
from experiments.fast_blocks.readme_rows import CIFAR, bundle_of

HERE = Path(__file__).resolve().parent
FIRST_ANSWER = """
import sys, time
started = time.perf_counter()
import einet, einet.bundle, torch
imported = time.perf_counter()
runtime = einet.load(sys.argv[1], inline=True)
runtime.infer(torch.zeros(1, *runtime.input_spec.shape))
print(imported - started, time.perf_counter() - imported, type(runtime.model).__name__)
"""


def first_answer(path: Path, times: int = 5) -> dict:
    """Seconds from einet.load to the first answer of its runtime in a fresh interpreter (warm cache), and
    before it the imports (torch's mostly)."""
    runs = [subprocess.run([sys.executable, "-c", FIRST_ANSWER, str(path)], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(times)]
    return {"seconds": [round(float(r[1]), 2) for r in runs], "imports": [round(float(r[0]), 2) for r in runs],
            "network": runs[0][2]}


def compiled_test_stream(path: Path, limit: int) -> tuple[ETRecord, torch.Tensor, np.ndarray, np.ndarray]:
    """The bundle at `path` compiled for one thread and its cpu entry timed in the fastest form (as `einet
    compile` does; one torch thread from now on); its first `limit` CIFAR-10 test images normalised, their
    labels in its classes, and deadlines drawn from its exit times (seed 0)."""
    torch.set_num_threads(1)
    ensure_compiled(read_bundle(path), 1, log=lambda _: None)
    record, _ = add_timed_device(path, "cpu", 1, log=lambda _: None)
    bundle = read_bundle(path)
    arrays = load("cifar10", str(CIFAR), "test")
    count = min(limit, len(arrays))
    labels = np.array([bundle.classes.index(arrays.classes[k]) for k in arrays.labels[:count]])
    deadlines = sample_exit_times(bundle.distribution(), (count,), np.random.default_rng(0))
    return record, bundle.preprocess(arrays.images[:count]), labels, deadlines


def stream_under(path: Path, load_name: str, inline: bool, images: torch.Tensor, labels: np.ndarray,
                 deadlines: np.ndarray) -> dict:
    bundle = read_bundle(path)
    with Burners.for_load(load_name), bundle.runtime("cpu", 1, inline=inline, engine="python") as runtime:
        for k in range(100):  # a cold start, then the estimates settle
            runtime.infer(images[k:k + 1])
        stream = run_stream(runtime, images, labels, deadlines)
        test = bundle.test().subset(np.arange(len(labels)))
        assert np.array_equal(test.labels, labels), "the test CS-profile is of other images"
        promise = promised(stream, test, runtime.rule)
    difference = stream.correct.astype(float) - promise
    return {"load": load_name, "runtime": "inline" if inline else "threaded", "model": type(runtime.model).__name__,
            "accuracy": stream.accuracy, "promise": promise.mean(), "minus_promise": difference.mean(),
            "ci95": ci95_half_width(difference)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="vgg16_fine_deployed")
    parser.add_argument("--limit", type=int, default=3000, help="test images per run")
    parser.add_argument("--out", default=str(HERE / "results" / "promise"))
    parser.add_argument("--first-answer-only", action="store_true", help="only the load time")
    args = parser.parse_args(argv)
    path = bundle_of(args.bundle)
    if args.first_answer_only:
        print(json.dumps(first_answer(path)))
        return 0
    record, images, labels, deadlines = compiled_test_stream(path, args.limit)
    count = len(labels)
    print(f"{args.bundle}: timed in the {record.meta['form']['name']} form, {1e3 * record.profile.total():.3f} ms")
    rows = []
    for load_name in ("idle", "steady", "switching"):
        for inline in (True, False):
            rows.append(stream_under(path, load_name, inline, images, labels, deadlines))
            print(json.dumps(rows[-1]), flush=True)
    result = {"bundle": args.bundle, "form": record.meta["form"]["name"], "full_ms": 1e3 * record.profile.total(),
              "images": count, "runs": rows, "first_answer": first_answer(path)}
    first = result["first_answer"]
    lines = [f"{args.bundle}, {result['form']} form ({result['full_ms']:.3f} ms full inference), {count} CIFAR-10 "
             f"test images per run; einet.load to the first answer, fresh process, warm cache: "
             f"{', '.join(map(str, first['seconds']))} s ({first['network']}; the imports before it: "
             f"{', '.join(map(str, first['imports']))} s)", "",
             "| load | runtime | real-time accuracy | its promise | runtime minus promise (paired 95%) |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['load']} | {r['runtime']} | {100 * r['accuracy']:.2f}% | {100 * r['promise']:.2f}% | "
              f"{100 * r['minus_promise']:+.2f} ± {100 * r['ci95']:.2f} pp |" for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
