"""Multi-exit networks (needs the ``einet[torch]`` extra): the protocol, the zoo, the converter. Training is
:mod:`einet.training`; checkpoints are :mod:`einet.formats.checkpoint`."""

from .base import Branch, MultiExitNetwork
from .constructor import build_converted
from .convert import ConversionError, convert
from .zoo import ZOO, b_alexnet, build, flex_vgg16, msdnet, resnet50_fine, vgg16_fine

__all__ = [
    "ZOO",
    "Branch",
    "ConversionError",
    "MultiExitNetwork",
    "b_alexnet",
    "build",
    "build_converted",
    "convert",
    "flex_vgg16",
    "msdnet",
    "resnet50_fine",
    "vgg16_fine",
]
