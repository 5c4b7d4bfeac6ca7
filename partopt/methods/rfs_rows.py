"""Exact integer row segments for one RFS block, under partopt's one cost model.

A block (ops in order, its output of H rows, its one input held by the master) is split into
contiguous row segments, at most one per device (a device may get none): in some order of the
devices, boundaries ``0 = B_0 <= B_1 <= ... <= B_D = H``, the k-th device gets rows
[B_{k-1}, B_k). This module finds the segments that minimise the block's time as
:func:`partopt.plan.stage_span` prices it: on a ``mesh`` over every order of the devices, on a
``shared`` medium with the source's rows anywhere and the others in the cluster's order, top
down or bottom up (there the messages are served in the cluster's order whatever rows a device
holds, see :mod:`partopt.plan`). With at most three devices that is every order; with four or
more it is a family (8 of the 24 orders of four devices), and the result is optimal over it.
The source's place matters even on identical devices: with its rows in the middle its
neighbours hold the map's edges and send smaller halos (tests/test_dpfp.py has a 3.4 % case).

Why the model is small: mapping rows backward through conv/pool windows (and taking the hull
over an op's consumers) sends a segment's *first* row to each op's first row and its *end* to
each op's end, independently. So for a segment [a, b):

- FLOPs = ``FG[b] - FF[a]``, where ``FF[a]`` sums, over the block's ops, the FLOPs of that op's
  rows before the first row the segment needs, and ``FG[b]`` those before the end it needs
  (prefix sums of :func:`partopt.cost.region_flops` over the channels and columns the block
  needs, which do not depend on the rows);
- input rows from the master = ``XG[b] - XF[a]``; output rows back = ``b - a``.

The four tables come from :meth:`partopt.graph.Op.input_windows` (the one geometry). Then:

- compute (s) = each kind's FLOPs / the device's rate for it (the FF and FG tables are kept per
  rate kind, :func:`rate_groups`) + the cluster's per-task and per-stage overheads (a segment is
  one task);
  message (s) = latency + bytes / bandwidth, zero for an idle device;
- the master's messages go to the devices in the cluster's order, each device computes, the
  messages come back in the cluster's order; on a ``shared`` medium one message at a time (the gather starts
  after the scatter), on a ``mesh`` each pair on its own link.

Three statements of the same model. The fast path, :func:`dp_rows`, needs no solver: on a mesh
a binary search over the block's time with a DP over device subsets (every order of the
devices), on a shared medium a search on the time with a DP over boundaries on the block and
on its :func:`mirror` (:class:`_AnySource`). Its twins, kept to check it: a MILP (PuLP, CBC or HiGHS; one-hot binaries
per boundary, times in microseconds) and a CP-SAT model (element constraints, times in integer
picoseconds, exact up to that rounding), both with rows in a given order.
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

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..cluster import Cluster
from ..cost import rate_kind, region_flops
from ..errors import SolverError
from ..geometry import Box
from ..graph import LayerGraph
from ..plan import FLOAT_BYTES, Task, cone
from ..solvers import CPSAT_UNITS_PER_S, MILP_UNITS_PER_S, solve_cpsat, solve_milp

PS = CPSAT_UNITS_PER_S      # CP-SAT: integer picoseconds
US = MILP_UNITS_PER_S       # MILP: microseconds (partopt.solvers: one rule for every model)


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
    # False when some op's window of one row lies wholly in the padding: ``cone`` drops such an
    # empty region from its hull, the tables do not, so the block is priced by ``stage_span``
    exact: bool = True
    # ff and fg split by rate kind (partopt.cost.rate_kind): (kind, ff of that kind, fg of that kind)
    by_kind: tuple = ()
    # rate_groups' answers per tuple of rates and per device (filled on use; a replaced copy starts empty)
    _groups: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def rate_groups(tab: BlockTables, device) -> list[tuple[float, object, object]]:
    """(FLOP/s, FF, FG) per distinct rate of ``device`` over the block's op kinds: the FLOP
    tables of the kinds that run at one rate summed, so a device with one rate for every kind
    has the single group (flops_per_s, ff, fg). A segment [a, b) computes for
    ``sum((FG[b] - FF[a]) / rate) + task_overhead_s + stage_overhead_s`` seconds (:func:`partopt.cost.compute_time`)."""
    hit = tab._groups.get(id(device))
    if hit is not None and hit[0] is device:       # the very device asked before
        return hit[1]
    rates = (device.flops_per_s,) + tuple(device.rate(kind) for kind, _, _ in tab.by_kind)
    if rates not in tab._groups:
        tab._groups[rates] = _rate_groups(tab, rates)
    tab._groups[id(device)] = (device, tab._groups[rates])
    return tab._groups[rates]


def _rate_groups(tab: BlockTables, rates: tuple) -> list[tuple[float, object, object]]:
    """:func:`rate_groups` for the device whose rates are ``(flops_per_s, rate of each by_kind entry)``."""
    groups: dict[float, list] = {}
    for (kind, ff, fg), r in zip(tab.by_kind, rates[1:]):
        if r in groups:
            groups[r] = [_add(groups[r][0], ff), _add(groups[r][1], fg)]
        else:
            groups[r] = [ff, fg]
    if not groups:
        return [(rates[0], tab.ff, tab.fg)]
    return [(r, ff, fg) for r, (ff, fg) in groups.items()]


def _add(x, y):
    return [a + b for a, b in zip(x, y)] if isinstance(x, list) else x + y


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
        empty = False
        for r in range(h):
            win = op.input_windows(Box(0, c, r, r + 1, 0, w))[k]
            lo.append(min(max(win.h0, 0), h_in))
            hi.append(max(min(win.h1, h_in), 0))
            empty |= lo[-1] >= hi[-1]
        lo.append(lo[-1])
        cache[(name, k)] = (lo, hi)
        graph.__dict__.setdefault("_row_map_empty", {})[(name, k)] = empty
    return cache[(name, k)]


def block_tables(graph: LayerGraph, ops: list[str], block_input: str) -> BlockTables:
    """The tables of the block ``ops`` reading ``block_input`` (see the module doc): the walk of
    :func:`all_block_tables` over the block as one unit, entries as lists."""
    tab = all_block_tables(graph, [list(ops)], [block_input])[(0, 1)]
    return dataclasses.replace(tab, **{k: getattr(tab, k).tolist() for k in ("ff", "fg", "xf", "xg")},
                               by_kind=tuple((k, ff.tolist(), fg.tolist()) for k, ff, fg in tab.by_kind))


def _flop_prefix(op, e: Box):
    """FLOPs of ``op``'s rows [0, r) over the channels and columns of ``e``, r = 0..H (array)."""
    import numpy as np

    h = op.out_chw[1]
    one = region_flops(op, Box(e.c0, e.c1, 0, 1, e.w0, e.w1))
    if region_flops(op, Box(e.c0, e.c1, 0, h, e.w0, e.w1)) == h * one:      # per output element: linear
        return np.arange(h + 1, dtype=np.int64) * one
    return np.array([region_flops(op, Box(e.c0, e.c1, 0, r, e.w0, e.w1)) for r in range(h + 1)], dtype=np.int64)


