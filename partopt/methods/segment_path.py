"""The shortest path over cut points with the memory rule: the exact model that ``best`` and
DPFP share.

A model's op order is cut at cut points 0..n (:func:`partopt.methods.dpfp.cut_points`). An
*arc* (i, j) runs units i..j-1 from their input whole at the master to their output gathered
at the master, so a plan that is a path of arcs from 0 to n takes the sum of its arcs' times,
and its peak memory on device d is the weights d holds summed over the arcs plus the largest
activation set of one arc (:func:`price`, from :func:`partopt.plan.memory_terms`; that is
:func:`partopt.plan.evaluate`'s memory rule for such plans).

:func:`build_model` states the choice of a path as a MILP (PuLP: CBC or HiGHS; times in
microseconds) or a CP-SAT model (integer picoseconds): binaries ``x[k]`` per arc, flow
conservation over the cut points, per device ``sum_k weights[k][d] x[k] + act_d <= memory_d``
with ``act_d >= act[k][d] x[k]``, minimise ``sum_k seconds[k] x[k]``.
:func:`shortest` is the memory-free DP over the same arcs; :func:`brute_force` enumerates
every path (for tests).

Example (three cut points, arcs 0->1, 1->2 and a cheaper 0->2 that needs too much memory):
    >>> from partopt.cluster import homogeneous
    >>> cl = homogeneous(1, memory_bytes=100)
    >>> arcs = [Arc(0, 1, 1.0, {"pi0": 10}, {"pi0": 10}), Arc(1, 2, 1.0, {"pi0": 10}, {"pi0": 10}),
    ...         Arc(0, 2, 1.5, {"pi0": 90}, {"pi0": 20})]
    >>> shortest(arcs, 2)
    (1.5, [2])
    >>> res, chosen = solve(arcs, 2, cl, "highs"); res.status, chosen, round(res.objective, 9)
    ('optimal', [0, 1], 2.0)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from ..cluster import Cluster
from ..errors import SolverError
from ..graph import LayerGraph
from ..plan import Plan, Stage, gathered, memory_terms, route_stage, stages_span
from ..solvers import CPSAT_UNITS_PER_S, MILP_UNITS_PER_S, SolveResult, solve_cpsat, solve_milp


class ArcLike(Protocol):
    i: int
    j: int
    seconds: float
    weights: dict[str, int]
    act: dict[str, int]


@dataclass
class Arc:
    """Units i..j-1 in ``seconds``, with the weight bytes each device holds for them and each
    device's largest activation bytes while they run."""

    i: int
    j: int
    seconds: float
    weights: dict[str, int]
    act: dict[str, int]


def price(graph: LayerGraph, cluster: Cluster, master: str, tensor: str, stages: list[Stage], memory: bool = True):
    """(seconds, weight bytes per device, peak activation bytes per device) of ``stages`` that
    read ``tensor`` whole at ``master`` and end gathered at ``master``, by ``evaluate``'s rules
    (:func:`partopt.plan.stages_span`, :func:`partopt.plan.memory_terms`). ``memory=False``
    skips the bytes (empty dicts), for a search that ignores memory."""
    holdings = {tensor: gathered(graph, tensor, master)}
    routed = [route_stage(graph, s, holdings) for s in stages]
    seconds = stages_span(graph, cluster, routed, master)
    if not memory:
        return seconds, {}, {}
    part = Plan("segment", tuple(graph.input_shape), cluster.to_dict(), "segment", master, master, routed, [])
    terms = memory_terms(part, graph, start_tensor=tensor)
    weights = {d: 0 for d in cluster.names}
    for (d, _), b in terms.weights.items():
        weights[d] += b
    act = {d: max([terms.final_act.get(d, 0)] + [a[d] for a in terms.stage_act]) for d in cluster.names}
    return seconds, weights, act


def memory_of(arcs: Sequence[ArcLike], chosen: list[int], devices: list[str]) -> dict[str, int]:
    """Each device's peak bytes on the path ``chosen``: weights summed, activations maxed."""
    vs = [arcs[k] for k in chosen]
    return {d: sum(v.weights.get(d, 0) for v in vs) + max(v.act.get(d, 0) for v in vs) for d in devices}


def fits(arcs: Sequence[ArcLike], chosen: list[int], cluster: Cluster) -> bool:
    mem = memory_of(arcs, chosen, cluster.names)
    return all(mem[d.name] <= d.memory_bytes for d in cluster.devices)


def shortest(arcs: Sequence[ArcLike], n: int) -> tuple[float, list[int]]:
    """The fastest path from 0 to n, memory ignored: (seconds, arc indices in order)."""
    best = [0.0] + [float("inf")] * n
    arg: list[Optional[int]] = [None] * (n + 1)
    for k, v in sorted(enumerate(arcs), key=lambda kv: kv[1].j):
        if best[v.i] + v.seconds < best[v.j]:
            best[v.j], arg[v.j] = best[v.i] + v.seconds, k
    chosen, j = [], n
    while j > 0:
        chosen.append(arg[j])
        j = arcs[arg[j]].i
    return best[n], chosen[::-1]


