"""What the runtime adds to the direct block-by-block loop, today's against an earlier revision's.

Each round runs one sample three ways, the order rotating: the blocks and exits directly (each
exit's log-softmax read back and folded into the running answer, as the runtime does), through
the runtime of REVISION (read with ``git show``, imported beside today's package), and through
today's. Printed per model: the direct time; the median paired difference each runtime adds;
``infer()`` to the first block (median, p99). One thread, batch one.

    python experiments/adaptive/runtime_before_after.py 63a7039 --rounds 600
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import einet
from einet.policies import FixedPlan
from einet.runtime import ElasticRuntime

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fixtures_lib import network_and_direct_run, rotated_timings  # noqa: E402

MODELS = ["b_alexnet_w025_mnist_cpu", "b_alexnet_w05_cpu", "vgg16_fine_w025_cpu_light"]


def runtime_of(revision: str, folder: Path) -> type:
    """The ElasticRuntime class of `revision`, imported as einet._runtime_before (its relative imports
    resolve to today's package)."""
    source = subprocess.run(["git", "show", f"{revision}:python/einet/runtime.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "runtime_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"{einet.__name__}._runtime_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.ElasticRuntime  # type: ignore[no-any-return]


def measure(name: str, before: type, rounds: int) -> str:
    model, x, direct = network_and_direct_run(name)
    n = model.num_exits

    old, new = before(model, FixedPlan([True] * n, "all")), ElasticRuntime(model, FixedPlan([True] * n, "all"))
    d, o, w = rotated_timings((direct, lambda: old.infer(x), lambda: new.infer(x)), rounds,
                              before=lambda: (old.reset_statistics(), new.reset_statistics()))
    first = [np.array(list(r.dispatch_seconds)) * 1e6 for r in (old, new)]
    old.close()
    new.close()
    dispatch = (f"{np.median(first[0]):.0f} -> {np.median(first[1]):.0f} us (p99 {np.percentile(first[0], 99):.0f} "
                f"-> {np.percentile(first[1], 99):.0f})")
    return (f"{name} ({n} exits): direct {np.median(d) * 1e3:.3f} ms; the runtime adds {np.median(o - d) * 1e6:.0f} "
            f"us before, {np.median(w - d) * 1e6:.0f} us after; to the first block {dispatch}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="the git revision whose runtime is 'before'")
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        before = runtime_of(args.revision, Path(folder))
        for name in args.models:
            print(measure(name, before, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
