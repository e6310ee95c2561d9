"""Evaluation on profiles: trace-driven simulation and paired statistics (:mod:`.simulate`), choosing
the deployed configuration on held-out data (:mod:`.select`), tables and plots (:mod:`.tables`).
Numpy and the native planner only."""
