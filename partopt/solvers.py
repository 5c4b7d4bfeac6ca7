"""Solutions, and the small glue every exact model shares.

:class:`Solution` is what every method returns, heuristic or exact. Status values:

- ``heuristic``: a heuristic's plan (no optimality claim);
- ``optimal``: an exact model's plan, proven optimal by its solver;
- ``feasible``: an exact model stopped at its time limit: the best plan, with ``bound`` and
  ``gap`` as the solver proved them;
- ``infeasible``: no plan fits (``reason`` says which device lacks how many bytes); ``plan``
  may hold the attempted plan for inspection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .plan import Plan, Report

STATUSES = ("heuristic", "optimal", "feasible", "infeasible")


@dataclass
class Solution:
    """A method's answer: the plan, its status, objective (seconds unless stated), bound and gap."""

    plan: Optional[Plan]
    status: str
    method: str
    mode: str = "heuristic"            # heuristic | exact
    objective: Optional[float] = None
    bound: Optional[float] = None
    gap: Optional[float] = None
    solve_s: float = 0.0
    solver: Optional[str] = None
    reason: str = ""
    report: Optional[Report] = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def feasible(self) -> bool:
        return self.status != "infeasible"

    def summary(self) -> dict[str, Any]:
        r = self.report
        return {
            "method": self.method, "mode": self.mode, "status": self.status, "reason": self.reason,
            "objective": self.objective, "bound": self.bound, "gap": self.gap, "solve_s": self.solve_s,
            "solver": self.solver,
            "latency_s": r.latency_s if r else None,
            "throughput_per_s": r.throughput_per_s if r else None,
            "peak_memory_bytes": r.peak_memory_bytes if r else None,
            "comm_bytes": r.comm_bytes if r else None,
        }
