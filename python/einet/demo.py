"""``einet demo``: the whole pipeline on the MNIST slice shipped inside the package.

Train a fine-grained multi-exit VGG-16 (14 exits, narrow), profile it on this
machine, choose the policy and output rule on held-out data (the choice is
written to a deployment file), compare EINet with every baseline in the
trace-driven simulator, then run the deployed configuration for real, in the
adaptive runtime, under random interrupts and check it against the simulator:
with the mean block times the runtime planned with, with those plus how they
varied over the images before (the promise), and replaying the times measured.
``--stress switching`` runs two CPU burners switched on and off every 1.5 s
throughout (``steady``: always on).
No ../shared, no downloads; about a minute on two idle cores.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EinetValueError

if TYPE_CHECKING:
    from .formats.deployment import Deployment
    from .formats.profiles import CSProfile
    from .planner import ETProfile, NativePredictor

WARMUP_RUNS = 100  # uninterrupted runs before the stream: the adaptive runtime's estimates settle


@dataclass(frozen=True)
class DemoOptions:
    """What ``einet demo`` runs with (``einet.cli.demo`` builds them from the command's options)."""

    epochs: int = 8
    samples: int = 1000  # test images run under real interrupts
    out_dir: str | None = None  # where the deployment file is kept (None: a temporary folder)
    threads: int = 2  # torch threads while training and profiling
    device: str = "cpu"  # cpu or cuda (resolved)
    progress: bool = False
    threaded: bool = False  # the blocks on the runtime's worker thread instead of inline
    eager: bool = False  # the network as trained, not its fastest verified form


@dataclass(frozen=True)
class _Trained:
    """What steps 1 and 2 leave: the test images, the network the runtime runs, its profiles."""

    test: Any  # the embedded test split (ImageArrays)
    network: Any
    et: ETProfile
    holdout: CSProfile
    test_cs: CSProfile


def run_demo(options: DemoOptions) -> int:
    """``einet demo``. Torch's thread count and random state are set for it and put back after: the
    caller's process is left as it was."""
    import torch

    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=None if options.device.startswith("cuda") else []):
            torch.manual_seed(0)
            torch.set_num_threads(options.threads)
            return _run(options)
    finally:
        torch.set_num_threads(threads)


def _run(options: DemoOptions) -> int:
    from .distributions import full_inference_time, relative_distribution
    from .evaluation.simulate import compare, evaluate_all
    from .evaluation.tables import markdown_table

    started = time.perf_counter()
    trained = _train_and_profile(options)
    deployment, native = _choose(options, trained)
    rule = deployment.rule
    print(f"[4/5] trace-driven comparison under rule {rule.label()}, exit time uniform over one full inference")
    dist = relative_distribution("uniform", full_inference_time(trained.et))
    results = evaluate_all(trained.et, dist, native, trained.holdout, trained.test_cs, rule, draws=100)
    print()
    print(markdown_table(compare(results), "Accuracy when the inference is stopped at a random moment"))
    _run_for_real(options, trained, deployment, native)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def _train_and_profile(options: DemoOptions) -> _Trained:
    """Steps 1 and 2: train the network on the embedded MNIST slice, profile its block times and exits."""
    from .data import dataset_for, load_mnist
    from .distributions import full_inference_time
    from .models import build
    from .models.inference import InferenceForm
    from .profiling import fastest_form, profile_cs, profile_et
    from .training import TrainConfig, train

    device, progress = options.device, options.progress
    with as_file(files("einet") / "resources") as root:
        train_all, test = load_mnist(root, "train"), load_mnist(root, "test")
    if not 1 <= options.samples <= len(test):
        raise EinetValueError(f"--samples must lie in [1, {len(test)}] (the embedded test images), got "
                              f"{options.samples}")
    train_part, holdout = train_all.split(0.2, seed=0)
    print(f"[1/5] training a 14-exit VGG-16 (width 1/8) on {len(train_part)} MNIST images "
          f"({len(holdout)} held out for the predictor, {len(test)} for testing)")
    model = build("vgg16_fine", num_classes=10, in_channels=1, width=0.125)
    history = train(model, dataset_for("mnist", train_part, True), dataset_for("mnist", test, False),
                    TrainConfig(epochs=options.epochs, batch_size=64, lr=0.05, seed=0, device=device),
                    progress=progress)
    print("      test accuracy per exit (%): " + " ".join(f"{100 * a:.0f}" for a in history.test_accuracy[-1]))

    model.eval()
    examples = dataset_for("mnist", holdout, False).images[:100]  # real inputs: block times depend on them
    form = InferenceForm() if options.eager or device != "cpu" else fastest_form(model, examples, 1)
    network = form.apply(model)  # what the runtime runs; the CS-profiles are the trained network's
    print(f"[2/5] profiling block times on this machine (batch 1, {form.name} form) and exit confidences")
    record = profile_et(network, (1, 28, 28), device=device, warmup=10, repeats=100, name="vgg16_fine (width 0.125)",
                        samples=examples, progress=progress, form=form)
    holdout_cs = profile_cs(model, dataset_for("mnist", holdout, False), device=device, split="holdout",
                            progress=progress)
    test_cs = profile_cs(model, dataset_for("mnist", test, False), device=device, split="test", progress=progress)
    et = record.profile
    print(f"      full inference {1e3 * full_inference_time(et):.2f} ms; "
          f"all 14 branches add {1e3 * et.branch[:-1].sum():.2f} ms")
    return _Trained(test, network, et, holdout_cs, test_cs)


