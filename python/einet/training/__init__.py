"""Training multi-exit networks (needs the ``einet[torch]`` extra): the loop, recipes and checkpoints
written as it goes (:mod:`.loop`), and training across processes (:mod:`.distributed`,
DistributedDataParallel under torchrun)."""

from ..choices import RECIPES
from .accuracy import exit_accuracies
from .loop import DivergedError, History, TrainConfig, train

__all__ = ["RECIPES", "DivergedError", "History", "TrainConfig", "exit_accuracies", "train"]
