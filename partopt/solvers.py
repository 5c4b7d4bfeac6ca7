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

import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional

from .errors import SolverError
from .plan import Plan, Report

STATUSES = ("heuristic", "optimal", "feasible", "infeasible")
MILP_SOLVERS = ("cbc", "highs")

# One rule for time in every exact model. A MILP (CBC, HiGHS) states times in microseconds (those
# built on partopt.maxplus coarser where their horizon is long, milp_units_per_s) and a
# CP-SAT model in integer picoseconds (rounding each constant to 0.5 ps keeps a 1e-4 s optimum
# within 1e-6 of the true one over thousands of terms); the model passes that factor as ``scale`` to
# :func:`solve_milp` / :func:`solve_cpsat`, which report objective and bound in seconds. The
# solvers' tolerances are absolute (HiGHS's default absolute MIP gap is 1e-6 in model units: 1 %
# of a 1e-4 s latency stated in seconds), so times are never stated in seconds, and the gaps at
# which a solver may call a result optimal are set explicitly on every back-end: ``GAP_REL``
# relative and ``GAP_ABS_S`` seconds absolute.
MILP_UNITS_PER_S = 1e6
#: A MILP built on :class:`partopt.maxplus.PulpBuilder` states times coarser than microseconds
#: when its horizon would exceed this many units (:func:`milp_units_per_s`): HiGHS proved wrong
#: optima on IOP models of VGG-16 at bandwidth x0.1 (horizon 392 s, 3.9e8 microseconds) and
#: right ones at 1e5 units per second (3.9e7 units); CBC and CP-SAT were right at either.
MILP_MAX_UNITS = 1e7
CPSAT_UNITS_PER_S = 1e12
GAP_REL = 1e-9
GAP_ABS_S = 1e-12
#: CP-SAT workers for DN2PCIoT's exact model when the caller gives none, whatever the cores:
#: with one worker per core on 2 cores CP-SAT runs two subsolvers, which (with the model of
#: 2026-12-01) prove coarse dn2pciot-4 and fine dn2pciot-3 but leave fine dn2pciot-2 and -4 open
#: after 60 s; with 8 its full portfolio (``max_lp_sym``, the full linear relaxation with
#: symmetry, among them) proves all eight setups (benchmarks/results/dn2pciot.txt). OR-Tools'
#: maintainers advise several workers for diverse strategies (google/or-tools discussion 4139).
CPSAT_PORTFOLIO_WORKERS = 8
#: HiGHS feasibility tolerances for models whose proofs proved fragile at the defaults (1e-7
#: primal, 1e-6 integrality): IOP with load cuts on ResNet-18 / 8 devices got a wrong "optimal"
#: 0.44 % above a feasible plan with the defaults (right with presolve off, or with these)
HIGHS_TIGHT = {"primal_feasibility_tolerance": 1e-9, "mip_feasibility_tolerance": 1e-9}


def milp_units_per_s(horizon_s: float) -> float:
    """Time units per second of a MILP whose times are all at most ``horizon_s`` seconds:
    microseconds (:data:`MILP_UNITS_PER_S`), ten times coarser for each factor of ten by which
    the horizon would exceed :data:`MILP_MAX_UNITS` units (never coarser than seconds). So small
    latencies keep the absolute tolerances far below them, and long ones keep the coefficients
    within the range the solvers handle.

    >>> milp_units_per_s(0.5), milp_units_per_s(392.0)
    (1000000.0, 10000.0)
    """
    units = MILP_UNITS_PER_S
    while horizon_s * units > MILP_MAX_UNITS and units > 1:
        units /= 10
    return units


