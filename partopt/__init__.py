"""partopt: plan cooperative CNN inference across several small devices.

Flow: ``torch.nn.Module`` -> :class:`~partopt.graph.LayerGraph` (+ :class:`~partopt.cluster.Cluster`)
-> a method's heuristic or exact solver -> :class:`~partopt.solvers.Solution` holding a
:class:`~partopt.plan.Plan` -> :func:`~partopt.plan.evaluate` (the one cost model) and
:func:`~partopt.verify.verify` (run the plan with real torch ops).
"""

__version__ = "0.1.0"
