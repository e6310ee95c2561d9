"""The lab: the tools behind the figures in docs/results.md, with NO stability promise.

Their names, signatures and behaviour change with the experiments, without notice or deprecation;
build on the stable API (``einet.__all__`` and the public modules of docs/api.md) instead. Each is a
module of the package, re-exported here under a short name (``from einet.lab import stress``):

- ``stress``: CPU burners, a throttled model, exit times that switch mid-stream (a busy device);
- ``realtime``: the runtime against the simulator, its promise, run side by side;
- ``replay``: the Python loop on replayed block times (what the native engine is checked against);
- ``oracles``: the reference policies no deployable policy can pass (they read the true answer);
- ``select``: choosing the deployed configuration on held-out data, as ``einet build`` does;
- ``tables``: markdown and CSV tables and plots of simulated results;
- ``synthetic``: random planning problems.

Needs the ``einet[torch]`` extra.
"""

from . import synthetic
from .evaluation import select, tables
from .policies import oracles
from .runtime import realtime, replay, stress

__all__ = ["oracles", "realtime", "replay", "select", "stress", "synthetic", "tables"]