def units_per_s(solver: str) -> float:
    """Model time units per second for ``solver``: 1e6 (microseconds) for cbc and highs, 1e12
    (integer picoseconds) for cpsat."""
    if solver in MILP_SOLVERS:
        return MILP_UNITS_PER_S
    if solver == "cpsat":
        return CPSAT_UNITS_PER_S
    raise SolverError(f"unknown solver {solver!r}; choose from cbc, highs, cpsat")


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
    # what ``objective`` measures: evaluate's latency (seconds) unless an exact model optimises a
    # surrogate (NPTP's tile model) or another objective (DN2PCIoT's bottleneck, bytes)
    objective_kind: str = "latency_s"

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
            "objective": self.objective, "objective_kind": self.objective_kind, "bound": self.bound, "gap": self.gap, "solve_s": self.solve_s,
            "solver": self.solver,
            "latency_s": r.latency_s if r else None,
            "throughput_per_s": r.throughput_per_s if r else None,
            "peak_memory_bytes": r.peak_memory_bytes if r else None,
            "comm_bytes": r.comm_bytes if r else None,
        }


def heuristic_gap(heuristic: float, optimum: float) -> float:
    """The one gap definition partopt reports: ``(heuristic - optimum) / optimum`` (a fraction;
    0.25 means the heuristic's objective is 25 % above the optimum's). Both in the same unit.

    >>> heuristic_gap(1.25, 1.0)
    0.25
    """
    if optimum <= 0:
        raise ValueError(f"the optimum must be positive to state a relative gap, got {optimum}")
    return (heuristic - optimum) / optimum


# ---------------------------------------------------------------------------------------
# Back-end glue: a model is stated by a method (PuLP LpProblem or CP-SAT CpModel); these
# functions only solve it with a time limit and threads, map the status, and read the bound.
# ---------------------------------------------------------------------------------------
@dataclass
class SolveResult:
    """What a back-end proved. ``status``: optimal | feasible (stopped with a solution) |
    infeasible | no_solution (stopped before finding one). Minimisation: bound <= objective;
    ``gap = (objective - bound) / |objective|`` (0 when optimal, None when the bound is unknown)."""

    status: str
    objective: Optional[float]
    bound: Optional[float]
    gap: Optional[float]
    solve_s: float
    solver: str


def _gap(obj: Optional[float], bound: Optional[float]) -> Optional[float]:
    if obj is None or bound is None or not math.isfinite(bound):
        return None
    return max(0.0, (obj - bound) / abs(obj)) if obj else (0.0 if bound >= obj else None)


def solve_milp(prob, solver: str = "highs", time_limit: Optional[float] = None,
               threads: Optional[int] = None, gap_rel: Optional[float] = GAP_REL,
               scale: float = 1.0, gap_abs: Optional[float] = GAP_ABS_S,
               highs_options: Optional[dict] = None) -> SolveResult:
    """Solve a PuLP minimisation problem with CBC or HiGHS; values are read back from its variables.

    ``scale``: model units per reported unit (:data:`MILP_UNITS_PER_S` for a time in
    microseconds); objective and bound are divided by it. ``gap_rel`` and ``gap_abs`` (reported
    units): the relative and absolute MIP gaps at which the solver may stop and call the result
    optimal, set explicitly (None leaves the solver's default, about 1e-4 relative).

    Example (two jobs of 3 and 2 s on two devices, minimise the makespan):
        >>> import pulp
        >>> p = pulp.LpProblem("m", pulp.LpMinimize)
        >>> x = pulp.LpVariable("x", cat="Binary"); t = pulp.LpVariable("t")
        >>> p += t; p += t >= 3 * x + 2 * (1 - x); p += t >= 3 * (1 - x) + 2 * x
        >>> r = solve_milp(p, "cbc"); (r.status, r.objective)
        ('optimal', 3.0)
    """
    import pulp

    if solver not in MILP_SOLVERS:
        raise SolverError(f"unknown MILP solver {solver!r}; choose from {', '.join(MILP_SOLVERS)}")
    if prob.sense != pulp.LpMinimize:
        raise SolverError("solve_milp expects a minimisation problem")
    log = None
    if solver == "cbc":
        fd, log = tempfile.mkstemp(suffix=".log", prefix="partopt-cbc-")
        os.close(fd)
    abs_gap = None if gap_abs is None else gap_abs * scale
    if solver == "cbc":
        back = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, threads=threads, logPath=log, gapRel=gap_rel,
                                 gapAbs=abs_gap)
    else:
        back = pulp.HiGHS(msg=False, timeLimit=time_limit, threads=threads, gapRel=gap_rel, gapAbs=abs_gap,
                          **(highs_options or {}))
    t0 = time.perf_counter()
    try:
        prob.solve(back)
    except pulp.PulpSolverError as e:
        raise SolverError(f"{solver} failed: {e}") from None
    dt = time.perf_counter() - t0
    sol = prob.sol_status
    if sol == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible:
        return SolveResult("infeasible", None, None, None, dt, solver)
    if sol not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        bound = _read_bound(prob, solver, log)
        return SolveResult("no_solution", None, None if bound is None else bound / scale, None, dt, solver)
    obj = float(pulp.value(prob.objective)) / scale
    if sol == pulp.LpSolutionOptimal:
        return SolveResult("optimal", obj, obj, 0.0, dt, solver)
    bound = _read_bound(prob, solver, log)
    bound = None if bound is None else bound / scale
    return SolveResult("feasible", obj, bound, _gap(obj, bound), dt, solver)


