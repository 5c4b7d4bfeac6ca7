"""RFS + DPFP: receptive-field segmentation and fused-layer blocks chosen by dynamic programming.

After Li, Iosifidis, Zhang, "Receptive Field-based Segmentation for Distributed CNN Inference
Acceleration in Collaborative Edge Computing" (arXiv 2207.11293). Readings of the paper that
partopt states as assumptions (the stored copy of the paper carries only its abstract):

- **RFS**: a block of consecutive layers is split by output rows; each device gets the exact
  input rows its rows need (the receptive field, mapped back layer by layer) and computes its
  whole cone with no exchange inside the block; overlapping cones are computed twice.
- **Fused-layer parallelization**, master-centric: the *master* (the device holding the input,
  the cluster's first device unless ``source`` is given) sends each device its input segment
  for the block, every device computes its cone, and the output segments are gathered back at
  the master, which alone then holds the block's output. So a block's cost does not depend on
  how its neighbours were split, which is what makes the DP exact.
- **Where a block may end**: at a *cut point* of the op order, a place where exactly one tensor
  crosses (between layers of a chain; between residual blocks of a ResNet or MobileNetV2).
  The ops between two consecutive cut points form a *unit*; a block is a run of units.
- The spatial part is every unit before the first one that flattens, is fully connected, or
  outputs a single row; that *tail* runs on the master (one stage).
- Segment sizes: rows in proportion to device speed (largest remainder), in every block.

**DPFP** (the heuristic): with ``cost(i, j)`` the time of the block made of units i..j-1, priced by
:func:`partopt.plan.stage_span` (the schedule rules of :func:`partopt.plan.evaluate`),
``T(0) = 0, T(j) = min_{i<j} T(i) + cost(i, j)``; the latency of the plan is ``T(U)`` plus the
tail's time. The DP is exact over blockings for these segment sizes: ``evaluate`` of the
resulting plan equals its ``T(U)`` + tail to rounding.

**Exact** (:func:`exact`): every block's integer row segments chosen optimally
(:mod:`partopt.methods.rfs_rows`: a DP with no solver, or its MILP/CP-SAT twins), then the
blocking as a path over the cut points with the memory rule
(:mod:`partopt.methods.segment_path`: binaries per block, flow conservation, per device its
weights summed over its blocks plus its largest activation set within its memory), solved by
CBC or HiGHS (PuLP, microseconds) or CP-SAT (integer picoseconds). The family: any blocking at
cut points; in each block, contiguous row segments with at most one per device and any device
idle, in every order of the devices (on a ``shared`` medium the messages are served in the
cluster's order whatever rows a device holds). Each
block's rows are chosen for time; the memory rule then constrains the blocking, so where
memory binds a block whose time-optimal rows do not fit is avoided rather than re-split.
:func:`model` (and ``partopt export --method dpfp``) writes that blocking model with the
blocks' optimal-row times, the model ``exact`` solves.

Example:
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> sol = heuristic(g, preset("pi4x4"), model="lenet5")
    >>> sol.status, sol.plan.meta["blocks"]           # LeNet-5's six spatial units fused into one block
    ('heuristic', [[0, 6]])
    >>> abs(sol.report.latency_s - dp(problem(g, preset("pi4x4")))[0]) < 1e-12
    True
"""
from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from ..cluster import Cluster
from ..errors import NotApplicableError, PartoptError, SolverError
from ..geometry import Box
from ..graph import LayerGraph
from ..plan import Stage, Task, build_plan, evaluate, gathered, route_stage, stage_span
from ..solvers import Solution
from . import segment_path
from .baselines import split_tasks
from .rfs_rows import all_block_tables, best_rows, dp_applies, dp_rows, row_segments, table_spans



