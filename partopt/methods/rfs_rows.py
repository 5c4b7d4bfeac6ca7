"""Exact integer row segments for one RFS block (CP-SAT), under partopt's one cost model.

A block (ops in order, its output of H rows, its one input held by the master) is split into
contiguous row segments, one per device in the cluster's order (a device may get none). This
module finds the integer boundaries ``0 = B_0 <= B_1 <= ... <= B_D = H`` that minimise the
block's time as :func:`partopt.plan.stage_span` prices it:

- geometry by tables: for every op, the first input row needed by output row r and the end of
  the input rows needed by output rows < r come from :meth:`partopt.graph.Op.input_windows`
  (clipped to the tensor), and the FLOPs of output rows [0, r) from
  :func:`partopt.cost.region_flops` over the channels and columns the cone of the whole output
  needs (windows are separable per axis, so a row segment needs the same ones); element
  constraints look them up, min/max constraints take the hull over an op's consumers, exactly
  as :func:`partopt.plan.cone` does;
- schedule: the master's messages to the devices in device order, each device's compute, the
  messages back in device order; on a ``shared`` medium one message at a time (the gather
  starts after the scatter), on a ``mesh`` each pair on its own link.

Times are integer nanoseconds (each table entry rounded), so the model's optimum may differ
from ``stage_span`` of its answer by a few nanoseconds per op; callers price the answer with
``stage_span``. Known gap to ``cone``: where a segment's whole window lies in the padding (an
empty region), ``cone`` drops it from the hull and this model does not; the caller's
re-pricing makes such a case visible as a mismatch.

Example:
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> ops = [o.name for o in g.ops[:3]]
    >>> r = best_rows(g, preset("pi4x2"), ops, g.input_name, "pi0")
    >>> r.status, sum(b - a for a, b in r.segments.values()) == g.op[ops[-1]].out_chw[1]
    ('optimal', True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..cluster import Cluster
from ..cost import region_flops
from ..geometry import Box
from ..graph import LayerGraph
from ..plan import Task, cone
from ..solvers import solve_cpsat

NS = 1e9


@dataclass
class Rows:
    """The chosen segments (device -> (first row, end row)) and what the solver proved (seconds)."""

    status: str
    segments: dict[str, tuple[int, int]]
    objective: Optional[float]
    bound: Optional[float]
    solve_s: float


def _row_maps(graph: LayerGraph, name: str, k: int, h_out: int) -> tuple[list[int], list[int]]:
    """For input k of op ``name``: lo[r] = first needed input row of output row r (r < h_out;
    lo[h_out] repeats the last), hi[r] = end of input rows needed by output rows < r (hi[0] = 0)."""
    cache = graph.__dict__.setdefault("_row_map_cache", {})
    if (name, k) not in cache:
        cache[(name, k)] = _compute_row_maps(graph, name, k, h_out)
    return cache[(name, k)]


def _compute_row_maps(graph: LayerGraph, name: str, k: int, h_out: int) -> tuple[list[int], list[int]]:
    op = graph.op[name]
    c, _, w = op.out_chw
    h_in = graph.tensor_chw(op.inputs[k])[1]
    lo, hi = [], [0]
    for r in range(h_out):
        win = op.input_windows(Box(0, c, r, r + 1, 0, w))[k]
        lo.append(min(max(win.h0, 0), h_in))
        hi.append(max(min(win.h1, h_in), 0))
    lo.append(lo[-1])
    return lo, hi


def _flops_prefix(graph: LayerGraph, name: str, extent: Box) -> list[int]:
    """FLOPs of output rows [0, r) of op ``name`` over ``extent``'s channels and columns, r = 0..H."""
    cache = graph.__dict__.setdefault("_flops_prefix_cache", {})
    key = (name, extent.c0, extent.c1, extent.w0, extent.w1)
    if key not in cache:
        op = graph.op[name]
        h = op.out_chw[1]
        cache[key] = [region_flops(op, Box(extent.c0, extent.c1, 0, r, extent.w0, extent.w1)) for r in range(h + 1)]
    return cache[key]


def _message_ns(m, rows, max_rows: int, bytes_per_row: int, bw: float, lat: int, act, name: str):
    """Integer ns of one message carrying ``rows`` rows (latency + bytes / bandwidth), 0 when
    the device is idle (``act`` false)."""
    table = [lat + round(r * bytes_per_row * NS / bw) for r in range(max_rows + 1)]
    t = m.new_int_var(0, max(table), name)
    m.add_element(rows, table, t)
    eff = m.new_int_var(0, max(table), f"{name}_eff")
    m.add(eff == t).only_enforce_if(act)
    m.add(eff == 0).only_enforce_if(~act)
    return eff