def _read_bound(prob, solver: str, log: Optional[str]) -> Optional[float]:
    """The solver's proven lower bound, or None when it cannot be read."""
    try:
        if solver == "highs":
            b = float(prob.solverModel.getInfo().mip_dual_bound)
            return b if math.isfinite(b) else None
        with open(log) as f:  # type: ignore[arg-type]
            text = f.read()
        m = re.findall(r"best possible\s+([-+0-9.eE]+)", text) or re.findall(r"Lower bound:\s+([-+0-9.eE]+)", text)
        return float(m[-1]) if m else None
    except Exception:
        return None
    finally:
        if log and os.path.exists(log):
            os.remove(log)


def solve_cpsat(model, time_limit: Optional[float] = None, workers: Optional[int] = None,
                scale: float = 1.0, gap_rel: float = GAP_REL, gap_abs: float = GAP_ABS_S):
    """Solve a CP-SAT minimisation model; returns (SolveResult, the CpSolver to read values).

    ``scale`` divides the integer objective and bound back into reported units (CP-SAT works on
    integers: a model states times in integer picoseconds and passes :data:`CPSAT_UNITS_PER_S`).
    ``gap_rel`` and ``gap_abs`` (reported units) are set as CP-SAT's relative and absolute gap
    limits.
    """
    from ortools.sat.python import cp_model

    s = cp_model.CpSolver()
    s.parameters.relative_gap_limit = float(gap_rel)
    s.parameters.absolute_gap_limit = float(gap_abs * scale)
    if time_limit:
        s.parameters.max_time_in_seconds = float(time_limit)
    s.parameters.num_workers = int(workers or os.cpu_count() or 1)
    t0 = time.perf_counter()
    st = s.solve(model)
    dt = time.perf_counter() - t0
    if st == cp_model.INFEASIBLE or st == cp_model.MODEL_INVALID:
        if st == cp_model.MODEL_INVALID:
            raise SolverError(f"CP-SAT: invalid model: {model.validate()}")
        return SolveResult("infeasible", None, None, None, dt, "cpsat"), s
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult("no_solution", None, None, None, dt, "cpsat"), s
    obj = s.objective_value / scale
    if st == cp_model.OPTIMAL:
        return SolveResult("optimal", obj, obj, 0.0, dt, "cpsat"), s
    bound = s.best_objective_bound / scale
    return SolveResult("feasible", obj, bound, _gap(obj, bound), dt, "cpsat"), s


def export_model(model, path: str) -> str:
    """Write a PuLP problem as ``.lp`` or ``.mps``, or a CP-SAT model as ``.pb.txt`` (its proto)."""
    if hasattr(model, "writeLP"):
        if path.endswith(".lp"):
            model.writeLP(path)
        elif path.endswith(".mps"):
            model.writeMPS(path)
        else:
            raise SolverError(f"a MILP exports to .lp or .mps, not {path!r}")
        return path
    if hasattr(model, "export_to_file"):
        if not model.export_to_file(path):
            raise SolverError(f"CP-SAT could not write {path!r}")
        return path
    raise SolverError(f"cannot export a {type(model).__name__}")