def _choose(options: DemoOptions, trained: _Trained) -> tuple[Deployment, NativePredictor]:
    """Step 3: select on the held-out split, write the deployment and read it back (what a user ships)."""
    from .evaluation.select import DEPLOYMENT_NAME, load_deployment, save_deployment, select
    from .predictor import load_predictor

    print("[3/5] choosing policy, output rule and time-zero answer on the held-out split only "
          "(predictor fitted on one half, scored on the other)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(options.out_dir or folder) / DEPLOYMENT_NAME
        deployment, predictor = select(trained.et, trained.holdout, kinds=("uniform",), rules=("latest", "ensemble"),
                                       predictor_epochs=60, progress=options.progress)
        save_deployment(path, deployment, predictor)
        deployment = load_deployment(path)  # what a user ships: the runtime is built from the file
        native = (load_predictor(path.parent / deployment.predictor) if deployment.predictor else predictor).to_native()
    kept = f"; written to {path}" if options.out_dir else ""
    print(f"      deployed: {deployment.policy}, rule {deployment.rule.label()}{kept}")
    return deployment, native


def _run_for_real(options: DemoOptions, trained: _Trained, deployment: Deployment, native: NativePredictor) -> None:
    """Step 5: the deployed configuration in the adaptive runtime, under timer interrupts, against the simulator."""
    import torch

    from .data import dataset_for
    from .distributions import full_inference_time, relative_distribution, sample_exit_times
    from .evaluation.select import deployed_policy
    from .evaluation.simulate import ci95_half_width
    from .runtime import ElasticRuntime
    from .runtime.adaptive import Adaptation
    from .runtime.realtime import COLD_START_RUNS, run_stream, simulations

    # Inline by default: the blocks run in this thread (a tenth of a millisecond each, so a call returns at most
    # that late), with the thread count they were profiled with. Measured under load, inline keeps the
    # simulator's promise far better than a worker thread (docs/results.md, the adaptive runtime).
    inline = not options.threaded and options.device == "cpu"  # (queued CUDA blocks: threaded)
    if inline:
        torch.set_num_threads(1)  # (run_demo puts the caller's count back)
    test, samples, et = trained.test, options.samples, trained.et
    print(f"[5/5] {deployment.policy} for real, in the adaptive {'inline' if inline else 'threaded'} runtime (it "
          f"learns block times and exit times as it runs): {samples} test images, each interrupted by a timer "
          f"at a random moment")
    # (engine "auto": the native loop runs compiled blocks only; compiling this network would take minutes)
    print("      the Python loop runs the blocks: the demo's network is not compiled (a bundle compiled by `einet "
          "compile` runs in the native loop)")
    dist = relative_distribution("uniform", full_inference_time(et))
    chosen = np.random.default_rng(1).choice(len(test), samples, replace=False)
    deadlines = sample_exit_times(dist, (samples,), np.random.default_rng(2))
    images = dataset_for("mnist", test, False).images
    memo: dict[tuple[int, ...], float] = {}
    holdout = trained.holdout if deployment.spec.plans else None  # the others never plan again
    adaptation = Adaptation(lambda profile, exit_times: deployed_policy(deployment, profile, exit_times, native,
                                                                        holdout, memo),
                            et, dist, full_inference_time(et))
    with ElasticRuntime(trained.network, rule=deployment.rule, device=options.device, adapt=adaptation,
                        inline=inline) as runtime:
        for k in range(COLD_START_RUNS + WARMUP_RUNS):  # a cold start, then the estimates settle
            runtime.infer(images[chosen[k % len(chosen)]:chosen[k % len(chosen)] + 1])
        stream = run_stream(runtime, images[chosen], test.labels[chosen], deadlines, progress=options.progress)
    print(f"      real-time accuracy {100 * stream.accuracy:.1f}%; the simulator, at the same exit times:")
    for what, simulated in simulations(stream, trained.test_cs.subset(chosen), deployment.rule):
        difference = stream.correct.astype(np.float64) - simulated
        print(f"      {100 * simulated.mean():.1f}% {what} (runtime minus simulator {100 * difference.mean():+.1f} ± "
              f"{100 * ci95_half_width(difference):.1f} pp, paired 95%)")
    late = [a.elapsed - d for a, d in zip(stream.answers, deadlines) if a.interrupted]
    if late:
        print(f"      interrupt latency: median {1e3 * np.median(late):.2f} ms, max {1e3 * np.max(late):.2f} ms; "
              f"block times {adaptation.block_times.slowdown:.2f}x the profile's; {adaptation.replans} re-plans")