def all_block_tables(graph: LayerGraph, units: list[list[str]], inputs: list[str],
                     longest: Optional[int] = None) -> dict[tuple[int, int], BlockTables]:
    """:func:`block_tables` of every block of units i..j-1 (at most ``longest`` units), equal to
    it entry by entry (tested) and built in one backward walk per end j: the rows a segment
    needs of an op depend only on the ops after it, so the block (i, j) is the walk from j's
    output stopped at unit i. Arrays over the output rows, vectorised with numpy. The tables
    depend on the graph alone, so they are cached per graph (callers must not change them)."""
    import numpy as np

    key = (tuple(tuple(u) for u in units), tuple(inputs), longest)
    cache = graph.__dict__.setdefault("_block_tables_cache", {})
    if key in cache:
        return dict(cache[key])
    for k, more in cache.items():               # longer blocks' tables already built: take the short ones
        if longest and k[:2] == key[:2] and (k[2] is None or k[2] >= longest):
            return {(i, j): tab for (i, j), tab in more.items() if j - i <= longest}
    out: dict[tuple[int, int], BlockTables] = {}
    n = len(units)
    for j in range(1, n + 1):
        first_i = max(0, j - longest) if longest else 0
        ops = [o for u in units[first_i:j] for o in u]
        last = ops[-1]
        c_out, h_out, w_out = graph.op[last].out_chw
        whole = cone(graph, ops, Task("_", Box.full((c_out, h_out, w_out))))
        start = np.arange(h_out + 1)
        rows_f, rows_g = {last: start}, {last: start}
        ff = np.zeros(h_out + 1, dtype=np.int64)
        fg = np.zeros(h_out + 1, dtype=np.int64)
        kf: dict[str, object] = {}
        kg: dict[str, object] = {}
        empty = False
        for i in range(j - 1, first_i - 1, -1):
            for name in reversed(units[i]):
                op = graph.op[name]
                pre = _flop_prefix(op, whole.regions[name])
                pf, pg = pre[rows_f[name]], pre[rows_g[name]]
                ff = ff + pf
                fg = fg + pg
                if pre[-1]:
                    k = rate_kind(op)
                    kf[k] = kf[k] + pf if k in kf else pf
                    kg[k] = kg[k] + pg if k in kg else pg
                for k, t in enumerate(op.inputs):
                    lo, hi = _row_maps(graph, name, k)
                    empty |= graph.__dict__["_row_map_empty"][(name, k)]
                    vf, vg = np.asarray(lo)[rows_f[name]], np.asarray(hi)[rows_g[name]]
                    rows_f[t] = vf if t not in rows_f else np.minimum(rows_f[t], vf)
                    rows_g[t] = vg if t not in rows_g else np.maximum(rows_g[t], vg)
            x = inputs[i]
            need = whole.regions[x] if x in whole.regions else whole.needs[x]
            out[(i, j)] = BlockTables(h_out, ff.copy(), fg.copy(), rows_f[x].copy(), rows_g[x].copy(),
                                      (need.c1 - need.c0) * (need.w1 - need.w0) * graph.batch * FLOAT_BYTES,
                                      c_out * w_out * graph.batch * FLOAT_BYTES, not empty,
                                      tuple((k, kf[k].copy(), kg[k].copy()) for k in sorted(kf)))
    cache[key] = out
    return dict(out)


