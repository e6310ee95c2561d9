"""The zoo at a glance: exits, parameters and multiply-accumulates per block (docs/models.md).

    python experiments/zoo/model_table.py > docs/models.md
"""

from __future__ import annotations

import torch
from torch import nn

from einet.models import build

MODELS = [("b_alexnet", {}), ("flex_vgg16", {}), ("vgg16_fine", {}), ("resnet50_fine", {}), ("msdnet21", {}),
          ("msdnet40", {})]


def macs(module: nn.Module, run) -> int:  # type: ignore[no-untyped-def]
    """Multiply-accumulates of conv and linear layers while `run()` executes `module`."""
    total = 0

    def count(layer: nn.Module, inputs, output) -> None:  # type: ignore[no-untyped-def]
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            total += output.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, nn.Linear):
            total += output.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return total


def main() -> None:
    print("# The model zoo\n")
    print("Every model follows the multi-exit protocol (`num_exits`, `forward_block`, `forward_exit`, `forward`);")
    print("figures for CIFAR-10 inputs (3x32x32, 10 classes) at width 1.0, one image;")
    print("MACs = multiply-accumulates of conv and FC layers.")
    print("Regenerate: `python experiments/zoo/model_table.py > docs/models.md`.\n")
    print("| model | exits | parameters | conv-part MMACs per block | branch MMACs per block |")
    print("|---|---:|---:|---|---|")
    for name, kwargs in MODELS:
        model = build(name, **kwargs).eval()
        x = torch.randn(1, 3, 32, 32)
        conv, branch = [], []
        with torch.no_grad():
            h = x
            for i in range(model.num_exits):
                state = {}

                def run_block(model=model, i=i, h=h, state=state) -> None:  # type: ignore[no-untyped-def]
                    state["h"] = model.forward_block(i, h)

                conv.append(macs(model.blocks[i], run_block))
                h = state["h"]
                branch.append(macs(model.exits[i], lambda model=model, i=i, h=h: model.forward_exit(i, h)))
        params = sum(p.numel() for p in model.parameters())
        fmt = lambda values: " ".join(f"{v / 1e6:.1f}" for v in values)  # noqa: E731
        print(f"| {name} | {model.num_exits} | {params / 1e6:.2f} M | {fmt(conv)} | {fmt(branch)} |")
    print("\nCuts: B-AlexNet after conv1 and conv2 (the third exit is the classifier); FlexVGG-16 after each of")
    print("the five VGG stages; fine-grained VGG-16 after each of the 13 conv layers, plus the classifier's hidden")
    print("layer as block 14; ResNet-50 (CIFAR stem) after layer1, layer2, the third bottleneck of layer3, layer3,")
    print("the second bottleneck of layer4 and layer4 (the last exit is the original pool + FC); MSDNet: one")
    print("classifier per layer on the coarsest of its three scales, a 1x1 transition halving channels every 8 layers.")
    print("\nBranches: the paper's (a conv layer and two FC layers), as counted above. With `exit_head=\"light\"`")
    print("(`einet train --exit-head light`) every branch but the network's own classifier is an average pool to")
    print("4x4 and one linear layer: 16 x channels x classes MACs, and two layers to dispatch instead of seven.")


if __name__ == "__main__":
    main()
