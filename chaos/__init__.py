"""Chaos suite: prove that no committed change is lost, shown twice or reordered under faults.

load.py writes, recorder.py watches as browser-like clients, checker.py compares (pure),
faults.py breaks things, cluster.py runs the processes, run.py is `make chaos`.
"""
