"""Int8 blocks, measured honestly: what torch 2.13's supported quantization path (torchao's PT2E with the
X86 Inductor quantizer, then AOTInductor) does to each exit's accuracy and each block's time here.

For a committed trained network (default: the VGG-16 light fixture): every block and exit of its prepared
form quantized separately (static, per-channel int8 weights, int8 activations), calibrated on the first
--calibrate images of its *held-out* split (the checkpoint records it; never the test split), then
compiled like the fp32 packages (einet.models.compiled); the other held-out images run through the int8
chain and the fp32 compiled chain one at a time: each exit's held-out accuracy, and the whole chain's time
side by side (einet.profiling.chain_times); and the exact expected accuracy on those held-out images of
the statistics plan under the README row's exit times (its horizon in ms, uniform and normal), each form
planned with its own times: what a bundle would adopt int8 on.

Needs torchao (pip install torchao; not an einet dependency). Run:
python experiments/fast_blocks/int8.py [--fixture NAME] [--calibrate N] [--images N] [--horizon-ms MS]
Writes experiments/fast_blocks/results/int8_FIXTURE.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from einet.data import NORMALISATION, ImageDataset, load
from einet.distributions import relative_distribution
from einet.evaluation.simulate import evaluate, paired_difference
from einet.formats.checkpoint import load_checkpoint, recorded_split
from einet.formats.profiles import CSProfile
from einet.formats.split import HeldOutSplit
from einet.models.compiled import _freezing, _Part, compile_parts, load_compiled
from einet.models.inference import InferenceForm
from einet.planner import ETProfile
from einet.policies import statistics_plan
from einet.profiling import chain_times
from einet.rules import AnswerRule

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "benchmarks" / "fixtures"
CIFAR = HERE.parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


def held_out(checkpoint: Path) -> ImageDataset:
    """The checkpoint's held-out training images (its recorded split), normalised as it was trained."""
    _, state = load_checkpoint(checkpoint)
    train = load("cifar10", str(CIFAR), "train")
    # (the fixtures predate recorded splits: `einet train`'s default, 10% held out with seed 0, as einet profile)
    split = recorded_split(checkpoint, state) or HeldOutSplit.of(train, 0.1, 0)
    _, holdout = split.apply(train)
    return ImageDataset(holdout, *NORMALISATION["cifar10"])


def quantized_parts(network, calibration: torch.Tensor, folder: Path):
    """Each block and exit of `network` quantized (calibrated on `calibration`'s activations, one image at a
    time) and compiled into `folder`; the int8 network."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    inputs = [calibration[k:k + 1] for k in range(len(calibration))]
    quantized = []
    with torch.no_grad():
        for i in range(network.num_exits):
            outputs = [network.forward_block(i, h) for h in inputs]
            for exit, seen in ((False, inputs), (True, outputs)):  # block i takes its inputs, exit i its outputs
                prepared = prepare_pt2e(torch.export.export(_Part(network, i, exit), (seen[0],)).module(), quantizer)
                for h in seen:
                    prepared(h)
                quantized.append((f"{'exit' if exit else 'block'}-{i}", convert_pt2e(prepared), seen[0]))
            inputs = outputs
    parts = {}
    with _freezing(), torch.no_grad():
        for name, module, example in quantized:
            program = torch.export.export(module, (example,))
            parts[name] = torch._inductor.aoti_compile_and_package(
                program, package_path=str(folder / f"{name}.pt2"), inductor_configs={"freezing": True})
    from einet.models.compiled import CompiledNetwork, CompiledPart

    loaded = {name: CompiledPart(Path(path)) for name, path in parts.items()}
    n = network.num_exits
    return CompiledNetwork([loaded[f"block-{i}"] for i in range(n)], [loaded[f"exit-{i}"] for i in range(n)])


def cs_profile(network, images: torch.Tensor, labels: torch.Tensor) -> CSProfile:
    """Every exit's confidence, answer and log-probabilities, one image at a time (packages take a batch of one)."""
    logp = []
    with torch.inference_mode():
        for x in images:
            h, row = x[None], []
            for i in range(network.num_exits):
                h = network.forward_block(i, h)
                row.append(network.forward_exit(i, h).float().log_softmax(1)[0])
            logp.append(torch.stack(row))
    log_probs = torch.stack(logp)
    best = log_probs.max(2)
    prediction = best.indices.numpy().astype(np.int64)
    y = labels.numpy().astype(np.int64)
    return CSProfile(best.values.exp().numpy(), prediction, prediction == y[:, None], y, {},
                     log_probs.half().numpy())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the fixture, how many held-out images calibrate and score, the horizon."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixture", default="vgg16_fine_w025_cpu_light")
    parser.add_argument("--calibrate", type=int, default=256, help="held-out images to calibrate on")
    parser.add_argument("--images", type=int, default=2000, help="other held-out images to score")
    parser.add_argument("--horizon-ms", type=float, default=4.2360125, help="the README row's horizon")
    return parser.parse_args(argv)


