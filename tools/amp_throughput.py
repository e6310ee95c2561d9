"""Training throughput, float32 against bf16 autocast + channels-last, same script, same run.

For each model: a few warm-up steps, then --steps timed training steps (forward, every exit's
loss, backward, SGD step) on random CIFAR-sized batches, in each setting, alternating so that
drift of the machine hits both. Prints images/s and the ratio; --json writes them.

    python tools/amp_throughput.py --device cuda                      # VGG-16 fine and ResNet-50 fine, width 1
    python tools/amp_throughput.py --device cpu --width 0.125 --steps 3   # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from einet.models import build
from einet.training import TrainConfig
from einet.training.loop import exit_losses


def images_per_second(model: torch.nn.Module, config: TrainConfig, batch: int, steps: int) -> float:
    device = torch.device(config.device)
    model.to(device, memory_format=config.memory_format)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=config.memory_format)
    labels = torch.randint(0, 10, (batch,), device=device)
    autocast = config.autocast_dtype

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = exit_losses(model(images), labels, config).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16_fine", "resnet50_fine"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two settings")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # both settings pick their fastest kernels
    settings = {"fp32": TrainConfig(device=args.device, precision="fp32", channels_last=False),
                "bf16 + channels_last": TrainConfig(device=args.device, precision="bf16", channels_last=True)}
    results = {}
    for name in args.models:
        torch.manual_seed(0)
        model = build(name, width=args.width).train()
        speeds: dict[str, list[float]] = {setting: [] for setting in settings}
        for _ in range(args.rounds):
            for setting, config in settings.items():
                speeds[setting].append(images_per_second(model, config, args.batch, args.steps))
        best = {setting: max(values) for setting, values in speeds.items()}
        ratio = best["bf16 + channels_last"] / best["fp32"]
        results[name] = {"images_per_s": best, "speed_up": ratio}
        print(f"{name} (width {args.width}, batch {args.batch}, {args.device}): fp32 {best['fp32']:.0f} images/s, "
              f"bf16 + channels_last {best['bf16 + channels_last']:.0f} images/s: {ratio:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", **results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
