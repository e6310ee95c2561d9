"""What the elastic runtime adds to running the same blocks and exits directly (issue: a lean loop).

Each round runs one sample directly in a loop (every block, every exit, its log-softmax read back
and folded into the running answer, as the runtime does) and then through ``infer()``, alternated
in one run so that load and frequency changes hit both alike. Reported per model: the median
per-round difference, its split (the caller up to the hand-over, the hand-over, the worker's loop,
the hand-back, the return) and the speed goal: at most 50 us per inference plus 5 us per branch.
Run: python -m pytest benchmarks/test_bench_runtime.py --benchmark-only -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fixtures_lib import folder, network_and_direct_run

torch = pytest.importorskip("torch")

from einet.policies import FixedPlan  # noqa: E402
from einet.runtime import ElasticRuntime  # noqa: E402

MODELS = ["b_alexnet_w025_mnist_cpu", "b_alexnet_w05_cpu", "vgg16_fine_w025_cpu_light"]


def overhead(name: str, rounds: int) -> dict[str, float]:
    path = folder(name) / "model.pt"
    if not path.exists():
        pytest.skip(f"the {name} weights are not here")
    torch.set_num_threads(1)
    model, x, direct = network_and_direct_run(name)
    n = model.num_exits

    direct_s, runtime_s, dispatch = [], [], []
    with ElasticRuntime(model, FixedPlan([True] * n, "every exit"), threads=1) as runtime:
        for _ in range(20):  # warm both paths
            direct()
            runtime.infer(x)
        runtime.reset_statistics()
        for _ in range(rounds):
            started = time.perf_counter()
            direct()
            middle = time.perf_counter()
            runtime.infer(x)
            direct_s.append(middle - started)
            runtime_s.append(time.perf_counter() - middle)
        dispatch = list(runtime.dispatch_seconds)
    added = np.array(runtime_s) - np.array(direct_s)
    return {"direct_ms": 1e3 * float(np.median(direct_s)), "runtime_ms": 1e3 * float(np.median(runtime_s)),
            "added_us": 1e6 * float(np.median(added)), "added_p90_us": 1e6 * float(np.percentile(added, 90)),
            "to_first_block_us": 1e6 * float(np.median(dispatch)),
            "to_first_block_p99_us": 1e6 * float(np.percentile(dispatch, 99)), "branches": n}


@pytest.mark.benchmark(group="runtime overhead")
@pytest.mark.parametrize("name", MODELS)
def test_runtime_adds_little_to_the_direct_loop(benchmark, speed_goal, capsys, name):
    result = benchmark.pedantic(overhead, args=(name, 20 if benchmark.disabled else 500), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    with capsys.disabled():
        print(f"\n{name}:", {k: round(v, 1) for k, v in result.items()})
    assert result["runtime_ms"] > 0 and result["direct_ms"] > 0
    budget = 50 + 5 * result["branches"]
    speed_goal(result["added_us"] <= budget, f"the runtime adds {result['added_us']:.0f} us, over {budget} us")
    speed_goal(result["to_first_block_us"] <= 10, f"infer() to the first block {result['to_first_block_us']:.0f} us")