def row_order(cluster: Cluster, master: str, order: Optional[list[str]] = None) -> list[str]:
    """The devices in the order their segments take the rows: ``order`` if given (every device
    once), else the source first, then the others in the cluster's order."""
    if order is None:
        return [master] + [d for d in cluster.names if d != master]
    if sorted(order) != sorted(cluster.names):
        raise SolverError(f"order {order} must list every device of the cluster once")
    return list(order)


def family_orders(cluster: Cluster, master: str) -> list[list[str]]:
    """The row orders of the shared medium's family: the source's rows anywhere, the others in
    the cluster's order top down or bottom up (every order with at most three devices; 2n
    orders, fewer with duplicates removed, for n devices)."""
    others = [d for d in cluster.names if d != master]
    orders: list[list[str]] = []
    for ws in (others, others[::-1]):
        for i in range(len(ws) + 1):
            o = ws[:i] + [master] + ws[i:]
            if o not in orders:
                orders.append(o)
    return orders


def _milp(tab: BlockTables, cluster: Cluster, master: str, order: Optional[list[str]] = None):
    """The block model as a PuLP MILP, times in microseconds; returns (problem, boundary
    expressions)."""
    import pulp

    devs = row_order(cluster, master, order)
    h = tab.h
    lat = cluster.latency_s * US

    def bw(src: str, dst: str) -> float:
        return cluster.bw(src, dst) / US            # bytes per microsecond
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
    slowest_bw = min(cluster.bandwidth.values()) / US if cluster.bandwidth else 1.0
    ovh = cluster.one_task_overhead_s * US
    big = (max(sum(max(fg) / (r / US) for r, _, fg in rate_groups(tab, d)) for d in cluster.devices) + ovh
           + (max(tab.xg) * tab.in_row_bytes + h * tab.out_row_bytes) / slowest_bw + 2 * lat)
    comp, scat, gath, act = {}, {}, {}, {}
    for k, d in enumerate(devs, start=1):
        a, b = bnd[k - 1], bnd[k]
        act[d] = pulp.LpVariable(f"active_{d}", cat="Binary")
        prob += b - a >= act[d], f"active_lo_{d}"
        prob += b - a <= h * act[d], f"active_hi_{d}"
        work = pulp.lpSum((pick(k, fg) - pick(k - 1, ff)) / (r / US)       # r / US: FLOPs per microsecond
                          for r, ff, fg in rate_groups(tab, cluster.device(d)))
        comp[d] = pulp.LpVariable(f"compute_{d}", lowBound=0)
        prob += comp[d] >= work + ovh - big * (1 - act[d]), f"compute_{d}"
        if d == master:
            continue
        scat[d] = pulp.LpVariable(f"scatter_{d}", lowBound=0)
        rows_in = pick(k, tab.xg) - pick(k - 1, tab.xf)
        prob += scat[d] >= lat + rows_in * tab.in_row_bytes / bw(master, d) - big * (1 - act[d]), f"scatter_{d}"
        gath[d] = pulp.LpVariable(f"gather_{d}", lowBound=0)
        prob += gath[d] >= lat + (b - a) * tab.out_row_bytes / bw(d, master) - big * (1 - act[d]), f"gather_{d}"
    prob += span >= comp[master], "span_master"
    workers = [d for d in cluster.names if d != master]    # messages are served in the cluster's order
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


