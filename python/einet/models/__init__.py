"""Multi-exit networks (needs the ``einet[torch]`` extra): the protocol, the zoo, the converter, training."""

from .base import Branch, MultiExitNetwork
from .checkpoint import load_checkpoint, save_checkpoint
from .constructor import build_converted
from .convert import ConversionError, convert
from .training import History, TrainConfig, evaluate, train
from .zoo import ZOO, b_alexnet, build, flex_vgg16, msdnet, resnet50_fine, vgg16_fine

__all__ = [
    "ZOO",
    "Branch",
    "ConversionError",
    "History",
    "MultiExitNetwork",
    "TrainConfig",
    "b_alexnet",
    "build",
    "build_converted",
    "convert",
    "evaluate",
    "flex_vgg16",
    "load_checkpoint",
    "msdnet",
    "resnet50_fine",
    "save_checkpoint",
    "train",
    "vgg16_fine",
]