@dataclass
class Problem:
    """What the DP and the exact model share: units, the block-cost table and the tail."""

    graph: LayerGraph
    cluster: Cluster
    master: str
    units: list[list[str]]          # spatial units, in order
    inputs: list[str]               # the tensor entering each unit (index = cut point)
    tail: list[str]                 # ops after the spatial part (on the master), may be empty
    shares: dict[str, float]
    cost: dict[tuple[int, int], float]   # (i, j) -> seconds of the block of units i..j-1
    tail_s: float
    # with optimal rows: per block, device -> (first row, end row), and a proven lower bound (s)
    segments: Optional[dict[tuple[int, int], dict[str, tuple[int, int]]]] = None
    lower: Optional[dict[tuple[int, int], float]] = None
    rows_proven: bool = True        # every block's rows proven optimal (always true for "speed")

    @property
    def n(self) -> int:
        return len(self.units)


def cut_points(graph: LayerGraph) -> list[int]:
    """Positions p (0..len(ops)-1) in op order where exactly one tensor made before p is read at p or later."""
    pos = {o.name: i for i, o in enumerate(graph.ops)}
    last_read: dict[str, int] = {}
    for i, o in enumerate(graph.ops):
        for t in o.inputs:
            last_read[t] = i
    cuts = []
    for p in range(len(graph.ops)):
        live = [t for t, r in last_read.items() if r >= p and (t == graph.input_name or pos[t] < p)]
        if len(live) == 1:
            cuts.append(p)
    return cuts


def all_units(graph: LayerGraph) -> tuple[list[list[str]], list[str]]:
    """Every unit (the ops between two consecutive cut points) and the one tensor each reads
    from before it."""
    cuts = cut_points(graph) + [len(graph.ops)]
    names = [o.name for o in graph.ops]
    units, inputs = [], []
    for a, b in zip(cuts, cuts[1:]):
        unit = names[a:b]
        # at a cut point exactly one tensor crosses: it is all the unit reads from outside
        (crossing,) = {t for n in unit for t in graph.op[n].inputs if t not in unit}
        units.append(unit)
        inputs.append(crossing)
    return units, inputs


def spatial_units(graph: LayerGraph) -> tuple[list[list[str]], list[str], list[str]]:
    """(spatial units, the one tensor each unit reads from before it, the tail's ops): the
    spatial part ends at the first unit that flattens, is fully connected or outputs one row."""
    units, inputs = all_units(graph)
    for k, unit in enumerate(units):
        if any(graph.op[n].kind in ("flatten", "linear") for n in unit) or graph.op[unit[-1]].out_chw[1] <= 1:
            return units[:k], inputs[:k], [n for u in units[k:] for n in u]
    return units, inputs, []


def block_stage(p: Problem, i: int, j: int) -> Stage:
    """The block of units i..j-1: rows by speed, or the block's own optimal rows if computed."""
    ops = [n for u in p.units[i:j] for n in u]
    if p.segments is not None:
        c, _, w = p.graph.op[ops[-1]].out_chw
        tasks = [Task(d, Box(0, c, a, b, 0, w)) for d, (a, b) in p.segments[(i, j)].items()]
        return Stage(ops, tasks, gather_to=p.master)
    return Stage(ops, split_tasks(p.graph, ops[-1], p.shares), gather_to=p.master)


def tail_stage(p: Problem) -> Stage:
    """The ops after the spatial part, whole on the master."""
    return Stage(p.tail, [Task(p.master, Box.full(p.graph.tensor_chw(p.tail[-1])))])