def _cpsat(tab: BlockTables, cluster: Cluster, master: str, order: Optional[list[str]] = None):
    """The block model in CP-SAT (integer picoseconds); returns (model, boundary variables)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    devs = row_order(cluster, master, order)
    h = tab.h
    lat = round(cluster.latency_s * PS)
    bnd = [m.new_constant(0)] + [m.new_int_var(0, h, f"B_{d}") for d in devs[:-1]] + [m.new_constant(h)]
    for a, b in zip(bnd, bnd[1:]):
        m.add(a <= b)
    big = 10 ** 17           # picoseconds: a day

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
        groups = rate_groups(tab, cluster.device(d))
        fg = look(b, [round(sum(t[i] * PS / r for r, _, t in groups)) for i in range(h + 1)], f"fg_{d}")
        ff = look(a, [round(sum(t[i] * PS / r for r, t, _ in groups)) for i in range(h + 1)], f"ff_{d}")
        comp[d] = gated(fg - ff + round(cluster.one_task_overhead_s * PS), act[d], f"compute_{d}")
        if d == master:
            continue
        xg = look(b, tab.xg, f"xg_{d}")
        xf = look(a, tab.xf, f"xf_{d}")
        rows_in = m.new_int_var(0, max(tab.xg), f"rows_in_{d}")
        m.add(rows_in == xg - xf)
        t_in = look(rows_in, [lat + round(r * tab.in_row_bytes * PS / cluster.bw(master, d))
                              for r in range(max(tab.xg) + 1)], f"scatter_time_{d}")
        scat[d] = gated(t_in, act[d], f"scatter_{d}")
        rows_out = m.new_int_var(0, h, f"rows_out_{d}")
        m.add(rows_out == b - a)
        t_out = look(rows_out, [lat + round(r * tab.out_row_bytes * PS / cluster.bw(d, master)) for r in range(h + 1)],
                     f"gather_time_{d}")
        gath[d] = gated(t_out, act[d], f"gather_{d}")
    span = m.new_int_var(0, big, "span")
    m.add(span >= comp[master])
    workers = [d for d in cluster.names if d != master]    # messages are served in the cluster's order
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
                  solver: str = "cpsat", order: Optional[list[str]] = None):
    """The block model for ``solver`` (cbc/highs: PuLP MILP; cpsat) and its boundary expressions,
    rows in :func:`row_order`."""
    tab = block_tables(graph, ops, block_input)
    return (_cpsat if solver == "cpsat" else _milp)(tab, cluster, master, order)


# -- the fast exact path: a search on the block's time over a DP on boundaries --------------------

DP_GAP_REL = 1e-9   # the shared medium's search stops when (best - proven bound) <= this x best


def device_terms(tab: BlockTables, cluster: Cluster, master: str, d: str, a, b):
    """Seconds of device ``d`` for the segment [a, b): (scatter, compute, gather), the module
    doc's rules; scatter and gather are zero for the master. ``a`` and ``b`` are row indices or
    numpy index arrays (then every term is an array, broadcast)."""
    comp = sum((fg[b] - ff[a]) / r for r, ff, fg in rate_groups(tab, cluster.device(d))) + cluster.one_task_overhead_s
    if d == master:
        return comp * 0.0, comp, comp * 0.0
    scat = cluster.latency_s + (tab.xg[b] - tab.xf[a]) * tab.in_row_bytes / cluster.bw(master, d)
    gath = cluster.latency_s + (b - a) * tab.out_row_bytes / cluster.bw(d, master)
    return scat, comp, gath


def _time_tables(tab: BlockTables, cluster: Cluster, master: str, d: str):
    """:func:`device_terms` for every segment (arrays indexed [a, b], inf where b <= a)."""
    import numpy as np

    a = np.arange(tab.h + 1)[:, None]
    b = np.arange(tab.h + 1)[None, :]
    inf = np.where(b <= a, np.inf, 0.0)
    arrays = dataclasses.replace(tab, **{k: np.asarray(getattr(tab, k)) for k in ("ff", "fg", "xf", "xg")},
                                 by_kind=tuple((k, np.asarray(ff), np.asarray(fg)) for k, ff, fg in tab.by_kind))
    return tuple(t + inf for t in device_terms(arrays, cluster, master, d, a, b))


def table_span(tab: BlockTables, cluster: Cluster, master: str, segments: dict[str, tuple[int, int]]) -> float:
    """The block's time (s) for ``segments`` as the tables state :func:`partopt.plan.stage_span`'s
    schedule (the module doc); the models below all minimise this."""
    def terms(d):
        return device_terms(tab, cluster, master, d, *segments[d])
    active = [d for d in cluster.names if d in segments and segments[d][1] > segments[d][0]]
    span = terms(master)[1] if master in active else 0.0
    workers = [d for d in active if d != master]
    if cluster.link == "mesh":
        return float(max([span] + [sum(terms(d)) for d in workers]))
    t, arrive, parts = 0.0, {}, {d: terms(d) for d in workers}
    for d in workers:
        t += parts[d][0]
        arrive[d] = t
    for d in workers:
        _, c, g = parts[d]
        t = max(t, arrive[d] + c) + g
    return float(max(span, t))


def table_spans(tabs: list[BlockTables], cluster: Cluster, master: str,
                segments: dict[str, tuple[int, int]]) -> list[float]:
    """:func:`table_span` of each of ``tabs`` (blocks that end at the same op, so their rows are
    the same) for one ``segments``, seconds. Where no device has rates per kind, every block's
    numbers are gathered into arrays and the same arithmetic runs once over all of them (equal
    to :func:`table_span` bit for bit, tested); else one block at a time."""
    import numpy as np

    if not tabs:
        return []
    if (any(d.flops_per_s_by_kind for d in cluster.devices)
            or len({(t.h, t.out_row_bytes) for t in tabs}) > 1):
        return [table_span(t, cluster, master, segments) for t in tabs]
    ff, fg = np.stack([np.asarray(t.ff) for t in tabs]), np.stack([np.asarray(t.fg) for t in tabs])
    xf, xg = np.stack([np.asarray(t.xf) for t in tabs]), np.stack([np.asarray(t.xg) for t in tabs])
    in_row = np.array([t.in_row_bytes for t in tabs], dtype=np.int64)
    out_row = tabs[0].out_row_bytes
    lat, ovh = cluster.latency_s, cluster.one_task_overhead_s

    def terms(d: str):       # device_terms over every block at once
        a, b = segments[d]
        comp = (fg[:, b] - ff[:, a]) / cluster.device(d).flops_per_s + ovh
        if d == master:
            return None, comp, None
        scat = lat + (xg[:, b] - xf[:, a]) * in_row / cluster.bw(master, d)
        return scat, comp, lat + (b - a) * out_row / cluster.bw(d, master)

    active = [d for d in cluster.names if d in segments and segments[d][1] > segments[d][0]]
    span = terms(master)[1] if master in active else np.zeros(len(tabs))
    workers = [d for d in active if d != master]
    parts = {d: terms(d) for d in workers}
    if cluster.link == "mesh":
        for d in workers:
            span = np.maximum(span, parts[d][0] + parts[d][1] + parts[d][2])
        return [float(v) for v in span]
    t, arrive = np.zeros(len(tabs)), {}
    for d in workers:
        t = t + parts[d][0]
        arrive[d] = t
    for d in workers:
        _, c, g = parts[d]
        t = np.maximum(t, arrive[d] + c) + g
    return [float(v) for v in np.maximum(span, t)]


def row_segments(graph: LayerGraph, tab: Optional[BlockTables], stage) -> Optional[dict[str, tuple[int, int]]]:
    """device -> (first row, end row) when ``stage`` splits its output into whole-width,
    all-channel row segments and ``tab`` (its block's tables) is exact, so :func:`table_span`
    prices it as ``stage_span`` does; else None."""
    if tab is None or not tab.exact:
        return None
    c, _, w = graph.tensor_chw(stage.ops[-1])
    if any((t.box.c0, t.box.c1, t.box.w0, t.box.w1) != (0, c, 0, w) or t.in_channels for t in stage.tasks):
        return None
    return {t.device: (t.box.h0, t.box.h1) for t in stage.tasks}


def _device_classes(cluster: Cluster, master: str) -> list[list[str]]:
    """Devices that are interchangeable in a block (same speed, same links to and from the
    source), the source alone in its class; classes in the cluster's order."""
    key: dict[tuple, list[str]] = {}
    for d in cluster.names:
        dev = cluster.device(d)
        k = ("source",) if d == master else (dev.flops_per_s, dev.flops_per_s_by_kind, cluster.bw(master, d),
                                             cluster.bw(d, master))
        key.setdefault(k, []).append(d)
    return list(key.values())


def _mesh_rows(tab: BlockTables, cluster: Cluster, master: str) -> tuple[float, dict[str, tuple[int, int]]]:
    """Mesh: a device's time depends on its own segment only, so the block's time is the
    largest of them, one of finitely many values. For a time T, ``reach(S)`` = the most rows a
    set S of devices covers from row 0, in any order, each within T. A device's furthest end
    from a start ``a`` never falls as ``a`` grows, so reaching as far as possible is always
    right: reach(S) = max over d in S of end_d(reach(S - d)). Interchangeable devices are
    counted, not listed. A binary search over the sorted values finds the least T with
    reach(all) = H. Returns (that T in seconds, the segments)."""
    import numpy as np

    h = tab.h
    classes = _device_classes(cluster, master)
    times = []
    for cls in classes:
        s, c, g = _time_tables(tab, cluster, master, cls[0])
        times.append(s + c + g)
    counts = [len(c) for c in classes]
    states = list(itertools.product(*[range(n + 1) for n in counts]))     # S - d comes before S
    rows = np.arange(h + 1)

    def reach(t: float) -> dict[tuple[int, ...], tuple[int, int]]:
        furthest = [rows + (m <= t).sum(axis=1) for m in times]           # end_d(a); a when d stays idle
        best = {states[0]: (0, -1)}
        for st in states[1:]:
            best[st] = max((int(furthest[k][best[st[:k] + (st[k] - 1,) + st[k + 1:]][0]]), k)
                           for k in range(len(counts)) if st[k])
        return best

    values = np.unique(np.concatenate([m[np.isfinite(m)] for m in times] + [np.zeros(1)]))
    full = tuple(counts)
    lo, hi = 0, len(values) - 1          # at the largest value the source alone covers every row
    while lo < hi:
        mid = (lo + hi) // 2
        if reach(values[mid])[full][0] >= h:
            hi = mid
        else:
            lo = mid + 1
    best = reach(values[lo])
    segs: dict[str, tuple[int, int]] = {}
    free = [list(cls) for cls in classes]
    st = full
    while any(st):                      # walk back: which class took each state's last segment
        end, k = best[st]
        prev = st[:k] + (st[k] - 1,) + st[k + 1:]
        start = best[prev][0]
        d = free[k].pop(0)
        if end > start:
            segs[d] = (start, end)
        st = prev
    return float(values[lo]), segs


def _shared_rows(tab: BlockTables, cluster: Cluster, master: str,
                 gap_rel: Optional[float] = None) -> tuple[float, float, dict[str, tuple[int, int]]]:
    """Shared medium (every gather link of one bandwidth): the block's best rows with the
    source's rows anywhere and the other devices' rows in the cluster's order, top down or
    bottom up, any device idle (with at most two other devices: every order). The test "can
    the block finish within T?" is :class:`_AnySource` on the block and on its :func:`mirror`.
    The search alternates asking for anything faster than the best rows so far and a bisection
    step, and stops when the proven bound is within ``gap_rel`` of the best.
    Returns (best time, proven lower bound, segments), seconds."""
    gap_rel = DP_GAP_REL if gap_rel is None else gap_rel
    h = tab.h
    best = {master: (0, h)}
    hi, lo = table_span(tab, cluster, master, best), 0.0
    if len(cluster) == 1:
        return hi, hi, best
    identical = len(_device_classes(cluster, master)) <= 2
    families = [(_AnySource(tab, cluster, master, identical), False),
                (_AnySource(mirror(tab), cluster, master, identical), True)]

    def test(t: float) -> Optional[dict[str, tuple[int, int]]]:
        for fam, flipped in families:
            segs = fam.feasible(t)
            if segs is not None:
                return {master if d == "_source" else d: (h - b, h - a) if flipped else (a, b)
                        for d, (a, b) in segs.items()}
        return None

    bisect = False
    while hi - lo > gap_rel * hi:
        t = (lo + hi) / 2 if bisect else hi * (1 - gap_rel)    # a bisection step, or "anything faster?"
        segs = test(t)
        if segs is None:
            lo = t
        else:
            best, hi = segs, table_span(tab, cluster, master, segs)
        bisect = not bisect
    return hi, lo, best


def mirror(tab: BlockTables) -> BlockTables:
    """The block upside down: row r of the mirror is row ``h - 1 - r`` of ``tab``, so a segment
    [a, b) of the mirror is [h - b, h - a) of the block, with the same FLOPs and input rows
    (``FG'[b] - FF'[a] = FG[h - a] - FF[h - b]``, the same for XF/XG and per kind)."""
    h = tab.h

    def flip(first, end):
        first, end = list(first), list(end)
        top = end[h]
        return [top - end[h - i] for i in range(h + 1)], [top - first[h - i] for i in range(h + 1)]

    ff, fg = flip(tab.ff, tab.fg)
    xf, xg = flip(tab.xf, tab.xg)
    return BlockTables(h, ff, fg, xf, xg, tab.in_row_bytes, tab.out_row_bytes, tab.exact,
                       tuple((kind, *flip(kf, kg)) for kind, kf, kg in tab.by_kind))


class _AnySource:
    """The shared medium's test "can the block finish within T?" over the family of
    :func:`_shared_rows`: the source's rows anywhere, the other devices' rows in the cluster's
    order (``tab`` as given: top down; its :func:`mirror`: bottom up), any device idle.

    With messages served in the cluster's order, worker p (s, c, g: its scatter, compute and
    gather seconds) meets T when ``S_<=p + c_p + G_>=p <= T`` (S: scatters up to it, G: gathers
    from it on), and the gathers, which start after the last scatter, when ``S + G <= T``.
    With ``u = s - g`` and G_all = K * latency + beta * (H - v) for K workers and v rows on the
    source, these read ``U_<p + s_p + c_p <= T - G_all`` and ``U + 2 * G_all <= T``, U the sum
    of u so far, so a DP over the row boundaries keeps the least U per (workers placed, source
    placed or not, boundary). The source, started at row a, takes every row it computes within
    T (more rows on it only shorten the others' messages and compute), so v ranges over those
    counts; each (K, v) is one DP."""

    def __init__(self, tab: BlockTables, cluster: Cluster, master: str, identical: bool):
        self.h, self.lat = tab.h, cluster.latency_s
        self.workers = [d for d in cluster.names if d != master]
        self.beta = tab.out_row_bytes / cluster.bw(self.workers[0], master)
        self.comp_m = _time_tables(tab, cluster, master, master)[1]
        self.identical = identical
        self.tables = {}
        for d in (self.workers[:1] if identical else self.workers):
            s, c, g = _time_tables(tab, cluster, master, d)
            with np.errstate(invalid="ignore"):         # inf - inf where b <= a
                self.tables[d] = (s + c, np.where(np.isfinite(s), s - g, np.inf))
        self.rows = np.arange(self.h + 1)

    def feasible(self, t: float) -> Optional[dict[str, tuple[int, int]]]:
        """Segments (the source as ``"_source"``) that finish the block within ``t`` seconds
        in this family, or None if none do."""
        h = self.h
        mrows = (self.comp_m <= t).sum(axis=1)            # rows the source computes within t from row a
        if mrows[0] >= h:
            return {"_source": (0, h)}
        # The source at row a takes mrows[a] rows. Where that reaches row h it is better still
        # to start at the first such row, p_min, and leave the rest to the workers above it
        # (they shrink), so the counts to try: mrows[a] where rows follow the source, h - p_min,
        # and 0 (the source idle).
        reaches = self.rows + mrows >= h
        counts = set(mrows[~reaches].tolist()) | {0, h - int(np.argmax(reaches))}
        for v in sorted(counts, reverse=True):
            ok_m = mrows >= v
            if self.identical:
                segs = self._dp_identical(t, v, ok_m)
                if segs is not None:
                    return segs
                continue
            for k in range(1, len(self.workers) + 1):
                segs = self._dp(t, k, v, ok_m)
                if segs is not None:
                    return segs
        return None

    def _dp_identical(self, t: float, v: int, ok_m) -> Optional[dict[str, tuple[int, int]]]:
        """:meth:`_dp` for interchangeable workers (the first K of them work), every K at once:
        ``a[K - 1, f, b]`` is the least U after the step's worker, f: the source placed."""
        h, inf, w = self.h, np.inf, len(self.workers)
        gall = np.arange(1, w + 1) * self.lat + self.beta * (h - v)
        lim = t - gall
        sc, u = self.tables[self.workers[0]]
        a = np.full((w, 2, h + 1), inf)
        a[:, 1 if v == 0 else 0, 0] = 0.0
        log = [(None, self._place_source(a, v, ok_m))]
        for n in range(w):                              # the (n+1)-th worker, for every K > n
            src = np.nonzero(np.isfinite(a[n:]).any(axis=(0, 1)))[0]
            if not len(src):
                return None
            prev = a[n:, :, src][..., None]             # [K - 1 - n, f, start row, 1]
            val = np.where(prev + sc[src] <= lim[n:, None, None, None], prev + u[src], inf)
            best = val.min(axis=2)
            back = np.where(np.isfinite(best), src[val.argmin(axis=2)], -1)
            a = np.full_like(a, inf)
            a[n:] = best
            log.append((back, self._place_source(a, v, ok_m)))
            if a[n, 1, h] + 2 * gall[n] <= t:             # K = n + 1 workers finish in time
                return self._walk_back(log, n, v, self.workers[: n + 1])
        return None

    @staticmethod
    def _place_source(a, v: int, ok_m):
        """Put the source's v rows after any state without it (in place); where it improved."""
        if not v:
            return None
        h = a.shape[-1] - 1
        cand = np.where(ok_m[: h + 1 - v], a[..., 0, : h + 1 - v], np.inf)
        better = cand < a[..., 1, v:]
        a[..., 1, v:] = np.where(better, cand, a[..., 1, v:])
        return better

    def _walk_back(self, log, kk: int, v: int, seq: list[str]) -> dict[str, tuple[int, int]]:
        """The segments of K = kk + 1 workers from :meth:`_dp_identical`'s log: per step, the
        worker's start row per (source placed, K - 1 - step, end row), and where the source's
        move improved a state."""
        segs: dict[str, tuple[int, int]] = {}
        f, b = 1, self.h
        for i in range(len(log) - 1, -1, -1):
            back, moved = log[i]
            if f == 1 and moved is not None and b >= v and moved[kk, b - v]:
                segs["_source"] = (b - v, b)
                f, b = 0, b - v
            if i:
                prev = int(back[kk - (i - 1), f, b])   # step i - 1 kept K - 1 >= i - 1
                segs[seq[i - 1]] = (prev, b)
                b = prev
        assert f == (0 if v else 1) and b == 0, "walk back did not reach row 0"
        return segs

    def _dp(self, t: float, k: int, v: int, ok_m) -> Optional[dict[str, tuple[int, int]]]:
        """Segments for exactly k workers (in the cluster's order, any of them idle) and v rows
        on the source, within ``t`` seconds, or None: the DP of the class doc, ``a[n, f, b]``
        the least U with n workers placed, f: the source placed, rows ending at b."""
        h, inf = self.h, np.inf
        gall = k * self.lat + self.beta * (h - v)
        lim = t - gall
        if lim < 0:
            return None
        seq = self.workers
        a = np.full((k + 1, 2, h + 1), inf)
        a[0, 1 if v == 0 else 0, 0] = 0.0
        log = [(None, self._place_source(a, v, ok_m))]
        for i, d in enumerate(seq):
            sc, u = self.tables[d]
            back = {}
            for n in range(min(i, k - 1), -1, -1):     # n -> n + 1, the larger counts first (in place)
                for f in (0, 1):
                    src = np.nonzero(np.isfinite(a[n, f]))[0]
                    if not len(src):
                        continue
                    prev = a[n, f, src][:, None]
                    val = np.where(prev + sc[src] <= lim, prev + u[src], inf)
                    arg = val.argmin(axis=0)
                    best = val[arg, self.rows]
                    better = best < a[n + 1, f]
                    a[n + 1, f] = np.where(better, best, a[n + 1, f])
                    back[(n, f)] = np.where(better, src[arg], -1)
            log.append((back, self._place_source(a, v, ok_m)))
        if not a[k, 1, h] + 2 * gall <= t:
            return None
        segs: dict[str, tuple[int, int]] = {}
        n, f, b = k, 1, h
        for i in range(len(log) - 1, -1, -1):          # walk back: the source's move, then worker i's
            back, moved = log[i]
            if f == 1 and moved is not None and b >= v and moved[n, b - v]:
                segs["_source"] = (b - v, b)
                f, b = 0, b - v
            if i and n and (n - 1, f) in back and back[(n - 1, f)][b] >= 0:
                prev = int(back[(n - 1, f)][b])
                segs[seq[i - 1]] = (prev, b)
                n, b = n - 1, prev
        assert n == 0 and b == 0, "walk back did not reach row 0"
        return segs


def dp_applies(cluster: Cluster, master: str) -> bool:
    """Whether :func:`dp_rows` covers ``cluster``: every mesh; a shared medium whose links from
    the other devices to the source have one bandwidth."""
    return cluster.link == "mesh" or len({cluster.bw(d, master) for d in cluster.names if d != master}) <= 1


def dp_rows(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
            tab: Optional[BlockTables] = None) -> Rows:
    """The block's optimal integer rows without a solver (:func:`_mesh_rows`,
    :func:`_shared_rows`): on a mesh over every order and subset of the devices (exact), on a
    shared medium with the source's rows anywhere and the others in the cluster's order, top
    down or bottom up, over every subset (to a relative gap of :data:`DP_GAP_REL`). Status ``optimal``; ``bound`` is the proven lower bound (s). ``tab``: the
    block's tables if already built (:func:`all_block_tables`)."""
    t0 = time.perf_counter()
    tab = tab or block_tables(graph, ops, block_input)
    if cluster.link == "mesh":
        bound, segs = _mesh_rows(tab, cluster, master)
        value = table_span(tab, cluster, master, segs)
    else:
        if not dp_applies(cluster, master):
            raise SolverError("the row DP on a shared medium needs one gather bandwidth; use cpsat, highs or cbc")
        value, bound, segs = _shared_rows(tab, cluster, master)
    return Rows("optimal", segs, value, min(bound, value), time.perf_counter() - t0)


def best_rows(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
              time_limit: Optional[float] = 30.0, workers: Optional[int] = None,
              hint: Optional[dict[str, tuple[int, int]]] = None, solver: str = "dp",
              order: Optional[list[str]] = None) -> Rows:
    """Integer segments minimising the block's time; status optimal|feasible|no_solution.

    ``solver="dp"`` (default): :func:`dp_rows`, no time limit needed; on a mesh over every order
    of the devices, on a shared medium over :func:`family_orders`. ``cbc``/``highs``/``cpsat``:
    the MILP or CP-SAT model with rows in ``order`` if given; else on a shared medium the best
    over :func:`family_orders` (the DP's family; ``optimal`` only if every order's solve is, the
    bound the least of theirs), on a mesh in :func:`row_order` (the source first: a smaller
    family than the DP's); within ``time_limit`` seconds in all.
    ``hint`` (CP-SAT only): segments to start from (device -> (first row, end row)), used for
    the source-first order."""
    if solver not in ("dp", "cbc", "highs", "cpsat"):
        raise SolverError(f"unknown row solver {solver!r}; choose dp, cbc, highs or cpsat")
    if solver == "dp":
        if order is not None:
            raise SolverError("the row DP chooses the order itself; give order only to cbc, highs or cpsat")
        return dp_rows(graph, cluster, ops, block_input, master)
    if order is None and cluster.link == "shared" and len(cluster) > 1:
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        runs = []
        for o in family_orders(cluster, master):
            left = None if deadline is None else max(0.1, deadline - time.perf_counter())
            runs.append(best_rows(graph, cluster, ops, block_input, master, left, workers,
                                  hint if o == row_order(cluster, master) else None, solver, o))
        found = [r for r in runs if r.objective is not None]
        bounds = [r.bound for r in runs]
        bound = None if any(b is None for b in bounds) else min(bounds)
        status = "optimal" if all(r.status == "optimal" for r in runs) else ("feasible" if found else "no_solution")
        best = min(found, key=lambda r: r.objective) if found else None
        return Rows(status, best.segments if best else {}, best.objective if best else None, bound,
                    sum(r.solve_s for r in runs))
    devs = row_order(cluster, master, order)
    model, bnd = segment_model(graph, cluster, ops, block_input, master, solver, devs)
    if solver == "cpsat":
        if hint:
            end = 0
            for i, d in enumerate(devs[:-1]):
                end = hint.get(d, (end, end))[1]
                model.add_hint(bnd[i + 1], end)
        res, s = solve_cpsat(model, time_limit, workers, scale=PS)
        values = None if res.objective is None else [s.value(b) for b in bnd]
    else:
        import pulp
        res = solve_milp(model, solver, time_limit, workers, scale=US)
        values = None if res.objective is None else [round(pulp.value(b)) if not isinstance(b, int) else b
                                                      for b in bnd]
    if values is None:
        return Rows(res.status, {}, None, res.bound, res.solve_s)
    segs = {d: (values[i], values[i + 1]) for i, d in enumerate(devs) if values[i + 1] > values[i]}
    return Rows(res.status, segs, res.objective, res.bound, res.solve_s)