def brute_force(arcs: Sequence[ArcLike], n: int, cluster: Cluster, limit: int = 200000) -> tuple[float, list[int]]:
    """Every path that fits memory (for tests on tiny instances): (seconds, arc indices)."""
    by_start: dict[int, list[int]] = {}
    for k, v in enumerate(arcs):
        by_start.setdefault(v.i, []).append(k)
    best: tuple[float, list[int]] = (float("inf"), [])
    seen = 0

    def walk(i: int, path: list[int], t: float):
        nonlocal best, seen
        if i == n:
            seen += 1
            if seen > limit:
                raise SolverError(f"brute force would visit more than {limit} paths")
            if t < best[0] and fits(arcs, path, cluster):
                best = (t, list(path))
            return
        for k in by_start.get(i, []):
            walk(arcs[k].j, path + [k], t + arcs[k].seconds)

    walk(0, [], 0.0)
    return best


def build_model(arcs: Sequence[ArcLike], n: int, cluster: Cluster, solver: str = "highs"):
    """The path with memory (module doc) as a PuLP LpProblem (cbc/highs; microseconds) or a
    CP-SAT CpModel (integer picoseconds); returns (model, x)."""
    V = range(len(arcs))
    devs = cluster.names
    cap = {d.name: d.memory_bytes for d in cluster.devices}
    if solver == "cpsat":
        from ortools.sat.python import cp_model
        m = cp_model.CpModel()
        x = [m.new_bool_var(f"x_{k}") for k in V]
        for c in range(n + 1):
            rhs = 1 if c == 0 else (-1 if c == n else 0)
            m.add(sum(x[k] for k in V if arcs[k].i == c) - sum(x[k] for k in V if arcs[k].j == c) == rhs)
        for d in devs:
            top = max(v.act.get(d, 0) for v in arcs)
            peak = m.new_int_var(0, top, f"act_{d}")
            for k in V:
                if arcs[k].act.get(d, 0):
                    m.add(peak >= arcs[k].act[d]).only_enforce_if(x[k])
            m.add(sum(arcs[k].weights[d] * x[k] for k in V if arcs[k].weights.get(d, 0)) + peak <= cap[d])
        m.minimize(sum(round(arcs[k].seconds * CPSAT_UNITS_PER_S) * x[k] for k in V))
        return m, x
    if solver not in ("cbc", "highs"):
        raise SolverError(f"unknown solver {solver!r}; choose cbc, highs or cpsat")
    import pulp
    prob = pulp.LpProblem("segment_path", pulp.LpMinimize)
    x = [pulp.LpVariable(f"x_{k}", cat="Binary") for k in V]
    prob += pulp.lpSum(arcs[k].seconds * MILP_UNITS_PER_S * x[k] for k in V)
    for c in range(n + 1):
        rhs = 1 if c == 0 else (-1 if c == n else 0)
        prob += (pulp.lpSum(x[k] for k in V if arcs[k].i == c) - pulp.lpSum(x[k] for k in V if arcs[k].j == c) == rhs,
                 f"flow_{c}")
    for di, d in enumerate(devs):
        peak = pulp.LpVariable(f"act_{di}", lowBound=0)
        for k in V:
            if arcs[k].act.get(d, 0):
                prob += peak >= arcs[k].act[d] * x[k], f"act_{di}_{k}"
        prob += (pulp.lpSum(arcs[k].weights[d] * x[k] for k in V if arcs[k].weights.get(d, 0)) + peak <= cap[d],
                 f"memory_{di}")
    return prob, x


def solve(arcs: Sequence[ArcLike], n: int, cluster: Cluster, solver: str = "highs",
          time_limit: Optional[float] = None, threads: Optional[int] = None) -> tuple[SolveResult, list[int]]:
    """Solve :func:`build_model`; CP-SAT starts from the memory-free shortest path if it fits.
    Returns (the solver's result in seconds, the chosen arcs in path order; empty if none)."""
    prob, x = build_model(arcs, n, cluster, solver)
    if solver == "cpsat":
        _, hint = shortest(arcs, n)
        if fits(arcs, hint, cluster):
            for k in range(len(x)):
                prob.add_hint(x[k], int(k in hint))
        res, s = solve_cpsat(prob, time_limit, threads, scale=CPSAT_UNITS_PER_S)
        chosen = [k for k in range(len(x)) if res.objective is not None and s.value(x[k])]
    else:
        import pulp

        # a MILP solver accepts a memory row broken by its feasibility tolerance (about 1e-7 of
        # the row's bytes, and integrality 1e-6 of a binary); the bytes are checked exactly and a
        # path that does not fit is cut off and the model solved again
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        cuts = 0
        while True:
            left = None if deadline is None else max(0.1, deadline - time.perf_counter())
            res = solve_milp(prob, solver, left, threads, scale=MILP_UNITS_PER_S)
            chosen = [k for k in range(len(x)) if res.objective is not None and (x[k].value() or 0) > 0.5]
            if not chosen or fits(arcs, chosen, cluster):
                break
            cuts += 1
            prob += pulp.lpSum(x[k] for k in chosen) <= len(chosen) - 1, f"no_good_{cuts}"
    return res, sorted(chosen, key=lambda k: arcs[k].i)