def segment_model(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str):
    """The CP-SAT model of one block; returns (model, boundary vars, objective scale)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    devs = cluster.names
    last = ops[-1]
    c_out, h_out, w_out = graph.op[last].out_chw
    # a row segment needs the same channels and columns of every op as the whole output does
    # (windows are separable per axis): take those extents from the cone of the whole output
    whole = cone(graph, ops, Task(master, Box.full((c_out, h_out, w_out))))
    batch = graph.batch
    lat = round(cluster.latency_s * NS)
    bnd = [m.new_constant(0)] + [m.new_int_var(0, h_out, f"B_{d}") for d in devs[:-1]] + [m.new_constant(h_out)]
    for a, b in zip(bnd, bnd[1:]):
        m.add(a <= b)
    big = 10 ** 15
    finish, active, scat, gath = {}, {}, {}, {}
    for i, d in enumerate(devs):
        a, b = bnd[i], bnd[i + 1]
        act = m.new_bool_var(f"active_{d}")
        m.add(b >= a + 1).only_enforce_if(act)
        m.add(b == a).only_enforce_if(~act)
        active[d] = act
        # rows of every op's output this device computes: reverse order, so each op's in-block
        # consumers have asked for their rows before the op itself is reached (as in ``cone``)
        req_lo: dict[str, list] = {}
        req_hi: dict[str, list] = {}
        lo: dict[str, object] = {}
        hi: dict[str, object] = {}
        for name in reversed(ops):
            h = graph.op[name].out_chw[1]
            if name == last:
                lo[name], hi[name] = a, b
            else:
                lo[name] = m.new_int_var(0, h, f"lo_{d}_{name}")
                hi[name] = m.new_int_var(0, h, f"hi_{d}_{name}")
                m.add_min_equality(lo[name], req_lo[name])
                m.add_max_equality(hi[name], req_hi[name])
            for k, t in enumerate(graph.op[name].inputs):
                lmap, hmap = _row_maps(graph, name, k, h)
                h_in = graph.tensor_chw(t)[1]
                vl = m.new_int_var(0, h_in, f"lo_{d}_{name}_{k}")
                vh = m.new_int_var(0, h_in, f"hi_{d}_{name}_{k}")
                m.add_element(lo[name], lmap, vl)
                m.add_element(hi[name], hmap, vh)
                req_lo.setdefault(t, []).append(vl)
                req_hi.setdefault(t, []).append(vh)
        ext_lo, ext_hi = req_lo[block_input], req_hi[block_input]
        # compute time (ns) of the device's cone: prefix tables of FLOPs per op
        speed = cluster.device(d).flops_per_s
        terms = []
        for name in ops:
            op = graph.op[name]
            c, h, w = op.out_chw
            pref = [round(f * NS / speed) for f in _flops_prefix(graph, name, whole.regions[name])]
            tl = m.new_int_var(0, pref[-1], f"tl_{d}_{name}")
            th = m.new_int_var(0, pref[-1], f"th_{d}_{name}")
            m.add_element(lo[name], pref, tl)
            m.add_element(hi[name], pref, th)
            terms.append(th - tl)
        comp = m.new_int_var(0, big, f"compute_{d}")
        m.add(comp == sum(terms)).only_enforce_if(act)
        m.add(comp == 0).only_enforce_if(~act)
        finish[d] = comp
        if d == master:
            continue
        # scatter: the input rows the cone needs, from the master
        need = whole.needs[block_input]
        ci, hin, wi = need.c1 - need.c0, graph.tensor_chw(block_input)[1], need.w1 - need.w0
        lo_x = m.new_int_var(0, hin, f"lo_{d}_in")
        hi_x = m.new_int_var(0, hin, f"hi_{d}_in")
        m.add_min_equality(lo_x, ext_lo)
        m.add_max_equality(hi_x, ext_hi)
        rows_in = m.new_int_var(0, hin, f"rows_in_{d}")
        m.add(rows_in == hi_x - lo_x)
        scat[d] = _message_ns(m, rows_in, hin, ci * wi * batch * 4, cluster.bw(master, d), lat, act, f"scatter_{d}")
        rows_out = m.new_int_var(0, h_out, f"rows_out_{d}")
        m.add(rows_out == b - a)
        gath[d] = _message_ns(m, rows_out, h_out, c_out * w_out * batch * 4, cluster.bw(d, master), lat, act,
                              f"gather_{d}")
    span = m.new_int_var(0, big, "span")
    m.add(span >= finish[master])
    workers = [d for d in devs if d != master]
    if cluster.link == "shared":
        t = m.new_constant(0)
        arrive = {}
        for d in workers:                       # scatter, one message at a time in device order
            nt = m.new_int_var(0, big, f"scatter_end_{d}")
            m.add(nt == t + scat[d])
            arrive[d], t = nt, nt
        prev = t                                # the gather starts when the medium is free
        for d in workers:
            nd = m.new_int_var(0, big, f"gather_end_{d}")
            m.add(nd >= prev + gath[d])
            m.add(nd >= arrive[d] + finish[d] + gath[d]).only_enforce_if(active[d])
            span_d = nd
            m.add(span >= span_d).only_enforce_if(active[d])
            prev = nd
    else:
        for d in workers:
            m.add(span >= scat[d] + finish[d] + gath[d]).only_enforce_if(active[d])
    m.minimize(span)
    return m, bnd, NS


def best_rows(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
              time_limit: Optional[float] = 30.0, workers: Optional[int] = None,
              hint: Optional[dict[str, tuple[int, int]]] = None) -> Rows:
    """Integer segments minimising the block's time (CP-SAT); status optimal|feasible|no_solution.
    ``hint``: segments to start from (device -> (first row, end row))."""
    m, bnd, scale = segment_model(graph, cluster, ops, block_input, master)
    if hint:
        end = 0
        for i, d in enumerate(cluster.names[:-1]):
            end = hint.get(d, (end, end))[1]
            m.add_hint(bnd[i + 1], end)
    res, s = solve_cpsat(m, time_limit, workers, scale=scale)
    if res.objective is None:
        return Rows(res.status, {}, None, res.bound, res.solve_s)
    vals = [s.value(b) for b in bnd]
    segs = {d: (vals[i], vals[i + 1]) for i, d in enumerate(cluster.names) if vals[i + 1] > vals[i]}
    return Rows(res.status, segs, res.objective, res.bound, res.solve_s)