def problem(graph: LayerGraph, cluster: Cluster, source: Optional[str] = None,
            shares: Optional[dict[str, float]] = None, rows: str = "speed",
            block_time_limit: Optional[float] = 30.0, row_solver: str = "dp",
            max_block_units: Optional[int] = None) -> Problem:
    """Units and every block's cost (seconds), priced by the schedule rules of ``evaluate``.

    ``rows="speed"``: every block's rows in proportion to ``shares`` (default: device speed).
    ``rows="optimal"``: every block's own integer rows minimising its time
    (:mod:`partopt.methods.rfs_rows`, by ``row_solver``: ``dp`` (no solver; over every order of
    the devices; on a shared medium whose gather links differ in bandwidth the CP-SAT twin takes
    its place), or the MILP/CP-SAT twins cbc, highs, cpsat with ``block_time_limit`` seconds per
    block, one solve per order); its ``lower`` holds each block's proven lower bound.
    ``max_block_units``: price only blocks of at most that many units (all by default); the DP
    is then exact over blockings with blocks no longer than that.
    """
    if rows not in ("speed", "optimal"):
        raise PartoptError(f"rows must be 'speed' or 'optimal', not {rows!r}")
    master = source or cluster.devices[0].name
    cluster.device(master)
    units, inputs, tail = spatial_units(graph)
    if not units:
        raise NotApplicableError("the model has no spatial layers to segment by rows")
    shares = dict(shares or {d.name: d.flops_per_s for d in cluster.devices})
    p = Problem(graph, cluster, master, units, inputs, tail, shares, {}, 0.0)
    longest = max_block_units or p.n
    tables = all_block_tables(graph, units, inputs, longest)
    if rows == "optimal":
        p.segments, p.lower = {}, {}
        if row_solver == "dp" and not dp_applies(cluster, master):
            row_solver = "cpsat"        # a shared medium with unequal gather links: the CP-SAT twin
        for (i, j), tab in sorted(tables.items()):
            ops = [n for u in units[i:j] for n in u]
            speed_rows = {t.device: (t.box.h0, t.box.h1) for t in split_tasks(graph, ops[-1], shares)}
            if row_solver == "dp":
                r = dp_rows(graph, cluster, ops, inputs[i], master, tab=tab)
            else:
                r = best_rows(graph, cluster, ops, inputs[i], master, block_time_limit,
                              hint=speed_rows if row_solver == "cpsat" else None, solver=row_solver)
            # stopped without rows: keep the speed-proportional ones, and the bound proven so far
            p.segments[(i, j)] = r.segments if r.objective is not None else speed_rows
            p.rows_proven &= r.status == "optimal"
            # rounding of the block model (CP-SAT: integer ps per table entry; MILP: the
            # solver's integrality tolerance): allow it in the proven bound
            slack = 1e-9 * 4 * len(cluster) + (1e-6 * r.objective if r.objective else 0.0)
            p.lower[(i, j)] = max(0.0, (r.bound or 0.0) - slack)
    alike: dict = defaultdict(list)     # (end, rows) -> the blocks with those rows: priced together
    for (i, j), tab in tables.items():
        st = block_stage(p, i, j)
        segs = row_segments(graph, tab, st)
        if segs is not None:
            # row segments: the tables state stage_span's schedule (tested equal on the zoo)
            alike[(j, tuple(sorted(segs.items())))].append((i, tab))
        else:
            routed = route_stage(graph, st, {inputs[i]: gathered(graph, inputs[i], master)})
            p.cost[(i, j)] = stage_span(graph, cluster, routed, master)
    for (j, segs), blocks in alike.items():
        for (i, _), v in zip(blocks, table_spans([tab for _, tab in blocks], cluster, master, dict(segs))):
            p.cost[(i, j)] = v
    if tail:
        t_in = p.units[-1][-1]
        routed = route_stage(graph, tail_stage(p), {t_in: gathered(graph, t_in, master)})
        p.tail_s = stage_span(graph, cluster, routed, master)
    return p


def plan_of(p: Problem, blocks: list[tuple[int, int]], *, model: str, method: str, meta: Optional[dict] = None):
    """The plan of a blocking (list of (i, j) unit ranges covering 0..n)."""
    stages = [block_stage(p, i, j) for i, j in blocks]
    if p.tail:
        stages.append(tail_stage(p))
    m = {"blocks": [list(b) for b in blocks], "rows": "optimal" if p.segments is not None else "speed",
         "shares": p.shares, "master": p.master, **(meta or {})}
    return build_plan(p.graph, p.cluster, stages, model=model, method=method, source=p.master, sink=p.master, meta=m)


def latency_of(p: Problem, blocks: list[tuple[int, int]]) -> float:
    return sum(p.cost[b] for b in blocks) + p.tail_s