def compile_forms(network, calibration: torch.Tensor) -> tuple[dict[str, Any], dict[str, int]]:
    """Both compiled forms (fp32 as the packages are, int8 part by part) by name, and the seconds each took."""
    os.environ["EINET_CACHE_DIR"] = tempfile.mkdtemp(prefix="einet-int8-")
    started = time.perf_counter()
    fp32 = load_compiled(compile_parts(network, calibration[:1], "int8-fp32", lambda c: {}, log=lambda _: None).name,
                         network.num_exits)
    fp32_seconds = time.perf_counter() - started
    started = time.perf_counter()
    int8 = quantized_parts(network, calibration, Path(tempfile.mkdtemp(prefix="einet-int8-parts-")))
    int8_seconds = time.perf_counter() - started
    return {"fp32 compiled": fp32, "int8 compiled": int8}, {"fp32": round(fp32_seconds), "int8": round(int8_seconds)}


def score_forms(args: argparse.Namespace, forms: dict[str, Any], data: ImageDataset,
                calibration: torch.Tensor) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each form's chain time, held-out exit accuracies and statistics-plan score under each distribution (planned
    with its own times); the rows, and the scores by distribution and form."""
    scored = slice(args.calibrate, args.calibrate + args.images)
    profiles = {name: cs_profile(net, data.images[scored], data.labels[scored]) for name, net in forms.items()}
    times = chain_times(forms, calibration[:1], rounds=7, repeats=20)
    rows: dict[str, dict] = {}
    scores: dict[str, dict] = {}
    for name, cs in profiles.items():
        et = ETProfile(times[name][:, 0], times[name][:, 1])
        row = {"total_us": round(1e6 * float(times[name].sum()), 1),
               "exit_accuracy": [round(float(a), 4) for a in cs.correct.mean(0)]}
        for kind in ("uniform", "normal"):
            dist = relative_distribution(kind, args.horizon_ms * 1e-3)
            plan = statistics_plan(cs.correct.mean(0), et, dist)
            scores.setdefault(kind, {})[name] = evaluate(plan, cs, et, dist, draws=1, rule=AnswerRule("latest"))
            row[f"statistics_plan_{kind}"] = round(float(scores[kind][name].expected), 4)
        rows[name] = row
    return rows, scores


def adoption(scores: dict[str, dict]) -> dict[str, dict]:
    """The rule of the issue: int8 is adopted only where it scores higher on held-out data at the deadline,
    paired over the same images (its 95% interval above zero)."""
    adopted = {}
    for kind, by_form in scores.items():
        diff = paired_difference(by_form["int8 compiled"], by_form["fp32 compiled"])
        adopted[kind] = {"mean": round(float(diff.mean), 5), "ci95": round(float(diff.ci95), 5),
                         "adopt": bool(diff.mean - diff.ci95 > 0)}
    return adopted


def write_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Prints the result and writes it as results/int8_FIXTURE.json and as a markdown table (.md)."""
    text = json.dumps(result, indent=1)
    print(text)
    out = HERE / "results" / f"int8_{args.fixture}"
    out.with_suffix(".json").write_text(text + "\n")
    f, q = result["forms"]["fp32 compiled"], result["forms"]["int8 compiled"]
    out.with_suffix(".md").write_text(
        f"{args.fixture}, held-out: calibrated on {args.calibrate} images, scored on {args.images} others\n\n"
        "| form | whole chain | held-out accuracy per exit (%) | statistics plan, uniform / normal over "
        f"{args.horizon_ms:.3f} ms |\n|---|---:|---|---:|\n" + "\n".join(
            f"| {name} | {r['total_us']:,.0f} us | {' '.join(f'{100 * a:.1f}' for a in r['exit_accuracy'])} | "
            f"{100 * r['statistics_plan_uniform']:.2f} / {100 * r['statistics_plan_normal']:.2f}% |"
            for name, r in (("fp32 compiled", f), ("int8 compiled", q))) + "\n\nint8 minus fp32, paired over the "
        "scored images: " + ", ".join(f"{kind} {100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f} pp "
                                      f"({'adopt' if d['adopt'] else 'not adopted'})"
                                      for kind, d in result["int8_minus_fp32"].items()) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Compiles both forms of the fixture's network, scores them on held-out images and writes the result."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = FIXTURES / args.fixture / "model.pt"
    eager, _ = load_checkpoint(checkpoint)
    network = InferenceForm("prepared").apply(eager.eval())
    data = held_out(checkpoint)
    calibration = data.images[:args.calibrate]
    forms, compile_seconds = compile_forms(network, calibration)
    rows, scores = score_forms(args, forms, data, calibration)
    result = {"fixture": args.fixture, "calibrated_on": args.calibrate, "scored": args.images,
              "compile_seconds": compile_seconds, "forms": rows, "int8_minus_fp32": adoption(scores)}
    write_result(args, result)
    return 0

if __name__ == "__main__":
    sys.exit(main())
