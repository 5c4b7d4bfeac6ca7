"""Exact integer row segments for one RFS block, under partopt's one cost model.

A block (ops in order, its output of H rows, its one input held by the master) is split into
contiguous row segments, at most one per device (a device may get none): in some order of the
devices, boundaries ``0 = B_0 <= B_1 <= ... <= B_D = H``, the k-th device gets rows
[B_{k-1}, B_k). This module finds the segments that minimise the block's time as
:func:`partopt.plan.stage_span` prices it, over every order of the devices and every subset
(on a ``shared`` medium the messages are served in the cluster's order whatever rows a device
holds, see :mod:`partopt.plan`, so there the order of the rows matters through the halos: a
segment at the map's edge needs a halo on one side only). The source's place matters even on
identical devices: with its rows in the middle its neighbours hold the map's edges and send
smaller halos (tests/test_dpfp.py has a 3.4 % case), and with four devices no order of the
source anywhere and the others in the cluster's order is optimal in a 1.1 % case there.

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
devices); on a shared medium a search on the time with a DP over boundaries on the block and
on its :func:`mirror` (:class:`_AnySource`: the source's rows anywhere, the others in the
cluster's order top down or bottom up, which is every order with up to three devices), then,
with four or more, a DP over the workers in the cluster's order that places each segment by
its length, or by its rows where it touches the map's edge zones (:class:`_EveryOrder`), which
proves that best or finds a faster split in another order. Its twins, kept to check it: a
MILP (PuLP, CBC or HiGHS; one-hot binaries per boundary, times in microseconds) and a CP-SAT
model (element constraints, times in integer picoseconds, exact up to that rounding), both with
rows in a given order and searched over every order (:func:`every_order`).
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
    """The row orders of :class:`_AnySource`'s family, the shared medium's first search: the
    source's rows anywhere, the others in the cluster's order top down or bottom up (every order
    with at most three devices; 2n orders, fewer with duplicates removed, for n devices)."""
    others = [d for d in cluster.names if d != master]
    orders: list[list[str]] = []
    for ws in (others, others[::-1]):
        for i in range(len(ws) + 1):
            o = ws[:i] + [master] + ws[i:]
            if o not in orders:
                orders.append(o)
    return orders


def every_order(cluster: Cluster, master: str) -> list[list[str]]:
    """Every row order of the devices, for the twins. On a mesh a device's time depends on its
    own segment only, so orders that differ by swapping interchangeable devices are listed once;
    on a shared medium the messages are served in the cluster's order, so every permutation."""
    orders = [list(o) for o in itertools.permutations(cluster.names)]
    if cluster.link != "mesh":
        return orders
    cls = {d: k for k, c in enumerate(_device_classes(cluster, master)) for d in c}
    out, seen = [], set()
    for o in orders:
        key = tuple(cls[d] for d in o)
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out


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
    """Shared medium (every gather link of one bandwidth): the block's best rows over every
    order of the devices, any device idle. First over the family of :class:`_AnySource` (the
    source's rows anywhere, the others in the cluster's order, top down or bottom up: every
    order with at most three devices), on the block and on its :func:`mirror`: the search
    alternates asking for anything faster than the best rows so far and a bisection step, and
    stops when the proven bound is within ``gap_rel`` of the best. With four or more devices
    :func:`_every_order_search` then proves that best over every order or finds a faster split.
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
    if len(cluster) >= 4:           # with three devices or fewer the family is every order
        return _every_order_search(_EveryOrder(tab, cluster, master), tab, cluster, master, hi, best, test, gap_rel)
    return hi, lo, best


def _every_order_search(eo: "_EveryOrder", tab: BlockTables, cluster: Cluster, master: str, hi: float,
                        best: dict[str, tuple[int, int]], family_test, gap_rel: float):
    """From the family's best rows (``hi`` seconds, ``best``) to every order of the devices: ask
    :meth:`_EveryOrder.test` for anything faster than ``hi (1 - gap_rel)`` until it proves
    there is none (first asking relaxations with narrower edge zones, which are cheaper and
    sometimes prove the family's best optimal outright). Where its middle is not straight (not :attr:`_EveryOrder.exact`), the
    relaxation's answer is checked, then the restriction's and the family's tests asked, and
    where none settles a time the search bisects for the bound the relaxation proves.
    Returns (best time, proven bound, segments)."""
    def faster(t: float):
        segs = eo.test(t)
        if segs is None:
            return None, True
        if eo.exact or table_span(tab, cluster, master, segs) <= t:
            return segs, True
        segs = eo.test(t, worst=True) or family_test(t)
        return segs, segs is not None

    for z in range(1, max(eo.et, eo.eb)):          # relaxations with narrower edge zones first: cheaper
        quick = _EveryOrder(tab, cluster, master, zones=(min(z, eo.et), min(z, eo.eb)))
        if quick.test(hi * (1 - gap_rel)) is None:
            return hi, hi * (1 - gap_rel), best
    lo, up = 0.0, None              # nothing below lo; up: the least time not yet settled
    while True:
        t = hi * (1 - gap_rel) if up is None else (lo + up) / 2
        if up is not None and up - lo <= gap_rel * hi:
            return hi, lo, best
        segs, settled = faster(t)
        if segs is not None:
            best, hi = segs, table_span(tab, cluster, master, segs)
            if up is not None:
                up = min(up, hi * (1 - gap_rel))
        elif settled:
            if up is None:
                return hi, t, best
            lo = t
        else:
            up = t


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


def _edge_zones(tab: BlockTables) -> tuple[int, int]:
    """(e_top, e_bot): segments starting at row >= e_top and ending at row <= h - e_bot are
    priced by the tables' straight parts (every start table has one step from row e_top on,
    every end table up to row h - e_bot), where a segment's terms depend on its length alone
    for the blocks of the zoo; nearer the map's edges the padding clips them. Each at least 1.
    :class:`_EveryOrder` is valid for any values; these only make its bounds tight."""
    h = tab.h
    starts = [tab.xf, tab.ff] + [kf for _, kf, _ in tab.by_kind]
    ends = [tab.xg, tab.fg] + [kg for _, _, kg in tab.by_kind]

    def straight_from(t) -> int:            # smallest e with t[e..h-1] of one step
        d = np.diff(np.asarray(t, dtype=np.float64)[:h])
        e = len(d)
        while e > 0 and d[e - 1] == d[-1]:
            e -= 1
        return e

    def straight_to(t) -> int:              # largest f with t[1..f] of one step
        d = np.diff(np.asarray(t, dtype=np.float64)[1:])
        f = 0
        while f < len(d) and d[f] == d[0]:
            f += 1
        return f + 1

    e_top = max([1] + [straight_from(t) for t in starts])
    e_bot = max([1] + [h - straight_to(t) for t in ends])
    return min(e_top, h), min(e_bot, h)


class _EveryOrder:
    """The shared medium over every order of the devices' rows (any device idle): a DP over the
    workers in the cluster's order, the order their messages are served in, each taking a
    segment.

    Where a segment lies matters only near the map's edges (:func:`_edge_zones`): a segment's
    terms are a table of its end b less a table of its first row a (the module doc), and the
    tables are straight from row ``e_top`` to row ``h - e_bot``, so a segment inside that
    *middle* is priced by its length alone (:attr:`exact` checks it). So the DP places a
    segment that touches an edge zone at its rows (a bitmask of the zone rows taken: no two
    overlap, and at the end every zone row is taken) and a middle segment by its length (R_mid:
    middle rows taken). With R rows taken in all before worker p (the source's first) and n
    workers before it, p meets T when ``V + s_p + c_p <= T - (K - n) * latency - beta * (h -
    R)`` (V: scatters so far; the right side is T less the gathers from p on, G_>=p, for K
    workers in all), and the gathers when ``V_all + G_all <= T``. Per (K, n, zone rows, R_mid)
    the DP keeps the least V.

    The source takes the most rows it computes within T from where it starts (more rows on it
    never make the block slower: its neighbour's messages and compute shrink, and the gathers
    still to come shrink by as much as the neighbour's scatter can grow), so its start fixes
    its segment, and with it G_all = K * latency + beta * (rows not on the source); one DP per
    distinct row count of the source.

    Where the middle is not straight in every table (the terms of a middle segment depend on
    where it starts), :attr:`exact` is False and the DP is run twice: priced at each length's
    cheapest start (``worst=False``: a relaxation, so None proves no split finishes within T)
    and at its dearest (a restriction: its splits do finish within T)."""

    def __init__(self, tab: BlockTables, cluster: Cluster, master: str, zones: Optional[tuple[int, int]] = None):
        self.tab, self.cluster, self.master = tab, cluster, master
        h = self.h = tab.h
        self.lat = cluster.latency_s
        self.workers = [d for d in cluster.names if d != master]
        self.beta = tab.out_row_bytes / cluster.bw(self.workers[0], master)
        self.identical = len(_device_classes(cluster, master)) <= 2
        et, eb = zones or _edge_zones(tab)
        if et + eb > h:                 # the zones meet: every row is a zone row
            et, eb = h, 0
        self.et, self.eb, self.mid = et, eb, h - et - eb
        self.terms = {}                                     # device -> (s, s + c) over [a, b]
        self.whole = {}                                     # device -> seconds with every row
        for d in (self.workers[:1] if self.identical else self.workers):
            s, c, g = _time_tables(tab, cluster, master, d)
            self.terms[d] = (s, s + c)
            self.whole[d] = float(s[0, h] + c[0, h] + g[0, h])
        self.comp_m = _time_tables(tab, cluster, master, master)[1]
        self.whole[master] = float(self.comp_m[0, h])
        self._moves: dict = {}
        # the least scatter seconds per row beyond the latency a worker can be sent (for pruning
        # states that cannot finish)
        a, b = np.arange(h + 1)[:, None], np.arange(h + 1)[None, :]
        with np.errstate(invalid="ignore"):
            self.scatter_per_row = max(0.0, min(float(np.min(np.where(b > a, (s - self.lat) / np.maximum(b - a, 1), np.inf)))
                                                for s, _ in self.terms.values()))
        r = np.arange(1, self.mid + 1)
        tables = [t for d in self.terms for t in self.terms[d]] + [self.comp_m]
        prices = [self._mid_prices(t, r) for t in tables]
        self.exact = all(np.array_equal(np.nanmax(x, axis=0), np.nanmin(x, axis=0)) for x in prices if x.size)

    def _mid_prices(self, table, r):
        """``table[a, a + r]`` as an array [start a in the middle, length r], nan where the
        segment would leave the middle."""
        a = np.arange(self.et, self.h - self.eb)[:, None]
        b = a + r[None, :]
        return np.where(b <= self.h - self.eb, table[a, np.minimum(b, self.h)], np.nan)

    def _masks(self, a: int, b: int) -> tuple[int, int, int]:
        """(top zone bits, bottom zone bits, middle rows) of the segment [a, b)."""
        et, lo = self.et, self.h - self.eb
        top = sum(1 << i for i in range(a, min(b, et)))
        bottom = sum(1 << (i - lo) for i in range(max(a, lo), b))
        return top, bottom, max(0, min(b, lo) - max(a, et))

    def moves(self, d: str, worst: bool):
        """Device d's segments as DP moves, grouped by the zone rows they take:
        [(top bits, bottom bits, S, SC, where, shift)], S and SC (scatter and scatter + compute
        seconds) as [R_mid before, R_mid after] matrices (inf where none), ``where[m]`` the segment (a, b)
        that takes m middle rows, or None for a middle segment (placed by its length);
        ``shift`` = (m, S, SC) where the group has one segment only."""
        key = (d, worst)
        if key in self._moves:
            return self._moves[key]
        s, sc = self.terms[d]
        h, et, eb, mid = self.h, self.et, self.eb, self.mid
        inf = np.inf
        groups: dict = {}

        def put(a: int, b: int):
            tb, bb, m = self._masks(a, b)
            g = groups.setdefault((tb, bb), (np.full(mid + 1, inf), np.full(mid + 1, inf), [None] * (mid + 1)))
            g[0][m], g[1][m], g[2][m] = s[a, b], sc[a, b], (a, b)

        for a in range(et):
            for b in range(a + 1, h + 1):
                put(a, b)
        for b in range(h - eb + 1, h + 1):
            for a in range(et, b):
                put(a, b)
        if mid:
            r = np.arange(1, mid + 1)
            pick = np.nanmax if worst else np.nanmin
            S, SC = np.full(mid + 1, inf), np.full(mid + 1, inf)
            S[1:], SC[1:] = pick(self._mid_prices(s, r), axis=0), pick(self._mid_prices(sc, r), axis=0)
            groups[(0, 0)] = (S, SC, [None] * (mid + 1))
        k = np.arange(mid + 1)
        diff = k[None, :] - k[:, None]
        idx = np.clip(diff, 0, mid)
        out = []
        for (tb, bb), (S, SC, where) in groups.items():
            ks = np.nonzero(np.isfinite(SC))[0]
            # one middle count (a zone segment, or one spanning the middle): a shift, not a matrix
            shift = (int(ks[0]), float(S[ks[0]]), float(SC[ks[0]])) if len(ks) == 1 else None
            out.append((tb, bb, np.where(diff >= 0, S[idx], inf), np.where(diff >= 0, SC[idx], inf), where, shift))
        self._moves[key] = out
        return out

    def _source_starts(self, t: float, worst: bool) -> dict[int, list[tuple[int, int, int, object]]]:
        """Row count -> [(top bits, bottom bits, middle rows, segment)] where the source may
        start (class doc): from each row a the most rows it computes within t, or the bottom
        rows it computes; 0: idle. A middle segment (``segment`` None) is given by its length:
        in the restriction only a length it computes wherever it starts."""
        h = self.h
        c = self.comp_m
        out: dict[int, list] = {0: [(0, 0, 0, None)]}

        def add(a: int, b: int):
            tb, bb, m = self._masks(a, b)
            if tb or bb:
                out.setdefault(b - a, []).append((tb, bb, m, (a, b)))
            elif not worst:
                out.setdefault(b - a, []).append((0, 0, m, None))

        for a in range(h):
            fits = np.nonzero(c[a, a + 1:] <= t)[0]
            if len(fits) and a + fits[-1] + 1 < h:
                add(a, a + int(fits[-1]) + 1)
        fits = np.nonzero(c[h - np.arange(1, h + 1), h] <= t)[0]
        if len(fits):
            add(h - int(fits[-1]) - 1, h)
        if worst and self.mid:
            dearest = np.nanmax(self._mid_prices(c, np.arange(1, self.mid + 1)), axis=0)
            ok = np.nonzero(dearest <= t)[0]
            if len(ok):
                out.setdefault(int(ok[-1]) + 1, []).append((0, 0, int(ok[-1]) + 1, None))
        return {v: sorted(set(x), key=repr) for v, x in out.items()}

    def test(self, t: float, worst: bool = False) -> Optional[dict[str, tuple[int, int]]]:
        """Segments (device -> (first row, end row)) that finish within ``t`` seconds, or None
        if none do (exact when :attr:`exact`; else ``worst=False`` is the relaxation, whose
        segments need not finish within t, and ``worst=True`` the restriction)."""
        for d, v in self.whole.items():
            if v <= t:
                return {d: (0, self.h)}
        for v, at in sorted(self._source_starts(t, worst).items(), reverse=True):   # one DP per row count
            segs = self._dp(t, worst, v, at)
            if segs is not None:
                return segs
        return None

    def _dp(self, t: float, worst: bool, v: int, starts) -> Optional[dict[str, tuple[int, int]]]:
        """The DP of the class doc for the source's row count v (``starts``: where it may
        start) and every K at once: the segments of the first K workers (of any K when they
        differ) that meet t, or None. States are indexed by K, n (interchangeable workers: n is
        the step, one slot), the zone rows taken, q = top bits * 2^e_bot + bottom bits (a move's
        bits do not overlap a state's, so it adds them), and R_mid."""
        h, lat, beta, inf, mid = self.h, self.lat, self.beta, np.inf, self.mid
        w, nb = len(self.workers), 1 << self.eb
        q_all = np.arange((1 << self.et) * nb)
        pop = np.array([bin(x).count("1") for x in q_all])
        rows = pop[:, None] + np.arange(mid + 1)[None, :]                    # R, by (q, R_mid)
        ks = np.arange(1, w + 1)                                             # K; index K - 1
        gall = ks * lat + beta * (h - v)
        slots = 1 if self.identical else w + 1
        val = np.full((w, slots, len(q_all), mid + 1), inf)                # [K - 1, n, q, R_mid]
        for tb, bb, m, _ in starts:
            val[:, 0, tb * nb + bb, m] = 0.0
        seq = [self.workers[0]] * w if self.identical else self.workers
        full = len(q_all) - 1
        logs = []
        for i, d in enumerate(seq):
            groups = self.moves(d, worst)
            new = np.full_like(val, inf) if self.identical else val.copy()     # idle: the state stays
            back = np.full(val.shape, -1, dtype=np.int64)                     # group * (mid + 1) + R_mid before
            for n in ([i] if self.identical else range(min(i, w - 1) + 1)):
                here, there = (0, 0) if self.identical else (n, n + 1)
                prev = val[n:, here]                                          # [K > n, q, R_mid]
                live = np.nonzero(np.isfinite(prev).any(axis=(0, 2)))[0]
                if not len(live):
                    continue
                lim = t - (ks[n:] - n)[:, None, None] * lat - beta * (h - rows)[None]
                out, code = new[n:, there], back[n:, there]
                for gi, (tb, bb, S, SC, _, shift) in enumerate(groups):
                    qs = live[((live // nb) & tb) == 0]
                    qs = qs[((qs % nb) & bb) == 0]
                    if not len(qs):
                        continue
                    pv, lm = prev[:, qs], lim[:, qs]                          # [K, q, R_mid]
                    tq = qs + tb * nb + bb
                    if shift is not None:                                     # R_mid after = before + m
                        m, s1, sc1 = shift
                        best = np.full_like(pv, inf)
                        best[:, :, m:] = np.where(pv[:, :, : mid + 1 - m] + sc1 <= lm[:, :, : mid + 1 - m],
                                                  pv[:, :, : mid + 1 - m] + s1, inf)
                        arg = np.broadcast_to(np.arange(mid + 1) - m, best.shape)
                    else:
                        src = np.nonzero(np.isfinite(pv).any(axis=(0, 1)))[0]
                        pv, lm = pv[:, :, src, None], lm[:, :, src, None]
                        cand = np.where(pv + SC[src] <= lm, pv + S[src], inf)  # [K, q, R_mid before, after]
                        best = cand.min(axis=2)
                        arg = src[cand.argmin(axis=2)]
                    better = best < out[:, tq]
                    if better.any():
                        out[:, tq] = np.where(better, best, out[:, tq])
                        code[:, tq] = np.where(better, gi * (mid + 1) + arg, code[:, tq])
            val = new
            # the scatters still to come add at least a latency per worker and the least seconds
            # per row: states that cannot meet the gathers' condition are dropped
            placed = np.full(1, i + 1) if self.identical else np.arange(w + 1)
            rem = np.maximum(ks[:, None] - placed[None, :], 0) * lat                       # [K, n]
            floor = gall[:, None, None, None] + rem[:, :, None, None] + self.scatter_per_row * (h - rows)[None, None]
            val[val + floor > t] = inf
            logs.append(back)
            if self.identical:
                k = i + 1 if val[i, 0, full, mid] + gall[i] <= t else None
            else:
                done = np.nonzero(val[ks - 1, ks, full, mid] + gall <= t)[0]
                k = int(done[0]) + 1 if len(done) else None
            if k is not None:
                return self._walk_back(logs, seq, k, starts, worst)
        return None

    def _walk_back(self, logs, seq, k: int, starts, worst: bool) -> dict[str, tuple[int, int]]:
        """The segments from the DP's log: zone segments where they lie, middle ones by
        length, laid out in the middle rows left free."""
        mid, nb = self.mid, 1 << self.eb
        n, tb, bb, m = k, (1 << self.et) - 1, (1 << self.eb) - 1, mid
        placed: dict[int, tuple[int, int]] = {}               # step -> its zone segment
        lengths: list[tuple[int, int]] = []                   # (step, rows) of middle segments
        used = []
        for i in range(len(logs) - 1, -1, -1):
            code = int(logs[i][k - 1, 0 if self.identical else n, tb * nb + bb, m])
            if code < 0:                                               # idle at this step
                continue
            gi, m0 = divmod(code, mid + 1)
            gtb, gbb, _, _, where, _ = self.moves(seq[i], worst)[gi]
            used.append(i)
            if where[m - m0] is None:
                lengths.append((i, m - m0))
            else:
                placed[i] = where[m - m0]
            n, tb, bb, m = n - 1, tb & ~gtb, bb & ~gbb, m0
        assert n == 0, "walk back did not reach the source"
        src = next(x for x in starts if x[:3] == (tb, bb, m))
        names = {i: (self.workers[j] if self.identical else seq[i]) for j, i in enumerate(sorted(used))}
        segs = {names[i]: ab for i, ab in placed.items()}
        mids = [(names[i], r) for i, r in sorted(lengths)]
        if src[3] is not None:
            segs[self.master] = src[3]
        elif m:
            mids.insert(0, (self.master, m))
        a = max([self.et] + [b for a0, b in segs.values() if a0 < self.et])     # the middle rows left free
        for d, r in mids:
            segs[d] = (a, a + r)
            a += r
        bounds = sorted(segs.values())
        assert bounds[0][0] == 0 and bounds[-1][1] == self.h and all(x[1] == y[0] for x, y in zip(bounds, bounds[1:])), \
            "the segments do not tile the block's rows"
        return segs


def dp_applies(cluster: Cluster, master: str) -> bool:
    """Whether :func:`dp_rows` covers ``cluster``: every mesh; a shared medium whose links from
    the other devices to the source have one bandwidth."""
    return cluster.link == "mesh" or len({cluster.bw(d, master) for d in cluster.names if d != master}) <= 1


def dp_rows(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
            tab: Optional[BlockTables] = None) -> Rows:
    """The block's optimal integer rows without a solver (:func:`_mesh_rows`,
    :func:`_shared_rows`), over every order and subset of the devices: on a mesh exactly, on a
    shared medium to a relative gap of :data:`DP_GAP_REL`. Status ``optimal`` when the bound is
    proven within that gap (else ``feasible``); ``bound`` is the proven lower bound (s).
    ``tab``: the block's tables if already built (:func:`all_block_tables`)."""
    t0 = time.perf_counter()
    tab = tab or block_tables(graph, ops, block_input)
    if cluster.link == "mesh":
        bound, segs = _mesh_rows(tab, cluster, master)
        value = table_span(tab, cluster, master, segs)
    else:
        if not dp_applies(cluster, master):
            raise SolverError("the row DP on a shared medium needs one gather bandwidth; use cpsat, highs or cbc")
        value, bound, segs = _shared_rows(tab, cluster, master)
    status = "optimal" if value - bound <= 2 * DP_GAP_REL * value else "feasible"
    return Rows(status, segs, value, min(bound, value), time.perf_counter() - t0)


def best_rows(graph: LayerGraph, cluster: Cluster, ops: list[str], block_input: str, master: str,
              time_limit: Optional[float] = 30.0, workers: Optional[int] = None,
              hint: Optional[dict[str, tuple[int, int]]] = None, solver: str = "dp",
              order: Optional[list[str]] = None) -> Rows:
    """Integer segments minimising the block's time; status optimal|feasible|no_solution.

    ``solver="dp"`` (default): :func:`dp_rows`, no time limit needed, over every order of the
    devices. ``cbc``/``highs``/``cpsat``: the MILP or CP-SAT model with rows in ``order`` if
    given; else the best over :func:`every_order` (one solve per order: n! on a shared medium,
    so meant for small clusters; ``optimal`` only if every order's solve is, the bound the
    least of theirs, none if the time ran out before every order was tried), within
    ``time_limit`` seconds in all.
    ``hint`` (CP-SAT only): segments to start from (device -> (first row, end row)), used for
    the source-first order."""
    if solver not in ("dp", "cbc", "highs", "cpsat"):
        raise SolverError(f"unknown row solver {solver!r}; choose dp, cbc, highs or cpsat")
    if solver == "dp":
        if order is not None:
            raise SolverError("the row DP chooses the order itself; give order only to cbc, highs or cpsat")
        return dp_rows(graph, cluster, ops, block_input, master)
    if order is None and len(cluster) > 1:
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        orders, runs = every_order(cluster, master), []
        for o in orders:
            if deadline is not None and runs and time.perf_counter() >= deadline:
                break                   # out of time: the orders not tried leave no bound
            left = None if deadline is None else max(0.1, deadline - time.perf_counter())
            runs.append(best_rows(graph, cluster, ops, block_input, master, left, workers,
                                  hint if o == row_order(cluster, master) else None, solver, o))
        found = [r for r in runs if r.objective is not None]
        complete = len(runs) == len(orders)
        bounds = [r.bound for r in runs]
        bound = None if not complete or any(b is None for b in bounds) else min(bounds)
        status = ("optimal" if complete and all(r.status == "optimal" for r in runs)
                  else ("feasible" if found else "no_solution"))
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
