"""The committed profiles of trained models (benchmarks/fixtures/<name>/), and where they came from.

Each folder holds et.npz (ET-profile), cs-holdout.npz and cs-test.npz
(CS-profiles of the held-out part of the training split and of the test split),
predictor.npz (correctness target) and predictor-confidence.npz (the paper's
confidence target). FIXTURES names the command that regenerates each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

FIXTURES = {
    "b_alexnet_w05_cpu": "einet profile --checkpoint runs/b_alexnet_w05.pt --dataset cifar10 "
                         "--data ../shared/data/cifar10-jpeg.zip --out-dir benchmarks/fixtures/b_alexnet_w05_cpu",
    "b_alexnet_w025_cpu": "einet profile --checkpoint runs/b_alexnet_w025.pt --dataset cifar10 "
                          "--data ../shared/data/cifar10-jpeg.zip --out-dir benchmarks/fixtures/b_alexnet_w025_cpu",
    "vgg16_fine_w025_cpu": "einet profile --checkpoint runs/vgg16_fine_w025.pt --dataset cifar10 "
                           "--data ../shared/data/cifar10-jpeg.zip --out-dir benchmarks/fixtures/vgg16_fine_w025_cpu",
    # Trained with `einet train --model vgg16_fine --width 0.25 --epochs 15 --threads 1 --recipe R` (CPU);
    # CS-profiles with log-probabilities; predictor.npz: rule latest, predictor-ensemble.npz: `einet
    # fit-predictor --rule ensemble --time-zero`. The ET-profiles of these VGG-16s (and of the light-exit one
    # below) were re-timed back to back on an idle machine, so that twins compare: for R in joint, light,
    # distill-ensemble, midweights, `einet profile --checkpoint runs/vgg16_fine_w025_R.pt --dataset cifar10
    # --data ../shared/data/cifar10-jpeg.zip --threads 1 --skip-cs --out-dir benchmarks/fixtures/NAME`.
    "vgg16_fine_w025_cpu_joint": "einet profile --checkpoint runs/vgg16_fine_w025_joint.pt --dataset cifar10 "
                                 "--data ../shared/data/cifar10-jpeg.zip --skip-et "
                                 "--out-dir benchmarks/fixtures/vgg16_fine_w025_cpu_joint",
    "vgg16_fine_w025_cpu_distill-ensemble": "einet profile --checkpoint runs/vgg16_fine_w025_distill-ensemble.pt "
                                            "--dataset cifar10 --data ../shared/data/cifar10-jpeg.zip --skip-et "
                                            "--out-dir benchmarks/fixtures/vgg16_fine_w025_cpu_distill-ensemble",
    # The same VGG-16 with exits 4-9 weighted twice the others in the loss (weights 0.7 x3, 1.4 x6, 0.7 x5: same
    # sum), `einet train ... --epochs 15 --threads 2 --exit-weights ...` (CPU); levers:
    # experiments/levers/results/*_recipes.md.
    "vgg16_fine_w025_cpu_midweights": "einet profile --checkpoint runs/vgg16_fine_w025_midweights.pt --dataset "
                                      "cifar10 --data ../shared/data/cifar10-jpeg.zip --skip-et "
                                      "--out-dir benchmarks/fixtures/vgg16_fine_w025_cpu_midweights",
    # B-AlexNet w0.25, `einet train --model b_alexnet --width 0.25 --epochs 10 --threads 1 --recipe R` (CPU);
    # their ET-profiles, and the light-exit one's, re-timed back to back on an idle machine (for R in joint,
    # light, distill: `einet profile --checkpoint runs/b_alexnet_w025_R.pt ... --threads 1 --skip-cs`).
    "b_alexnet_w025_cpu_joint": "einet profile --checkpoint runs/b_alexnet_w025_joint.pt --dataset cifar10 "
                                "--data ../shared/data/cifar10-jpeg.zip --skip-et "
                                "--out-dir benchmarks/fixtures/b_alexnet_w025_cpu_joint",
    "b_alexnet_w025_cpu_distill": "einet profile --checkpoint runs/b_alexnet_w025_distill.pt --dataset cifar10 "
                                  "--data ../shared/data/cifar10-jpeg.zip --skip-et "
                                  "--out-dir benchmarks/fixtures/b_alexnet_w025_cpu_distill",
    # The same VGG-16 with light exits (pool + one linear layer), `einet train ... --epochs 15 --threads 2
    # --exit-head light` (CPU); model.pt: its fp16 weights.
    "vgg16_fine_w025_cpu_light": "einet profile --checkpoint runs/vgg16_fine_w025_light.pt --dataset cifar10 "
                                 "--data ../shared/data/cifar10-jpeg.zip --out-dir "
                                 "benchmarks/fixtures/vgg16_fine_w025_cpu_light",
    # B-AlexNet w0.25 with light exits, `einet train ... --epochs 10 --threads 1 --exit-head light`; with model.pt.
    "b_alexnet_w025_cpu_light": "einet profile --checkpoint runs/b_alexnet_w025_light.pt --dataset cifar10 "
                                "--data ../shared/data/cifar10-jpeg.zip --out-dir "
                                "benchmarks/fixtures/b_alexnet_w025_cpu_light",
    # The same profiles with a thumbnail classifier as exit 0 (an answer from time zero), committed; made by
    # scripts/thumbnail_exit.py, since replaced by `einet build` (levers.thumbnail; examples/b_alexnet_thumbnail.toml
    # rebuilds the last one's bundle and its README row exactly).
    **{name: "committed (einet build with levers.thumbnail = true makes the same exit)" for name in (
        "vgg16_fine_w025_cpu_joint_thumbnail", "vgg16_fine_w025_cpu_light_thumbnail", "b_alexnet_w05_cpu_thumbnail")},
    # The rest of the paper's zoo, trained on this CPU at reduced width and few epochs; each folder also holds
    # predictor-ensemble.npz (rule ensemble + time-zero answer) and model.pt (fp16 weights) where <= 5 MB.
    **{name: f"bash experiments/zoo/train_zoo.sh {name}" for name in (
        "flex_vgg16_w025_cpu", "resnet50_fine_w0125_cpu", "msdnet21_w025_cpu", "msdnet40_w0125_cpu",
        "b_alexnet_w025_mnist_cpu", "vgg16_fine_w025_mnist_cpu")},
    "vgg16_fine_w05_cuda": "python tools/cuda_check.py --data cifar10-jpeg.zip --out benchmarks/fixtures/"
                           "vgg16_fine_w05_cuda  (on a GPU machine; trains, profiles and fits the predictor)",
}


def available() -> list[str]:
    return [name for name in FIXTURES if (HERE / name / "cs-test.npz").exists()]


def folder(name: str) -> Path:
    return HERE / name


def network_and_direct_run(name: str) -> tuple[Any, Any, Callable[[], None]]:
    """A fixture's committed network (eval mode), one random input for it, and a call that runs that
    input directly through every block and exit as the runtime does (each exit's answer read back and
    folded into a running answer): the baseline the runtime's own cost is measured against."""
    import torch

    from einet.formats.checkpoint import load_checkpoint
    from einet.rules import AnswerRule, RunningAnswer
    from einet.runtime.realtime import run_directly

    model, state = load_checkpoint(folder(name) / "model.pt")
    model.eval()
    channels = state["spec"].get("in_channels", 3)
    side = 32 if channels == 3 else 28
    x = torch.randn(1, channels, side, side)
    running = RunningAnswer(AnswerRule("latest"))
    return model, x, lambda: run_directly(model, x, running)


def rotated_timings(calls: Sequence[Callable[[], object]], rounds: int, warmup: int = 20,
                    before: Callable[[], None] = lambda: None) -> list[Any]:
    """Seconds of each call per round, the calls' order rotating every round so that load and clock
    changes hit all alike (paired by round): `warmup` untimed rounds first, then `before()`."""
    import numpy as np

    for _ in range(warmup):
        for call in calls:
            call()
    before()
    seconds: list[list[float]] = [[] for _ in calls]
    for k in range(rounds):
        for which in [(k + i) % len(calls) for i in range(len(calls))]:
            started = time.perf_counter()
            calls[which]()
            seconds[which].append(time.perf_counter() - started)
    return [np.array(s) for s in seconds]
