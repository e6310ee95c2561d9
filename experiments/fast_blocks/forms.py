"""Each zoo network in each inference form, side by side: eager (as trained), prepared (BatchNorm folded,
dropout gone, layouts chosen here) and compiled (AOTInductor packages of the prepared network).

For every network (the committed trained fixtures): the whole network's time (every conv part and exit,
a chain on one real CIFAR-10 test image, one torch thread) of each form, alternated in one run
(einet.profiling.chain_times), and its ratio to eager; the conv parts alone; the largest block's FLOP
rate in each form and its share of one core's peak (FMA width x 2 FMA units x the nominal clock, as
stated in the output); the compile's wall time and peak memory (this process, and the compiler's
children). Every prepared and compiled form is verified against eager on 64 test images first.

Run: python experiments/fast_blocks/forms.py [--networks NAME ...] [--no-compile]
Writes experiments/fast_blocks/results/forms.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from einet.data import NORMALISATION, ImageDataset, load
from einet.formats.checkpoint import load_checkpoint
from einet.models.compiled import compile_parts, instruction_set
from einet.models.inference import InferenceForm, choose_form, verify
from einet.profiling import chain_times

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "benchmarks" / "fixtures"
SHARED = HERE.parents[2] / "shared" / "data" / "cifar10-jpeg.zip"
NETWORKS = {"B-AlexNet w0.5": "b_alexnet_w05_cpu", "VGG-16 fine w0.25 light": "vgg16_fine_w025_cpu_light",
            "ResNet-50 fine w0.125": "resnet50_fine_w0125_cpu", "FlexVGG-16 w0.25": "flex_vgg16_w025_cpu",
            "MSDNet-21 w0.25": "msdnet21_w025_cpu"}


def images(count: int) -> torch.Tensor:
    """The first `count` CIFAR-10 test images, normalised; Gaussian noise where the shared data is absent."""
    if not SHARED.exists():
        print("(no shared CIFAR-10: timing on noise)")
        return torch.randn(count, 3, 32, 32)
    arrays = load("cifar10", str(SHARED), "test")
    return ImageDataset(arrays.subset(np.arange(count)), *NORMALISATION["cifar10"]).images


def block_flops(network: nn.Module, x: torch.Tensor) -> list[float]:
    """Floating-point operations (2 x multiply-adds of convolutions and linear layers) of each conv part."""
    count = [0.0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            count[0] += 2.0 * output.numel() * module.in_channels / module.groups * np.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            count[0] += 2.0 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    flops, h = [], x
    with torch.inference_mode():
        for i in range(network.num_exits):
            count[0] = 0.0
            h = network.forward_block(i, h)
            flops.append(count[0])
    for handle in handles:
        handle.remove()
    return flops


def peak_flops() -> tuple[float, str]:
    """One core's nominal peak FLOP rate: FMA lanes x 2 (multiply and add) x 2 FMA units x the clock."""
    isa = instruction_set().split()
    lanes = 16 if "avx512f" in isa else 8 if "avx2" in isa else 4
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        text = f.read()
    nominal, current = re.search(r"@ ([\d.]+)GHz", text), re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    ghz = float(nominal.group(1)) if nominal else float(current.group(1)) / 1e3 if current else 2.0
    return lanes * 2 * 2 * ghz * 1e9, f"{lanes} fp32 lanes x 2 (FMA) x 2 units x {ghz:g} GHz"


def compiled_form(name: str, prepared: nn.Module, eager: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict]:
    """The prepared network compiled into a private cache, verified; the compile's seconds and peak memory."""
    os.environ["EINET_CACHE_DIR"] = tempfile.mkdtemp(prefix="einet-forms-")
    started = time.perf_counter()
    folder = compile_parts(prepared, x[:1], f"forms-{name}",
                           lambda c: {"relative_error": verify(eager, c, x, one_at_a_time=True)}, log=lambda _: None)
    seconds = time.perf_counter() - started
    from einet.models.compiled import load_compiled

    return load_compiled(folder.name, eager.num_exits), {
        "compile_seconds": round(seconds, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "compiler_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2, 2)}


def study(label: str, fixture: str, x: torch.Tensor, compile_too: bool) -> dict:
    eager, _ = load_checkpoint(FIXTURES / fixture / "model.pt")
    eager.eval()
    sample = x[:1]
    form = choose_form(eager, sample)
    prepared = form.apply(eager)
    verify(eager, prepared, x)
    forms = {"eager": eager, "prepared": prepared}
    row: dict = {"network": label, "layouts": "".join("C" if last else "-" for last in form.channels_last)}
    if compile_too:
        forms["compiled"], row["compile"] = compiled_form(fixture, InferenceForm("prepared").apply(eager),
                                                            eager, x[:64])
    times = chain_times(forms, sample, rounds=7, repeats=20)
    flops = block_flops(eager, sample)
    largest = int(np.argmax(flops))
    peak, peak_text = peak_flops()
    for name, t in times.items():
        row[name] = {"total_us": round(1e6 * float(t.sum()), 1), "conv_us": round(1e6 * float(t[:, 0].sum()), 1),
                     "ratio": round(float(t.sum() / times["eager"].sum()), 3),
                     "conv_ratio": round(float(t[:, 0].sum() / times["eager"][:, 0].sum()), 3),
                     "largest_block_gflops": round(flops[largest] / t[largest, 0] / 1e9, 2),
                     "largest_block_peak_share": round(flops[largest] / t[largest, 0] / peak, 3)}
    row["largest_block"] = {"index": largest, "mflop": round(flops[largest] / 1e6, 2), "peak": peak_text}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    forms = [f for f in ("prepared", "compiled") if any(f in row for row in rows)]
    head = "| network | eager, all parts (conv parts) | " + " | ".join(
        f"{f}: time, over eager (conv parts)" for f in forms) + " | largest block's share of peak: " + \
        ", ".join(["eager", *forms]) + " | compile s / peak GB (compiler) |"
    lines = [head, "|" + "---|" * (4 + len(forms))]
    for row in rows:
        cells = [row["network"], f"{row['eager']['total_us']:,.0f} us ({row['eager']['conv_us']:,.0f})"]
        cells += [f"{row[f]['total_us']:,.0f} us, {row[f]['ratio']:.2f}x ({row[f]['conv_ratio']:.2f}x)" for f in forms]
        cells.append(", ".join(f"{100 * row[f]['largest_block_peak_share']:.1f}%" for f in ["eager", *forms]))
        c = row.get("compile")
        cells.append(f"{c['compile_seconds']:.0f} / {c['peak_rss_gb']:.2f} ({c['compiler_peak_rss_gb']:.2f})" if c
                     else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--no-compile", action="store_true", help="eager and prepared forms only")
    parser.add_argument("--out", default=str(HERE / "results" / "forms"), help="OUT.md and OUT.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x = images(64)
    rows = [study(label, NETWORKS[label], x, not args.no_compile) for label in args.networks]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": instruction_set(), "torch": torch.__version__,
                                                    "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
