"""The CUDA paths, end to end, on a GPU machine (one short run; results land in $OUT).

    python tools/cuda_check.py --data PATH/cifar10-jpeg.zip --out $OUT

1. trains a fine-grained VGG-16 (14 exits, width 0.5) on CIFAR-10 on the GPU;
2. ET-profiles it with CUDA events (twice, for repeatability) and CS-profiles
   the held-out and test splits;
3. fits the confidence-score predictor;
4. runs the elastic runtime on CUDA under real timer interrupts over 1,000 test
   images and compares with the simulator; measures interrupt latency and the
   planner's share of the inference time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from einet import data
from einet.distributions import full_inference_time, relative_distribution, sample_exit_times
from einet.formats.profiles import CSProfile, ETRecord
from einet.models import MultiExitNetwork, build
from einet.policies import EINet
from einet.predictor import fit_predictor, save_predictor
from einet.profiling import profile_cs, profile_et
from einet.runtime import ElasticRuntime
from einet.runtime.realtime import check_against_simulator
from einet.training import TrainConfig, train


def parse_args() -> argparse.Namespace:
    """The command line: the data, where results land, the network's size and training length."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=0, help="train on this many images only (a smoke test)")
    return parser.parse_args()


def save(summary: dict[str, object], out: Path) -> None:
    """Writes the summary so far, so that a run cut short still leaves the figures it got."""
    (out / "cuda_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def train_network(args: argparse.Namespace, train_part: data.ImageArrays, test: data.ImageArrays,
                  summary: dict[str, object], out: Path) -> MultiExitNetwork:
    """Step 1: trains the network on the device; saves its fp16 weights (the fixture's model) and the summary."""
    spec = {"name": "vgg16_fine", "num_classes": 10, "in_channels": 3, "width": args.width}
    model = build(**spec)  # type: ignore[arg-type]
    started = time.perf_counter()
    history = train(model, data.dataset_for("cifar10", train_part, True).to(args.device),
                    data.dataset_for("cifar10", test, False).to(args.device),
                    TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, device=args.device), model_spec=spec,
                    progress=False)
    summary["train_seconds"] = time.perf_counter() - started
    summary["test_accuracy_per_exit"] = history.test_accuracy[-1]
    summary["spec"] = spec
    save(summary, out)
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"spec": spec, "model": half}, out / "vgg16_fine_w05_fp16.pt")
    return model


def profile_network(args: argparse.Namespace, model: MultiExitNetwork, holdout: data.ImageArrays,
                    test: data.ImageArrays, summary: dict[str, object],
                    out: Path) -> tuple[ETRecord, CSProfile, CSProfile]:
    """Step 2: ET-profiles twice with CUDA events (their repeatability) and CS-profiles held-out and test."""
    device = args.device
    summary["device"] = torch.cuda.get_device_name(0) if device == "cuda" else device
    name = f"vgg16_fine (width {args.width}), {summary['device']}"
    examples = data.dataset_for("cifar10", holdout, False).images[torch.randperm(len(holdout))[:200]]
    records = [profile_et(model, (3, 32, 32), device=device, warmup=30, repeats=200, progress=False, name=name,
                          samples=examples) for _ in range(2)]
    records[0].save(out / "et.npz")
    summary["et_repeatability_max_rel_diff"] = float(np.max(np.abs(records[1].conv - records[0].conv)
                                                            / records[0].conv))
    holdout_cs = profile_cs(model, data.dataset_for("cifar10", holdout, False), device=device, name=name,
                            split="holdout", progress=False)
    test_cs = profile_cs(model, data.dataset_for("cifar10", test, False), device=device, name=name, split="test",
                         progress=False)
    holdout_cs.save(out / "cs-holdout.npz")
    test_cs.save(out / "cs-test.npz")
    save(summary, out)
    return records[0], holdout_cs, test_cs


def check_runtime(args: argparse.Namespace, model: MultiExitNetwork, record: ETRecord, holdout_cs: CSProfile,
                  test_cs: CSProfile, test: data.ImageArrays, summary: dict[str, object], out: Path) -> None:
    """Steps 3 and 4: fits the predictor, then runs the runtime on the device under timer interrupts against the
    simulator, adding its accuracy, interrupt latency and planning share to the summary."""
    device = args.device
    predictor, _ = fit_predictor(holdout_cs, "correctness", epochs=60, progress=False)
    save_predictor(out / "predictor.npz", predictor)
    native = predictor.to_native()
    et = record.profile
    dist = relative_distribution("uniform", full_inference_time(et))
    summary["full_inference_ms"] = 1e3 * full_inference_time(et)

    images = data.dataset_for("cifar10", test, False).images
    chosen = np.random.default_rng(1).choice(len(test), args.samples, replace=False)
    deadlines = sample_exit_times(dist, (args.samples,), np.random.default_rng(2))
    with ElasticRuntime(model, EINet(native, et, dist), device=device) as runtime:
        check = check_against_simulator(runtime, lambda calibrated: EINet(native, calibrated, dist), et,
                                        test_cs.subset(chosen), images[chosen].to(device), deadlines,
                                        warmup=300, uninterrupted=200)
    summary["calibrated_conv_ms"] = (check.et.conv * 1e3).round(4).tolist()
    report = check.report
    latencies = report.latencies
    summary |= {
        "runtime_accuracy": report.accuracy, "simulated_accuracy": float(check.simulated.mean()),
        "difference_pp": 100 * check.difference, "difference_ci95_pp": 100 * check.ci95,
        "interrupts": len(latencies),
        "latency_median_ms": 1e3 * float(np.median(latencies)),
        "latency_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "planning_share": report.planning_share,
    }


def main() -> None:
    """Runs the four steps on the device, writing the summary as it goes, and prints it."""
    args = parse_args()
    out = Path(args.out)
    summary: dict[str, object] = {"torch": torch.__version__}
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    train_all = data.load("cifar10", args.data, "train")
    test = data.load("cifar10", args.data, "test")
    train_part, holdout = train_all.split(0.1, seed=0)
    if args.limit:
        train_part, test = train_part.subset(np.arange(args.limit)), test.subset(np.arange(args.limit // 2))
        holdout = holdout.subset(np.arange(args.limit // 2))
    model = train_network(args, train_part, test, summary, out)
    record, holdout_cs, test_cs = profile_network(args, model, holdout, test, summary, out)
    check_runtime(args, model, record, holdout_cs, test_cs, test, summary, out)
    save(summary, out)
    print(json.dumps(summary, indent=2))

if __name__ == "__main__":
    main()