def dp(p: Problem) -> tuple[float, list[tuple[int, int]]]:
    """DPFP: T(j) = min_i T(i) + cost(i, j). Returns (T(n) + tail seconds, the blocks)."""
    best = [0.0] + [float("inf")] * p.n
    arg = [0] * (p.n + 1)
    for j in range(1, p.n + 1):
        for i in range(j):
            if (i, j) not in p.cost:
                continue        # longer than max_block_units
            v = best[i] + p.cost[(i, j)]
            if v < best[j]:
                best[j], arg[j] = v, i
    blocks, j = [], p.n
    while j > 0:
        blocks.append((arg[j], j))
        j = arg[j]
    return best[p.n] + p.tail_s, blocks[::-1]


def brute_force(p: Problem) -> tuple[float, list[tuple[int, int]]]:
    """Every blocking (2^(n-1) of them); for checking the DP and the exact model on small models."""
    best = (float("inf"), [])
    for mask in itertools.product((0, 1), repeat=p.n - 1):
        cuts = [0] + [k + 1 for k, m in enumerate(mask) if m] + [p.n]
        blocks = list(zip(cuts, cuts[1:]))
        v = latency_of(p, blocks)
        if v < best[0]:
            best = (v, blocks)
    return best


def _finish(p: Problem, blocks, method, model, t0, status="heuristic", meta: Optional[dict] = None, **kw) -> Solution:
    plan = plan_of(p, blocks, model=model, method=method, meta=meta)
    rep = evaluate(plan, p.graph, p.cluster)
    if not rep.memory_ok:
        return Solution(plan, "infeasible", method, kw.pop("mode", "heuristic"), solve_s=time.perf_counter() - t0,
                        report=rep, reason=rep.infeasible_reason(), **kw)
    return Solution(plan, status, method, kw.pop("mode", "heuristic"), objective=rep.latency_s,
                    solve_s=time.perf_counter() - t0, report=rep, **kw)


def heuristic(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None) -> Solution:
    """DPFP: the DP over blockings with speed-proportional row segments."""
    t0 = time.perf_counter()
    p = problem(graph, cluster, source)
    _, blocks = dp(p)
    return _finish(p, blocks, "dpfp", model, t0)


def fused(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None) -> Solution:
    """DeepThings-style baseline: the whole spatial part as one fused block (RFS, one scatter, one gather)."""
    t0 = time.perf_counter()
    p = problem(graph, cluster, source, max_block_units=1)    # the one block is priced by evaluate, not the table
    return _finish(p, [(0, p.n)], "fused", model, t0)


def arcs(p: Problem) -> tuple[list[segment_path.Arc], int]:
    """The blocks of ``p`` (arc k < len(p.cost): units i..j-1, in sorted order) and the tail
    (the last arc, from cut point n to n + 1, if the model has one) as arcs of
    :mod:`partopt.methods.segment_path`, each with its time (``p.cost``), weights and activation
    bytes; returns (arcs, the path's last cut point)."""
    out = []
    for i, j in sorted(p.cost):
        _, weights, act = segment_path.price(p.graph, p.cluster, p.master, p.inputs[i], [block_stage(p, i, j)])
        out.append(segment_path.Arc(i, j, p.cost[(i, j)], weights, act))
    if not p.tail:
        return out, p.n
    _, weights, act = segment_path.price(p.graph, p.cluster, p.master, p.units[-1][-1], [tail_stage(p)])
    out.append(segment_path.Arc(p.n, p.n + 1, p.tail_s, weights, act))
    return out, p.n + 1


def build_model(p: Problem, solver: str = "highs"):
    """The choice of blocks with the memory rule (:func:`arcs` on
    :func:`partopt.methods.segment_path.build_model`): a PuLP problem (cbc/highs, microseconds)
    or a CP-SAT model (integer picoseconds), and its arc variables (the tail's last)."""
    a, n = arcs(p)
    return segment_path.build_model(a, n, p.cluster, solver)


