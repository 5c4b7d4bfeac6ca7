"""Exact integer row segments for one RFS block, under partopt's one cost model.

A block (ops in order, its output of H rows, its one input held by the master) is split into
contiguous row segments, one per device in the cluster's order (a device may get none):
boundaries ``0 = B_0 <= B_1 <= ... <= B_D = H``, device k gets rows [B_{k-1}, B_k). This module
finds the boundaries that minimise the block's time as :func:`partopt.plan.stage_span` prices it.

Why the model is small: mapping rows backward through conv/pool windows (and taking the hull
over an op's consumers) sends a segment's *first* row to each op's first row and its *end* to
each op's end, independently. So for a segment [a, b):

- FLOPs = ``FG[b] - FF[a]``, where ``FF[a]`` sums, over the block's ops, the FLOPs of that op's
  rows before the first row the segment needs, and ``FG[b]`` those before the end it needs
  (prefix sums of :func:`partopt.cost.region_flops` over the channels and columns the block
  needs, which do not depend on the rows);
- input rows from the master = ``XG[b] - XF[a]``; output rows back = ``b - a``.

The four tables come from :meth:`partopt.graph.Op.input_windows` (the one geometry). Then:

- compute (s) = FLOPs / speed; message (s) = latency + bytes / bandwidth, zero for an idle device;
- the master's messages go to the devices in device order, each device computes, the messages
  come back in device order; on a ``shared`` medium one message at a time (the gather starts
  after the scatter), on a ``mesh`` each pair on its own link.

Two statements of the same model: a MILP (PuLP, CBC or HiGHS; one-hot binaries per boundary,
times in seconds, values exact up to the solver's integrality tolerance, about 1e-6 relative)
and a CP-SAT model (element constraints, times in integer nanoseconds, exact up to that
rounding).
Known gap to ``cone``: where a segment's whole window lies in the padding (an empty region),
``cone`` drops it from the hull and the tables do not; callers re-price the answer with
``stage_span``, and tests compare with brute force.

Example:
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> ops = [o.name for o in g.ops[:3]]
    >>> r = best_rows(g, preset("pi4x2"), ops, g.input_name, "pi0", solver="highs")
    >>> r.status, sum(b - a for a, b in r.segments.values()) == g.op[ops[-1]].out_chw[1]
    ('optimal', True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..cluster import Cluster
from ..cost import region_flops
from ..errors import SolverError
from ..geometry import Box
from ..graph import LayerGraph
from ..plan import FLOAT_BYTES, Task, cone
from ..solvers import solve_cpsat, solve_milp

NS = 1e9


@dataclass(frozen=True)
class BlockTables:
    """Device-independent tables of one block (index: a segment's first row a or end b)."""

    h: int                   # output rows
    ff: list[int]            # FLOPs before the first rows a segment starting at a needs, a = 0..h
    fg: list[int]            # FLOPs before the ends a segment ending at b needs, b = 0..h
    xf: list[int]            # first input row needed, a = 0..h
    xg: list[int]            # end of input rows needed, b = 0..h
    in_row_bytes: int        # bytes of one input row the block reads
    out_row_bytes: int       # bytes of one output row


@dataclass
class Rows:
    """The chosen segments (device -> (first row, end row)) and what the solver proved (seconds)."""

    status: str
    segments: dict[str, tuple[int, int]]
    objective: Optional[float]
    bound: Optional[float]
    solve_s: float


def _row_maps(graph: LayerGraph, name: str, k: int) -> tuple[list[int], list[int]]:
    """For input k of op ``name`` with H output rows: lo[r] = first input row output row r needs
    (r < H; lo[H] repeats lo[H-1]), hi[r] = end of the input rows output rows < r need (hi[0] = 0);
    windows clipped to the input."""
    cache = graph.__dict__.setdefault("_row_map_cache", {})
    if (name, k) not in cache:
        op = graph.op[name]
        c, h, w = op.out_chw
        h_in = graph.tensor_chw(op.inputs[k])[1]
        lo, hi = [], [0]
        for r in range(h):
            win = op.input_windows(Box(0, c, r, r + 1, 0, w))[k]
            lo.append(min(max(win.h0, 0), h_in))
            hi.append(max(min(win.h1, h_in), 0))
        lo.append(lo[-1])
        cache[(name, k)] = (lo, hi)
    return cache[(name, k)]


def block_tables(graph: LayerGraph, ops: list[str], block_input: str) -> BlockTables:
    """The tables of the block ``ops`` reading ``block_input`` (see the module doc)."""
    last = ops[-1]
    c_out, h_out, w_out = graph.op[last].out_chw
    # a row segment needs the same channels and columns of every op as the whole output does
    whole = cone(graph, ops, Task("_", Box.full((c_out, h_out, w_out))))
    prefix = {}
    for name in ops:
        e = whole.regions[name]
        op = graph.op[name]
        prefix[name] = [region_flops(op, Box(e.c0, e.c1, 0, r, e.w0, e.w1)) for r in range(op.out_chw[1] + 1)]

    def walk(start: int, maps: int) -> tuple[int, int]:
        """FLOP prefix and input row of the cone edge that output row index ``start`` maps to
        (maps=0: first rows, min over consumers; maps=1: ends, max over consumers)."""
        rows = {last: start}
        for name in reversed(ops):
            for k, t in enumerate(graph.op[name].inputs):
                v = _row_maps(graph, name, k)[maps][rows[name]]
                rows[t] = v if t not in rows else (min(rows[t], v) if maps == 0 else max(rows[t], v))
        return sum(prefix[n][rows[n]] for n in ops), rows[block_input]

    first = [walk(a, 0) for a in range(h_out + 1)]
    end = [walk(b, 1) for b in range(h_out + 1)]
    need = whole.needs[block_input]
    return BlockTables(h_out, [f for f, _ in first], [f for f, _ in end], [x for _, x in first], [x for _, x in end],
                       (need.c1 - need.c0) * (need.w1 - need.w0) * graph.batch * FLOAT_BYTES,
                       c_out * w_out * graph.batch * FLOAT_BYTES)


def _milp(tab: BlockTables, cluster: Cluster, master: str):
    """The block model as a PuLP MILP; returns (problem, boundary expressions)."""
    import pulp

    devs = cluster.names
    h = tab.h
    lat = cluster.latency_s
    prob = pulp.LpProblem("rfs_rows", pulp.LpMinimize)
    z = {k: [pulp.LpVariable(f"z_{k}_{r}", cat="Binary") for r in range(h + 1)] for k in range(1, len(devs))}
    for k in z:
        prob += pulp.lpSum(z[k]) == 1, f"one_row_{k}"

    def pick(k: int, table: list[float]):
        if k == 0:
            return table[0]
        if k == len(devs):
            return table[h]
        return pulp.lpSum(v * table[r] for r, v in enumerate(z[k]))

    bnd = [pick(k, list(range(h + 1))) for k in range(len(devs) + 1)]
    for k in range(1, len(devs)):
        prob += bnd[k - 1] <= bnd[k], f"order_{k}"
    span = pulp.LpVariable("span", lowBound=0)
    prob += span
    # the largest time one device's term can take: a tight big-M keeps integrality tolerance
    # (about 1e-6 of a binary) from leaking into the times
    slowest_bw = min(cluster.bandwidth.values()) if cluster.bandwidth else 1.0
    big = (max(tab.fg) / min(d.flops_per_s for d in cluster.devices)
           + (max(tab.xg) * tab.in_row_bytes + h * tab.out_row_bytes) / slowest_bw + 2 * lat)
    comp, scat, gath, act = {}, {}, {}, {}
    for k, d in enumerate(devs, start=1):
        a, b = bnd[k - 1], bnd[k]
        act[d] = pulp.LpVariable(f"active_{d}", cat="Binary")
        prob += b - a >= act[d], f"active_lo_{d}"
        prob += b - a <= h * act[d], f"active_hi_{d}"
        speed = cluster.device(d).flops_per_s
        comp[d] = pulp.LpVariable(f"compute_{d}", lowBound=0)
        prob += comp[d] >= (pick(k, tab.fg) - pick(k - 1, tab.ff)) / speed - big * (1 - act[d]), f"compute_{d}"
        if d == master:
            continue
        scat[d] = pulp.LpVariable(f"scatter_{d}", lowBound=0)
        rows_in = pick(k, tab.xg) - pick(k - 1, tab.xf)
        prob += scat[d] >= lat + rows_in * tab.in_row_bytes / cluster.bw(master, d) - big * (1 - act[d]), f"scatter_{d}"
        gath[d] = pulp.LpVariable(f"gather_{d}", lowBound=0)
        prob += gath[d] >= lat + (b - a) * tab.out_row_bytes / cluster.bw(d, master) - big * (1 - act[d]), f"gather_{d}"
    prob += span >= comp[master], "span_master"
    workers = [d for d in devs if d != master]
    if cluster.link == "shared":
        s_prev = 0
        arrive = {}
        for d in workers:
            s = pulp.LpVariable(f"scatter_end_{d}", lowBound=0)
            prob += s >= s_prev + scat[d], f"scatter_end_{d}"
            arrive[d], s_prev = s, s
        g_prev = s_prev
        for d in workers:
            g = pulp.LpVariable(f"gather_end_{d}", lowBound=0)
            prob += g >= g_prev + gath[d], f"gather_after_{d}"
            prob += g >= arrive[d] + comp[d] + gath[d] - big * (1 - act[d]), f"gather_ready_{d}"
            g_prev = g
        prob += span >= g_prev, "span_gather"
    else:
        for d in workers:
            prob += span >= scat[d] + comp[d] + gath[d] - big * (1 - act[d]), f"span_{d}"
    return prob, bnd


def _cpsat(tab: BlockTables, cluster: Cluster, master: str):
    """The block model in CP-SAT (integer nanoseconds); returns (model, boundary variables)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    devs = cluster.names
    h = tab.h
    lat = round(cluster.latency_s * NS)
    bnd = [m.new_constant(0)] + [m.new_int_var(0, h, f"B_{d}") for d in devs[:-1]] + [m.new_constant(h)]
    for a, b in zip(bnd, bnd[1:]):
        m.add(a <= b)
    big = 10 ** 15

    def gated(value, act, name):
        v = m.new_int_var(0, big, name)
        m.add(v == value).only_enforce_if(act)
        m.add(v == 0).only_enforce_if(~act)
        return v

    def look(index, table, name):
        v = m.new_int_var(min(table), max(table), name)
        m.add_element(index, table, v)
        return v

    comp, scat, gath, act = {}, {}, {}, {}
    for k, d in enumerate(devs, start=1):
        a, b = bnd[k - 1], bnd[k]
        act[d] = m.new_bool_var(f"active_{d}")
        m.add(b >= a + 1).only_enforce_if(act[d])
        m.add(b == a).only_enforce_if(~act[d])
        speed = cluster.device(d).flops_per_s
        fg = look(b, [round(f * NS / speed) for f in tab.fg], f"fg_{d}")
        ff = look(a, [round(f * NS / speed) for f in tab.ff], f"ff_{d}")
        comp[d] = gated(fg - ff, act[d], f"compute_{d}")
        if d == master:
            continue
        xg = look(b, tab.xg, f"xg_{d}")
        xf = look(a, tab.xf, f"xf_{d}")
        rows_in = m.new_int_var(0, max(tab.xg), f"rows_in_{d}")
        m.add(rows_in == xg - xf)
        t_in = look(rows_in, [lat + round(r * tab.in_row_bytes * NS / cluster.bw(master, d))
                              for r in range(max(tab.xg) + 1)], f"scatter_time_{d}")
        scat[d] = gated(t_in, act[d], f"scatter_{d}")
        rows_out = m.new_int_var(0, h, f"rows_out_{d}")
        m.add(rows_out == b - a)
        t_out = look(rows_out, [lat + round(r * tab.out_row_bytes * NS / cluster.bw(d, master)) for r in range(h + 1)],
                     f"gather_time_{d}")
        gath[d] = gated(t_out, act[d], f"gather_{d}")
    span = m.new_int_var(0, big, "span")
    m.add(span >= comp[master])
    workers = [d for d in devs if d != master]
    if cluster.link == "shared":
        t = m.new_constant(0)
        arrive = {}
        for d in workers:
            nt = m.new_int_var(0, big, f"scatter_end_{d}")
            m.add(nt == t + scat[d])
            arrive[d], t = nt, nt
        prev = t
        for d in workers:
            nd = m.new_int_var(0, big, f"gather_end_{d}")
            m.add(nd >= prev + gath[d])
            m.add(nd >= arrive[d] + comp[d] + gath[d]).only_enforce_if(act[d])
            prev = nd
        m.add(span >= prev)
    else:
        for d in workers:
            m.add(span >= scat[d] + comp[d] + gath[d]).only_enforce_if(act[d])
    m.minimize(span)
    return m, bnd


def segment_model(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
                  solver: str = "cpsat"):
    """The block model for ``solver`` (cbc/highs: PuLP MILP; cpsat) and its boundary expressions."""
    tab = block_tables(graph, ops, block_input)
    return (_cpsat if solver == "cpsat" else _milp)(tab, cluster, master)


def best_rows(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
              time_limit: Optional[float] = 30.0, workers: Optional[int] = None,
              hint: Optional[dict[str, tuple[int, int]]] = None, solver: str = "cpsat") -> Rows:
    """Integer segments minimising the block's time; status optimal|feasible|no_solution.
    ``hint`` (CP-SAT only): segments to start from (device -> (first row, end row))."""
    if solver not in ("cbc", "highs", "cpsat"):
        raise SolverError(f"unknown solver {solver!r}; choose cbc, highs or cpsat")
    model, bnd = segment_model(graph, cluster, ops, block_input, master, solver)
    if solver == "cpsat":
        if hint:
            end = 0
            for i, d in enumerate(cluster.names[:-1]):
                end = hint.get(d, (end, end))[1]
                model.add_hint(bnd[i + 1], end)
        res, s = solve_cpsat(model, time_limit, workers, scale=NS)
        values = None if res.objective is None else [s.value(b) for b in bnd]
    else:
        import pulp
        res = solve_milp(model, solver, time_limit, workers, gap_rel=1e-9)
        values = None if res.objective is None else [round(pulp.value(b)) if not isinstance(b, int) else b
                                                      for b in bnd]
    if values is None:
        return Rows(res.status, {}, None, res.bound, res.solve_s)
    segs = {d: (values[i], values[i + 1]) for i, d in enumerate(cluster.names) if values[i + 1] > values[i]}
    return Rows(res.status, segs, res.objective, res.bound, res.solve_s)
