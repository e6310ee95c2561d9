"""Issue 5: EINet against every baseline on real CS-/ET-profiles, and the runtime under real interrupts.

- The paper's comparison, per committed fixture and exit-time distribution (uniform
  and normal over one full inference): tables in benchmarks/results/compare_*.md|csv, with --update-results.
- Real time (needs ../shared/data and the committed B-AlexNet and light-exit VGG-16 weights): the runtime
  under timer interrupts drawn from the distribution, over 3,000 CIFAR-10 test
  images, against the simulator's prediction for the same images (within 2 pp),
  with the ET-profile measured now and calibrated by the runtime; interrupt latency
  (median <= 1 ms, p99 <= 5 ms); the planner's share of the inference time.
Run: python -m pytest benchmarks/test_bench_elastic.py --benchmark-only -s
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fixtures_lib import SHARED, available, folder
from einet.distributions import full_inference_time, relative_distribution
from einet.evaluation.simulate import compare
from einet.evaluation.tables import csv_table, markdown_table
from einet.formats.profiles import CSProfile, ETRecord

torch = pytest.importorskip("torch")
from einet.predictor import load_predictor  # noqa: E402

COMPRESSED = {"b_alexnet_w05_cpu": "b_alexnet_w025_cpu"}  # fixture of the half-width model


def comparison(name: str, kind: str, draws: int):
    from einet.evaluation.simulate import evaluate_all

    et = ETRecord.load(folder(name) / "et.npz").profile
    test = CSProfile.load(folder(name) / "cs-test.npz")
    dist = relative_distribution(kind, full_inference_time(et))
    compressed = COMPRESSED.get(name)
    twin = None
    if compressed in available():  # the same network at half width, trained the same way: its final exit only
        twin = (ETRecord.load(folder(compressed) / "et.npz").profile,
                CSProfile.load(folder(compressed) / "cs-test.npz"))
    results = evaluate_all(et, dist, load_predictor(folder(name) / "predictor.npz").to_native(),
                           CSProfile.load(folder(name) / "cs-holdout.npz"), test, draws=draws, compressed=twin)
    return compare(results), test


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uniform", "normal"])
@pytest.mark.parametrize("name", available())
def test_einet_against_every_baseline(benchmark, results_folder, name, kind):
    draws = 5 if benchmark.disabled else 100
    rows, test = benchmark.pedantic(comparison, args=(name, kind, draws), rounds=1, iterations=1)
    dataset = {"cifar10": "CIFAR-10", "mnist": "MNIST"}.get(str(test.meta.get("dataset", "cifar10")))
    title = (f"{test.meta.get('model', name)} on {dataset}, {kind} exit time over one full inference, "
             f"{test.num_samples} test images x {draws} draws")
    if results_folder is not None and not benchmark.disabled:  # the committed tables: full runs, asked for
        (results_folder / f"compare_{name}_{kind}.md").write_text(markdown_table(rows, title))
        (results_folder / f"compare_{name}_{kind}.csv").write_text(csv_table(rows))
    by = {r["policy"]: r for r in rows}
    einet = by["EINet"]["expected"]
    # Never below a static, dynamic or single-exit plan (ties within 0.1 pp). (With B-AlexNet's three exits, every plan
    # that runs the first two branches ties: the third answer only lands at the horizon.)
    for policy in ("static 25%", "static 50%", "static 100%", "dynamic 90%", "dynamic 95%", "dynamic 99%",
                   "single-exit", "compressed single-exit"):
        if policy in by:
            assert einet >= by[policy]["expected"] - 1e-3, (policy, rows)
    # The statistics plan and random-search EINet tie with EINet on these models (see docs/results.md):
    # never more than half a point apart.
    for policy in ("statistics", "EINet (random search)"):
        assert einet > by[policy]["expected"] - 0.005, (policy, rows)
    # einet's default EINet is never below the statistics plan by a paired-significant margin
    statistics = by["statistics"]
    assert not (statistics["significant"] and statistics["einet_minus_policy"] < 0), rows
    assert by["clairvoyant"]["expected"] >= max(r["expected"] for r in rows) - 1e-9


def realtime_case(name: str, predictor: str):
    from einet.formats.predictor_file import load_native_predictor

    if not (folder(name) / "model.pt").exists() or not (SHARED / "cifar10-jpeg.zip").exists():
        pytest.skip(f"needs the {name} fixture with its weights and ../shared/data")
    from einet import data
    from einet.formats.checkpoint import load_checkpoint

    model, _ = load_checkpoint(folder(name) / "model.pt")
    test = data.load("cifar10", SHARED / "cifar10-jpeg.zip", "test")
    images = data.dataset_for("cifar10", test, False).images
    native, rule = load_native_predictor(folder(name) / predictor)
    return (model, ETRecord.load(folder(name) / "et.npz").profile, CSProfile.load(folder(name) / "cs-test.npz"),
            native, rule, images, test.labels)


@pytest.mark.benchmark(group="real time")
@pytest.mark.parametrize(("name", "predictor"), [("b_alexnet_w05_cpu", "predictor.npz"),
                                               ("b_alexnet_w05_cpu", "predictor-ensemble.npz"),
                                               ("vgg16_fine_w025_cpu_light", "predictor-ensemble.npz")],
                         ids=["latest", "ensemble", "light-exits"])
def test_runtime_agrees_with_the_simulator(benchmark, speed_goal, capsys, name, predictor):
    """B-AlexNet under rule latest, and rule ensemble with the time-zero answer (the predictor file
    carries the rule); the 14-exit VGG-16 with light exits (30-us branches: the runtime's own
    overheads weigh most there) under rule ensemble with the time-zero answer."""
    from einet.distributions import sample_exit_times
    from einet.policies import EINet
    from einet.profiling import profile_et
    from einet.runtime import ElasticRuntime
    from einet.runtime.realtime import check_against_simulator

    model, base, cs, native, rule, images, labels = realtime_case(name, predictor)
    samples = 50 if benchmark.disabled else 3000
    chosen = np.random.default_rng(1).choice(len(labels), samples, replace=False)
    # The block times on this machine now, on real images (the committed profile is from another day),
    # then what the runtime adds to them, measured over a warm-up, folded in for planner and simulator.
    base = profile_et(model, (3, 32, 32), warmup=20, repeats=20 if benchmark.disabled else 1000,
                      progress=False, samples=images[chosen[:500]]).profile
    dist = relative_distribution("uniform", full_inference_time(base))
    deadlines = sample_exit_times(dist, (samples,), np.random.default_rng(2))
    with ElasticRuntime(model, EINet(native, base, dist, rule), rule=rule) as runtime:
        check = benchmark.pedantic(
            check_against_simulator,
            args=(runtime, lambda et: EINet(native, et, dist, rule), base, cs.subset(chosen), images[chosen],
                  deadlines), kwargs={"warmup": 300}, rounds=1, iterations=1)
    report = check.report
    latencies = np.array(report.latencies)
    summary = {"runtime_accuracy": report.accuracy, "simulated": float(check.simulated.mean()),
               "difference_pp": 100 * check.difference, "difference_ci95_pp": 100 * check.ci95,
               "latency_median_ms": 1e3 * float(np.median(latencies)),
               "latency_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
               "planning_share": report.planning_share, "samples": samples}
    benchmark.extra_info.update(summary)
    with capsys.disabled():
        print(f"\nreal time ({name}, CPU, rule {rule.label()}):", {k: round(v, 4) for k, v in summary.items()})
    assert 0.0 <= report.accuracy <= 1.0
    difference = summary["difference_pp"]
    speed_goal(abs(difference) <= 2.0, f"runtime and simulator differ by {difference:.2f} pp")
    speed_goal(np.median(latencies) <= 1e-3, f"median interrupt latency {summary['latency_median_ms']:.2f} ms")
    speed_goal(np.percentile(latencies, 99) <= 5e-3, f"p99 interrupt latency {summary['latency_p99_ms']:.2f} ms")


@pytest.mark.benchmark(group="real time")
def test_planner_share_on_a_fine_grained_model(benchmark, speed_goal, capsys):
    """Planning time over end-to-end time for a 14-exit VGG-16 (width 0.5) on CPU, batch 1; the
    weights do not change the timing, the VGG fixture's predictor drives the planning."""
    from einet.models import build
    from einet.policies import EINet
    from einet.profiling import profile_et
    from einet.runtime import ElasticRuntime

    name = "vgg16_fine_w05_cuda"
    if name not in available():
        pytest.skip("the VGG-16 fixture is not here")
    native = load_predictor(folder(name) / "predictor.npz").to_native()
    torch.manual_seed(0)
    model = build("vgg16_fine", width=0.5)
    x = torch.randn(1, 3, 32, 32)
    et = profile_et(model, (3, 32, 32), warmup=5, repeats=5 if benchmark.disabled else 50, progress=False,
                    samples=x).profile
    with ElasticRuntime(model, EINet(native, et, relative_distribution("uniform", full_inference_time(et)))) as runtime:
        answers = benchmark.pedantic(lambda: [runtime.infer(x) for _ in range(10 if benchmark.disabled else 200)],
                                     rounds=1, iterations=1)
    share = sum(a.planning_seconds for a in answers) / sum(a.elapsed for a in answers)
    branches = np.mean([len(a.exits_run) for a in answers])
    benchmark.extra_info.update(planning_share=share, branches=branches)
    with capsys.disabled():
        print(f"\nplanner share on vgg16_fine (width 0.5, CPU): {100 * share:.2f}% "
              f"over {branches:.1f} branches per inference")
    speed_goal(share <= 0.02, f"planning takes {100 * share:.2f}% of the inference")