def model(graph: LayerGraph, cluster: Cluster, *, solver: str = "highs", source: Optional[str] = None,
          rows: str = "optimal"):
    """The model ``exact`` solves (PuLP LpProblem for cbc/highs, CP-SAT CpModel), for export:
    the blocking with the memory rule over every block priced with its optimal integer rows
    (found by the row DP first, :mod:`partopt.methods.rfs_rows`); ``rows="speed"`` prices them
    with speed-proportional rows instead."""
    return build_model(problem(graph, cluster, source, rows=rows), solver)[0]


def exact(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
          solver: str = "highs", time_limit: Optional[float] = None, threads: Optional[int] = None,
          rows: str = "optimal", block_time_limit: Optional[float] = 30.0, row_solver: str = "dp") -> Solution:
    """The exact twin of DPFP. With ``rows="optimal"`` every block's integer row segments are
    chosen optimally first (``row_solver``: ``dp``, the row DP of :mod:`partopt.methods.rfs_rows`,
    over every order of the devices; or its MILP/CP-SAT twins cbc, highs, cpsat with
    ``block_time_limit`` seconds per block); then the blocking is chosen with the memory rule
    as a path over the cut points (:func:`build_model`, solved by ``solver``: cbc, highs or
    cpsat, within ``time_limit`` seconds). Blocks are independent under the master-centric
    scheme, so the optimum of the whole is the best path over the blocks' optimal times.

    When the memory-free best blocking (the DP) fits memory it is the optimum with the memory
    rule too, and the blocking model is not built (``plan.meta["blocking"]`` says which).
    Status ``optimal`` when every block's rows and the path were proven optimal (tolerances of
    :mod:`partopt.solvers`); ``feasible`` otherwise, with the proven bound (the solver's, or
    the path over the blocks' proven lower bounds); ``infeasible`` when no blocking fits memory
    with each block on its time-optimal rows (the reason names the fastest blocking's shortfall).
    """
    t0 = time.perf_counter()
    if solver not in ("cbc", "highs", "cpsat"):
        raise SolverError(f"unknown solver {solver!r}; choose cbc, highs or cpsat")
    p = problem(graph, cluster, source, rows=rows, block_time_limit=block_time_limit, row_solver=row_solver)
    _, free = dp(p)
    if evaluate(plan_of(p, free, model=model, method="dpfp"), graph, cluster, check=False).memory_ok:  # plan_of validates
        # the memory-free optimum fits memory, so it is the optimum with the memory rule too;
        # the blocking model (memory rows priced for every block) is needed only when it does not
        blocks, res_status, res_bound = free, "optimal", None
        meta = {"blocking": "dp: the memory-free optimum fits memory"}
    else:
        a, n = arcs(p)
        res, chosen = segment_path.solve(a, n, cluster, solver, time_limit, threads)
        if res.status == "infeasible":
            return _finish(p, free, "dpfp", model, t0, status="infeasible", mode="exact", solver=solver)
        if res.status == "no_solution":
            return _finish(p, free, "dpfp", model, t0, status="feasible", mode="exact", solver=solver,
                           bound=res.bound, gap=None)
        blocks = [(a[k].i, a[k].j) for k in chosen if a[k].j <= p.n]      # the tail arc ends at n + 1
        res_status, res_bound = res.status, res.bound
        meta = {"blocking": f"{solver}: the blocking model with the memory rule"}
    value = latency_of(p, blocks)
    if res_status == "optimal" and p.rows_proven:
        status, bound, gap = "optimal", value, 0.0
    else:
        # proven: the solver's bound, and with unproven rows the (memory-free) path over the
        # blocks' proven lower bounds
        status, bound = "feasible", res_bound
        if not p.rows_proven:
            lb = dp(Problem(p.graph, p.cluster, p.master, p.units, p.inputs, p.tail, p.shares, p.lower, p.tail_s))[0]
            bound = lb if bound is None else min(bound, lb)
        gap = None if bound is None else max(0.0, (value - bound) / value)
    return _finish(p, blocks, "dpfp", model, t0, status=status, mode="exact", bound=bound, gap=gap, solver=solver,
                   meta=meta)
