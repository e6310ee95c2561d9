"""Named choices whose home module needs torch (training, the models, the runtime), defined here once so
that the `einet` command's parser lists them without importing torch; their homes import them from here.
(Choices whose homes are torch-free live there: `einet.data.DATASETS`, `einet.signals.SIGNALS`,
`einet.rules.RULES`, `einet.distributions.RELATIVE_KINDS`.)"""

from __future__ import annotations

# How the exits learn (einet.training.loop): ``joint``, the weighted sum of every exit's cross-entropy (the
# paper); ``distill``, plus self-distillation from the final exit; ``distill-ensemble``, plus distillation
# from the detached geometric ensemble of all exits.
RECIPES = ("joint", "distill", "distill-ensemble")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "step", "constant")  # of the learning rate
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on a GPU that has it, else fp32
EXIT_HEADS = ("paper", "light")  # the paper's branches, or einet's light ones (einet.models.base)
LOADS = ("idle", "steady", "switching")  # the load patterns the checks run under (einet.runtime.stress)
