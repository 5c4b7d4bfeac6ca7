"""NPTP: non-penetrative tile partitioning (heuristic, exact tile model, FTP baseline).

After Liu, Xu et al., "Collaborative Inference Acceleration with Non-Penetrative Tensor
Partitioning" (arXiv 2501.04489). The stored copy gives only the paper's opening, so its
Multilevel Partition Algorithm (MPA) is read as follows (assumptions, also in
formulations/nptp.tex and the README):

- **Tiles.** Each device gets one rectangle (possibly empty) of every layer's output map,
  from one partition of the *normalised* map applied to every layer (a device whose tile is
  empty at some resolution sits that layer out). Layers run as in CoEdge (one stage per
  layer, halos fetched from the devices holding them); only the shape of the tiles differs.
  One-pixel layers (the classifier) are split as in CoEdge.
- **Non-penetrative partitions** are the guillotine ones: split the devices into two groups
  of about equal speed, cut the current rectangle across one side in proportion to the
  groups' speeds, recurse into each part. A cut stops at the border of the rectangle it
  splits, so a border need not run through the whole map. Penetrative baselines: row strips
  (CoEdge) and an n x m grid (DeepThings' fused tile partitioning, :func:`ftp`, here layer by
  layer).
- **MPA** (:func:`heuristic`): at every level of the recursion the cut may go across rows or
  across columns; every orientation choice, and CoEdge's row strips, is priced with
  :func:`partopt.plan.evaluate` and the fastest plan kept (1 + 2^levels candidates).

**Exact** (:func:`exact`): a :class:`TileModel` states the tiling problem on a ``rows x cols``
grid of cells over the normalised map: one rectangle of cells per device (integer corner
coordinates; empty allowed), no overlap, full cover, and the latency of every spatial layer
as a function of the rectangles (compute of the device's own pixels; the halo it must
receive, from each layer's receptive-field growth; the input scattered from the source).
Its objective is the sum over layers of the layer's latency (mesh: the slowest device's
halo + compute; shared medium: all halos in turn, then the slowest compute). It is solved
with CP-SAT (corner coordinates, ``NoOverlap2D``) or as a MILP through PuLP (cell
binaries); :func:`brute_force` enumerates every tiling of tiny grids. The tile model is a
closed form, not :func:`~partopt.plan.evaluate`: it ignores per-message latency, the per-task and
per-stage overheads and memory (it does price each device's per-kind rates),
counts a receiver's halo bytes in sequence (a mesh's parallel links would overlap them),
and prices cells fractionally where a map is not a multiple of the grid. The gap between
the grid heuristic (:func:`grid_heuristic`, MPA on the cells, priced by the tile model) and
the exact optimum is therefore measured in the tile model; every returned plan is also
priced by ``evaluate`` and can be verified in torch.

Example:
    >>> guillotine(8, 8, [1, 1, 1], orientation=[0, 1])      # one cut across rows, then columns
    [(0, 3, 0, 8), (3, 8, 0, 4), (3, 8, 4, 8)]
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..cluster import Cluster
from ..errors import NotApplicableError, PartoptError
from ..geometry import Box, split_proportional
from ..graph import LayerGraph
from ..plan import Plan, Stage, Task, build_plan, cone, evaluate
from ..solvers import CPSAT_UNITS_PER_S, MILP_UNITS_PER_S, Solution, solve_cpsat, solve_milp
from .baselines import layer_stages, split_tasks

Rect = tuple[int, int, int, int]      # rows [r0, r1), cols [c0, c1)
TICKS_PER_S = CPSAT_UNITS_PER_S       # CP-SAT states times in integer picoseconds (partopt.solvers)


# ---------------------------------------------------------------------------------------
# Partitions
# ---------------------------------------------------------------------------------------
def _halves(weights: Sequence[float]) -> int:
    """Where to split the devices (in order) into two groups of most nearly equal weight."""
    total = sum(weights)
    best, at = None, 1
    acc = 0.0
    for i in range(1, len(weights)):
        acc += weights[i - 1]
        d = abs(2 * acc - total)
        if best is None or d < best:
            best, at = d, i
    return at


def guillotine(h: int, w: int, weights: Sequence[float], orientation: Optional[Sequence[int]] = None,
               ) -> list[Rect]:
    """A non-penetrative (guillotine) partition of an h x w map into one rectangle per device,
    areas in proportion to ``weights``. ``orientation[level]`` is 0 to cut across rows (a
    horizontal border), 1 across columns; by default the longer side is cut."""
    out: list[Optional[Rect]] = [None] * len(weights)

    def rec(idx: list[int], r0: int, r1: int, c0: int, c1: int, level: int):
        if len(idx) == 1:
            out[idx[0]] = (r0, r1, c0, c1)
            return
        k = _halves([weights[i] for i in idx])
        a, b = idx[:k], idx[k:]
        wa, wb = sum(weights[i] for i in a), sum(weights[i] for i in b)
        o = orientation[level] if orientation is not None and level < len(orientation) else int((c1 - c0) > (r1 - r0))
        if o == 0:
            cut = r0 + split_proportional(r1 - r0, [wa, wb])[0]
            rec(a, r0, cut, c0, c1, level + 1)
            rec(b, cut, r1, c0, c1, level + 1)
        else:
            cut = c0 + split_proportional(c1 - c0, [wa, wb])[0]
            rec(a, r0, r1, c0, cut, level + 1)
            rec(b, r0, r1, cut, c1, level + 1)

    rec(list(range(len(weights))), 0, h, 0, w, 0)
    return out  # type: ignore[return-value]


def grid(h: int, w: int, n_rows: int, n_cols: int) -> list[Rect]:
    """The penetrative n_rows x n_cols grid (row-major)."""
    rows = split_proportional(h, [1] * n_rows)
    cols = split_proportional(w, [1] * n_cols)
    rb = list(itertools.accumulate([0] + rows))
    cb = list(itertools.accumulate([0] + cols))
    return [(rb[i], rb[i + 1], cb[j], cb[j + 1]) for i in range(n_rows) for j in range(n_cols)]


def scale_rects(rects: Sequence[Rect], grid_rc: tuple[int, int], h: int, w: int) -> list[Rect]:
    """Cell rectangles on a ``grid_rc`` grid mapped to pixel rectangles of an h x w map
    (cell border i at pixel floor(i * h / rows)); tiles stay disjoint and covering."""
    gr, gc = grid_rc
    return [((r0 * h) // gr, (r1 * h) // gr, (c0 * w) // gc, (c1 * w) // gc) for r0, r1, c0, c1 in rects]


def _orientations(n_dev: int) -> list[tuple[int, ...]]:
    levels = max(1, (n_dev - 1).bit_length())
    return list(itertools.product((0, 1), repeat=levels))


# ---------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------
RectsOf = Callable[[int, int], Sequence[Rect]]


def tile_stages(graph: LayerGraph, cluster: Cluster, rects_of: Optional[RectsOf]) -> list[Stage]:
    """One stage per layer; a spatial layer's h x w output map is tiled by ``rects_of(h, w)``
    (one rectangle per device, in cluster order; None: CoEdge's row strips by speed); a
    one-pixel layer is split as in CoEdge. A device whose tile is empty sits the layer out."""
    names = cluster.names
    shares = {d.name: d.flops_per_s for d in cluster.devices}
    stages = []
    for ops in layer_stages(graph):
        c, h, w = graph.tensor_chw(ops[-1])
        if (h == 1 and w == 1) or rects_of is None:
            stages.append(Stage(ops, split_tasks(graph, ops[-1], shares)))
            continue
        tasks = [Task(d, Box(0, c, r0, r1, c0, c1)) for d, (r0, r1, c0, c1)
                 in zip(names, rects_of(h, w)) if r1 > r0 and c1 > c0]
        stages.append(Stage(ops, tasks))
    return stages


def plan_of(graph: LayerGraph, cluster: Cluster, orientation: Optional[Sequence[int]], *, model: str = "model",
            method: str = "nptp", source: Optional[str] = None, meta: Optional[dict] = None,
            check: bool = True) -> Plan:
    """The routed, validated plan of a guillotine tiling with ``orientation`` (None: CoEdge's
    strips), cut afresh on every layer's map with areas in proportion to device speed
    (``check=False``: not validated, see :func:`partopt.plan.build_plan`)."""
    weights = [d.flops_per_s for d in cluster.devices]
    meta = dict(meta or {})
    meta["orientation"] = list(orientation) if orientation is not None else None
    rects_of = None if orientation is None else (lambda h, w: guillotine(h, w, weights, orientation))
    return build_plan(graph, cluster, tile_stages(graph, cluster, rects_of), model=model, method=method,
                      source=source, meta=meta, check=check)


def plan_of_cells(graph: LayerGraph, cluster: Cluster, rects: Sequence[Rect], grid_rc: tuple[int, int], *,
                  model: str = "model", method: str = "nptp", source: Optional[str] = None,
                  meta: Optional[dict] = None) -> Plan:
    """The plan of one tiling of the cell grid (see :func:`scale_rects`), used on every layer."""
    meta = dict(meta or {})
    meta.update({"grid": list(grid_rc), "cells": [list(r) for r in rects]})
    return build_plan(graph, cluster, tile_stages(graph, cluster, lambda h, w: scale_rects(rects, grid_rc, h, w)),
                      model=model, method=method, source=source, meta=meta)


def _ref(graph: LayerGraph) -> tuple[int, int]:
    _, h, w = graph.tensor_chw(graph.input_name)
    if h < 2 and w < 2:
        raise NotApplicableError("NPTP tiles a spatial input; this model's input is a single pixel")
    return h, w


def _finish(plan: Plan, graph: LayerGraph, cluster: Cluster, method: str, t0: float, **kw) -> Solution:
    rep = evaluate(plan, graph, cluster)
    kw.setdefault("status", "heuristic")
    if rep.memory_ok:
        obj = kw.pop("objective", rep.latency_s)
        return Solution(plan, kw.pop("status"), method, objective=obj, solve_s=time.perf_counter() - t0,
                        report=rep, **kw)
    kw.pop("status"), kw.pop("objective", None)
    return Solution(plan, "infeasible", method, solve_s=time.perf_counter() - t0, report=rep,
                    reason=rep.infeasible_reason(), **kw)


def heuristic(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None
              ) -> Solution:
    """MPA as read here (module doc): the fastest guillotine tiling over all cut orientations
    and CoEdge's strips, priced by ``evaluate`` (objective: its latency, seconds)."""
    t0 = time.perf_counter()
    _ref(graph)
    best = None
    for orient in [None] + _orientations(len(cluster.devices)):     # the plan kept is validated by _finish
        plan = plan_of(graph, cluster, orient, model=model, source=source, check=False)
        rep = evaluate(plan, graph, cluster, check=False)
        key = (not rep.memory_ok, rep.latency_s)
        if best is None or key < best[0]:
            best = (key, plan)
    return _finish(best[1], graph, cluster, "nptp", t0)


def ftp(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None) -> Solution:
    """DeepThings-style penetrative grid, layer by layer: n x m tiles with n*m = devices (the
    squarest factorisation), assigned in cluster order."""
    t0 = time.perf_counter()
    h, w = _ref(graph)
    n = len(cluster.devices)
    r = max(d for d in range(1, int(n ** 0.5) + 1) if n % d == 0)
    rows, cols = (r, n // r) if h <= w else (n // r, r)
    plan = build_plan(graph, cluster, tile_stages(graph, cluster, lambda hh, ww: grid(hh, ww, min(rows, hh),
                                                                                   min(cols, ww))),
                      model=model, method="ftp", source=source, meta={"grid": [rows, cols]})
    return _finish(plan, graph, cluster, "ftp", t0)


# ---------------------------------------------------------------------------------------
# The tile model
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputTerm:
    """One tensor a layer reads: pixels per cell side at its resolution, the halo growth per
    side (pixels) of an interior tile's receptive field, and bytes per pixel (all channels)."""

    tensor: str
    px_r: float
    px_c: float
    grow: tuple[float, float, float, float]      # top, bottom, left, right (pixels)
    bytes_per_px: float
    from_source: bool                            # the model input, held whole by the source


@dataclass(frozen=True)
class LayerTerm:
    """One spatial layer: its output op, FLOPs per cell of output, the seconds one cell takes on
    each device (cluster order; the cost model's per-kind rates, :func:`partopt.cost.compute_time`),
    and the tensors it reads."""

    name: str
    flops_per_cell: float
    inputs: tuple[InputTerm, ...]
    seconds_per_cell: tuple[float, ...] = ()


@dataclass(frozen=True)
class TileModel:
    """The tiling problem of one graph on one cluster over a ``rows x cols`` cell grid.

    ``speed`` FLOP/s and ``bw_in`` bytes/s (the slowest link into the device) per device in
    cluster order; ``link`` 'mesh' or 'shared'; ``source`` the index of the device holding
    the input. Costs in seconds (see :func:`tile_latency`)."""

    rows: int
    cols: int
    names: tuple[str, ...]
    speed: tuple[float, ...]
    bw_in: tuple[float, ...]
    link: str
    source: int
    layers: tuple[LayerTerm, ...]


def _growth(graph: LayerGraph, ops: list[str], c: int, h: int, w: int) -> dict[str, tuple[float, ...]]:
    """Per input tensor: (top, bottom, left, right) growth in pixels of the region read by a
    one-pixel output tile in the middle of the map, beyond its share of the input map."""
    r, q = h // 2, w // 2
    needs = cone(graph, ops, Task("_", Box(0, c, r, r + 1, q, q + 1))).needs
    out = {}
    for t, b in needs.items():
        _, hi, wi = graph.tensor_chw(t)
        fr, fc = hi / h, wi / w
        out[t] = (max(0.0, r * fr - b.h0), max(0.0, b.h1 - (r + 1) * fr),
                  max(0.0, q * fc - b.w0), max(0.0, b.w1 - (q + 1) * fc))
    return out


def tile_model(graph: LayerGraph, cluster: Cluster, grid_rc: tuple[int, int] = (8, 8), *,
               source: Optional[str] = None) -> TileModel:
    """The :class:`TileModel` of ``graph`` on ``cluster`` over a ``grid_rc`` cell grid."""
    gr, gc = grid_rc
    if not (isinstance(gr, int) and isinstance(gc, int)) or gr < 1 or gc < 1:
        raise PartoptError(f"grid must be two positive integers, got {grid_rc!r}")
    h0, w0 = _ref(graph)
    if gr > h0 or gc > w0:
        raise PartoptError(f"a {gr}x{gc} grid is finer than the {h0}x{w0} input map")
    names = tuple(cluster.names)
    src = source or names[0]
    if src not in names:
        raise PartoptError(f"source {src!r} is not a device of the cluster")
    bw_in = tuple(min((cluster.bw(s, d) for s in names if s != d), default=math.inf) for d in names)
    layers = []
    for ops in layer_stages(graph):
        c, h, w = graph.tensor_chw(ops[-1])
        if h == 1 and w == 1:
            continue
        whole = cone(graph, ops, Task("_", Box(0, c, 0, h, 0, w)))
        ins = []
        for t, g in _growth(graph, ops, c, h, w).items():
            ct, ht, wt = graph.tensor_chw(t)
            ins.append(InputTerm(t, ht / gr, wt / gc, g, ct * graph.batch * 4.0, t == graph.input_name))
        per_cell = whole.flops / (gr * gc)
        layers.append(LayerTerm(ops[-1], per_cell, tuple(ins),
                                tuple(d.seconds(whole.flops_by_kind) / (gr * gc) if d.flops_per_s_by_kind
                                      else per_cell / d.flops_per_s for d in cluster.devices)))
    return TileModel(gr, gc, names, tuple(d.flops_per_s for d in cluster.devices), bw_in, cluster.link,
                     names.index(src), tuple(layers))


BASIS = ("hw", "h_ol", "h_or", "w_ot", "w_ob", "ot_ol", "ot_or", "ob_ol", "ob_or")


def basis_of(rect: Rect, rows: int, cols: int) -> dict[str, int]:
    """The products a tile's cost is linear in: h, w its size in cells, ot/ob/ol/or whether its
    top/bottom/left/right side lies inside the map (0 for an empty tile)."""
    r0, r1, c0, c1 = rect
    h, w = max(0, r1 - r0), max(0, c1 - c0)
    ne = int(h > 0 and w > 0)
    ot, ob, ol, o_r = ne * int(r0 > 0), ne * int(r1 < rows), ne * int(c0 > 0), ne * int(c1 < cols)
    return {"hw": h * w, "h_ol": h * ol, "h_or": h * o_r, "w_ot": w * ot, "w_ob": w * ob,
            "ot_ol": ot * ol, "ot_or": ot * o_r, "ob_ol": ob * ol, "ob_or": ob * o_r}


def region_coef(t: InputTerm) -> dict[str, float]:
    """Pixels of ``t`` read by a tile, as coefficients over :data:`BASIS`: the tile's share
    grown by the halo on each side that lies inside the map."""
    gt, gb, gl, gr = t.grow
    return {"hw": t.px_r * t.px_c, "h_ol": t.px_r * gl, "h_or": t.px_r * gr, "w_ot": t.px_c * gt,
            "w_ob": t.px_c * gb, "ot_ol": gt * gl, "ot_or": gt * gr, "ob_ol": gb * gl, "ob_or": gb * gr}


def device_terms(tm: TileModel, layer: LayerTerm, d: int) -> tuple[dict[str, float], dict[str, float]]:
    """Device ``d``'s receive time and compute time (seconds) in ``layer``, as coefficients over
    :data:`BASIS`."""
    comm: dict[str, float] = {k: 0.0 for k in BASIS}
    for t in layer.inputs:
        if t.from_source and d == tm.source:
            continue
        reg = region_coef(t)
        if not t.from_source:
            reg["hw"] -= t.px_r * t.px_c          # its own share is local
        for k, v in reg.items():
            comm[k] += v * t.bytes_per_px / tm.bw_in[d]
    comp = {k: 0.0 for k in BASIS}
    comp["hw"] = layer.seconds_per_cell[d]
    return comm, comp


def tile_latency(tm: TileModel, rects: Sequence[Rect]) -> float:
    """The tile model's latency (seconds) of one tiling: the sum over layers of (mesh) the
    slowest device's receive + compute time, or (shared) every device's receive time plus the
    slowest compute time."""
    check_tiling(tm, rects)
    bases = [basis_of(r, tm.rows, tm.cols) for r in rects]
    total = 0.0
    for layer in tm.layers:
        comm, comp = [], []
        for d, bs in enumerate(bases):
            cm, cp = device_terms(tm, layer, d)
            comm.append(sum(cm[k] * bs[k] for k in BASIS))
            comp.append(sum(cp[k] * bs[k] for k in BASIS))
        if tm.link == "shared":
            total += sum(comm) + max(comp)
        else:
            total += max(a + b for a, b in zip(comm, comp))
    return total


def check_tiling(tm: TileModel, rects: Sequence[Rect]) -> None:
    """Raise :class:`PartoptError` unless ``rects`` are one rectangle per device, inside the
    grid, disjoint and covering it."""
    if len(rects) != len(tm.names):
        raise PartoptError(f"a tiling needs one rectangle per device ({len(tm.names)}), got {len(rects)}")
    seen = [[False] * tm.cols for _ in range(tm.rows)]
    for r0, r1, c0, c1 in rects:
        if not (0 <= r0 <= r1 <= tm.rows and 0 <= c0 <= c1 <= tm.cols):
            raise PartoptError(f"rectangle {(r0, r1, c0, c1)} leaves the {tm.rows}x{tm.cols} grid")
        for i in range(r0, r1):
            for j in range(c0, c1):
                if seen[i][j]:
                    raise PartoptError(f"rectangles overlap at cell ({i}, {j})")
                seen[i][j] = True
    if not all(all(row) for row in seen):
        raise PartoptError("the rectangles do not cover the grid")


def grid_heuristic(tm: TileModel) -> tuple[list[Rect], float]:
    """MPA on the cell grid: the guillotine tiling (every cut orientation, areas by speed)
    with the lowest tile-model latency. Returns (rectangles, seconds)."""
    best = None
    for orient in _orientations(len(tm.names)):
        rects = guillotine(tm.rows, tm.cols, tm.speed, orient)
        cost = tile_latency(tm, rects)
        if best is None or cost < best[1]:
            best = (rects, cost)
    return best


def tilings(rows: int, cols: int, n_dev: int):
    """Every tiling of a rows x cols grid by at most ``n_dev`` labelled rectangles (the other
    devices empty), as lists of one rectangle per device. Exponential: tiny grids only."""
    empty = (0, 0, 0, 0)
    filled = [[False] * cols for _ in range(rows)]
    assign: list[Rect] = [empty] * n_dev

    def first_free():
        for i in range(rows):
            for j in range(cols):
                if not filled[i][j]:
                    return i, j
        return None

    def rec(used: int):
        cell = first_free()
        if cell is None:
            yield list(assign)
            return
        i, j = cell
        for d in range(n_dev):
            if assign[d] != empty:
                continue
            j_max = j
            while j_max < cols and not filled[i][j_max]:
                j_max += 1
            for c1 in range(j + 1, j_max + 1):
                for r1 in range(i + 1, rows + 1):
                    if any(filled[r1 - 1][q] for q in range(j, c1)):
                        break
                    for a in range(i, r1):
                        for q in range(j, c1):
                            filled[a][q] = True
                    assign[d] = (i, r1, j, c1)
                    yield from rec(used + 1)
                    assign[d] = empty
                    for a in range(i, r1):
                        for q in range(j, c1):
                            filled[a][q] = False

    yield from rec(0)


def brute_force(tm: TileModel) -> tuple[list[Rect], float]:
    """The optimal tiling by enumeration (:func:`tilings`); for checking the exact models."""
    best = None
    for rects in tilings(tm.rows, tm.cols, len(tm.names)):
        cost = tile_latency(tm, rects)
        if best is None or cost < best[1] - 1e-15:
            best = (rects, cost)
    return best


# ---------------------------------------------------------------------------------------
# Exact models
# ---------------------------------------------------------------------------------------
def _coefs(tm: TileModel):
    """Per layer, per device: (comm coefficients, compute coefficients) over BASIS."""
    return [[device_terms(tm, layer, d) for d in range(len(tm.names))] for layer in tm.layers]


def _alike(tm: TileModel, d1: int, d2: int) -> bool:
    """Devices the tile model cannot tell apart: same speed on every layer and same incoming link."""
    return (tm.speed[d1] == tm.speed[d2] and tm.bw_in[d1] == tm.bw_in[d2]
            and all(l.seconds_per_cell[d1] == l.seconds_per_cell[d2] for l in tm.layers))


def _horizon(tm: TileModel) -> float:
    """An upper bound on the tile model's latency (seconds): the grid heuristic's."""
    return grid_heuristic(tm)[1]


def build_cpsat(tm: TileModel, hint: Optional[Sequence[Rect]] = None):
    """The CP-SAT model (formulations/nptp.tex): corner variables a,b (rows) and c,e (columns)
    per device, ``NoOverlap2D``, area sum = cells; times in picoseconds. Returns (model, vars)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    R, C, n = tm.rows, tm.cols, len(tm.names)
    v: dict = {k: [] for k in ("a", "b", "c", "e", "h", "w", "ne", "ot", "ob", "ol", "or") + BASIS}
    xs, ys = [], []
    for d in range(n):
        a, b, c, e = (m.new_int_var(0, R, f"a{d}"), m.new_int_var(0, R, f"b{d}"),
                      m.new_int_var(0, C, f"c{d}"), m.new_int_var(0, C, f"e{d}"))
        h, w = m.new_int_var(0, R, f"h{d}"), m.new_int_var(0, C, f"w{d}")
        ne = m.new_bool_var(f"ne{d}")
        xs.append(m.new_interval_var(a, h, b, f"rows{d}"))
        ys.append(m.new_interval_var(c, w, e, f"cols{d}"))
        m.add(h >= ne)
        m.add(h <= R * ne)
        m.add(w >= ne)
        m.add(w <= C * ne)
        m.add(a == 0).only_enforce_if(ne.Not())          # an empty tile sits at the origin
        m.add(c == 0).only_enforce_if(ne.Not())
        sides = {}
        for key, cond_true, cond_false in (("ot", a >= 1, a == 0), ("ob", b <= R - 1, b == R),
                                           ("ol", c >= 1, c == 0), ("or", e <= C - 1, e == C)):
            s = m.new_bool_var(f"{key}{d}")
            m.add_implication(s, ne)
            m.add(cond_true).only_enforce_if(s)
            m.add(cond_false).only_enforce_if([ne, s.Not()])
            sides[key] = s
        hw = m.new_int_var(0, R * C, f"hw{d}")
        m.add_multiplication_equality(hw, [h, w])
        prods = {"hw": hw}
        for key, size, side, hi in (("h_ol", h, "ol", R), ("h_or", h, "or", R), ("w_ot", w, "ot", C),
                                    ("w_ob", w, "ob", C)):
            z = m.new_int_var(0, hi, f"{key}{d}")
            m.add(z == size).only_enforce_if(sides[side])
            m.add(z == 0).only_enforce_if(sides[side].Not())
            prods[key] = z
        for key in ("ot_ol", "ot_or", "ob_ol", "ob_or"):
            s1, s2 = sides[key[:2]], sides[key[3:]]
            z = m.new_bool_var(f"{key}{d}")
            m.add_bool_and([s1, s2]).only_enforce_if(z)
            m.add_bool_or([s1.Not(), s2.Not(), z])
            prods[key] = z
        for k, x in (("a", a), ("b", b), ("c", c), ("e", e), ("h", h), ("w", w), ("ne", ne)):
            v[k].append(x)
        for k in sides:
            v[k].append(sides[k])
        for k in BASIS:
            v[k].append(prods[k])
    m.add_no_overlap_2d(xs, ys)
    m.add(sum(v["hw"]) == R * C)
    # symmetry: interchangeable devices (same speed and link, not the source) take their tiles
    # in the order of the tiles' top-left cells (an empty tile sits at the origin, first)
    for d1 in range(n):
        for d2 in range(d1 + 1, n):
            same = _alike(tm, d1, d2)
            if same and tm.source not in (d1, d2) and not any(_alike(tm, k, d1) and k != tm.source
                                                               for k in range(d1 + 1, d2)):
                m.add(v["a"][d1] * C + v["c"][d1] <= v["a"][d2] * C + v["c"][d2])
    # times
    top = int(math.ceil(_horizon(tm) * TICKS_PER_S * 1.01)) + 1000
    terms = []
    for li, per_dev in enumerate(_coefs(tm)):
        t_l = m.new_int_var(0, top, f"T{li}")
        terms.append(t_l)

        def lin(coef, d):
            return sum(int(round(coef[k] * TICKS_PER_S)) * v[k][d] for k in BASIS if coef[k])

        if tm.link == "shared":
            comm_all = sum(lin(per_dev[d][0], d) for d in range(n))
            for d in range(n):
                m.add(t_l >= comm_all + lin(per_dev[d][1], d))
        else:
            for d in range(n):
                m.add(t_l >= lin(per_dev[d][0], d) + lin(per_dev[d][1], d))
    obj = m.new_int_var(0, top * max(1, len(terms)), "latency")
    m.add(obj == sum(terms))
    m.minimize(obj)
    if hint is not None:
        for d, (r0, r1, c0, c1) in enumerate(hint):
            ne = int(r1 > r0 and c1 > c0)
            for k, val in (("a", r0 if ne else 0), ("b", r1 if ne else 0), ("c", c0 if ne else 0),
                           ("e", c1 if ne else 0)):
                m.add_hint(v[k][d], val)
    return m, v


# the MILP states times in microseconds (partopt.solvers.MILP_UNITS_PER_S, see build_milp)


def build_milp(tm: TileModel):
    """The MILP (formulations/nptp.tex): binaries per device for rows, columns and cells, a
    contiguous run of rows and of columns, cell = row AND column; the side products linearised
    exactly. Returns (pulp problem, vars).

    Times are in **microseconds** (:data:`MILP_UNITS_PER_S`): in seconds a layer's time is
    about 1e-5, the size of the solvers' feasibility tolerance (1e-7 absolute), and HiGHS
    reported optima up to 1 % below the tiling's true cost."""
    import pulp

    R, C, n = tm.rows, tm.cols, len(tm.names)
    p = pulp.LpProblem("nptp", pulp.LpMinimize)
    B = dict(cat="Binary")
    rr = {(d, i): pulp.LpVariable(f"r_{d}_{i}", **B) for d in range(n) for i in range(R)}
    cc = {(d, j): pulp.LpVariable(f"q_{d}_{j}", **B) for d in range(n) for j in range(C)}
    x = {(d, i, j): pulp.LpVariable(f"x_{d}_{i}_{j}", lowBound=0, upBound=1) for d in range(n) for i in range(R)
         for j in range(C)}
    ne = {d: pulp.LpVariable(f"ne_{d}", **B) for d in range(n)}
    v: dict = {k: {} for k in BASIS + ("ot", "ob", "ol", "or")}
    for d in range(n):
        for i in range(R):
            p += rr[d, i] <= ne[d]
            for j in range(C):
                p += x[d, i, j] <= rr[d, i]
                p += x[d, i, j] <= cc[d, j]
                p += x[d, i, j] >= rr[d, i] + cc[d, j] - 1
        for j in range(C):
            p += cc[d, j] <= ne[d]
        p += pulp.lpSum(rr[d, i] for i in range(R)) >= ne[d]
        p += pulp.lpSum(cc[d, j] for j in range(C)) >= ne[d]
        for ind, N, tag in ((rr, R, "ur"), (cc, C, "uc")):       # one contiguous run
            starts = [pulp.LpVariable(f"{tag}_{d}_{i}", lowBound=0) for i in range(N)]
            for i in range(N):
                p += starts[i] >= ind[d, i] - (ind[d, i - 1] if i else 0)
            p += pulp.lpSum(starts) <= 1
        h = pulp.lpSum(rr[d, i] for i in range(R))
        w = pulp.lpSum(cc[d, j] for j in range(C))
        v["ot"][d] = ne[d] - rr[d, 0]
        v["ob"][d] = ne[d] - rr[d, R - 1]
        v["ol"][d] = ne[d] - cc[d, 0]
        v["or"][d] = ne[d] - cc[d, C - 1]
        v["hw"][d] = pulp.lpSum(x[d, i, j] for i in range(R) for j in range(C))
        for key, size, side, hi in (("h_ol", h, "ol", R), ("h_or", h, "or", R), ("w_ot", w, "ot", C),
                                    ("w_ob", w, "ob", C)):
            z = pulp.LpVariable(f"{key}_{d}", lowBound=0)
            p += z <= hi * v[side][d]
            p += z <= size
            p += z >= size - hi * (1 - v[side][d])
            v[key][d] = z
        for key in ("ot_ol", "ot_or", "ob_ol", "ob_or"):
            s1, s2 = v[key[:2]][d], v[key[3:]][d]
            z = pulp.LpVariable(f"{key}_{d}", lowBound=0)
            p += z <= s1
            p += z <= s2
            p += z >= s1 + s2 - 1
            v[key][d] = z
    for i in range(R):
        for j in range(C):
            p += pulp.lpSum(x[d, i, j] for d in range(n)) == 1
    terms = []
    for li, per_dev in enumerate(_coefs(tm)):
        t_l = pulp.LpVariable(f"T_{li}", lowBound=0)
        terms.append(t_l)

        def lin(coef, d):
            return pulp.lpSum(MILP_UNITS_PER_S * coef[k] * v[k][d] for k in BASIS if coef[k])

        if tm.link == "shared":
            comm_all = pulp.lpSum(lin(per_dev[d][0], d) for d in range(n))
            for d in range(n):
                p += t_l >= comm_all + lin(per_dev[d][1], d)
        else:
            for d in range(n):
                p += t_l >= lin(per_dev[d][0], d) + lin(per_dev[d][1], d)
    p += pulp.lpSum(terms)
    v.update({"r": rr, "q": cc, "x": x, "ne": ne})
    return p, v


def _rects_from_milp(tm: TileModel, v) -> list[Rect]:
    out = []
    for d in range(len(tm.names)):
        rows = [i for i in range(tm.rows) if v["r"][d, i].varValue > 0.5]
        cols = [j for j in range(tm.cols) if v["q"][d, j].varValue > 0.5]
        out.append((rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if rows and cols and v["ne"][d].varValue > 0.5
                   else (0, 0, 0, 0))
    return out


@dataclass
class TileResult:
    """An exact solve of a :class:`TileModel`: status (optimal | feasible | no_solution),
    the tiling, its tile-model latency (s), the proven lower bound (s), solve seconds."""

    status: str
    rects: Optional[list[Rect]]
    latency_s: Optional[float]
    bound_s: Optional[float]
    solve_s: float
    solver: str


def solve_tiles(tm: TileModel, solver: str = "cpsat", time_limit: Optional[float] = 60.0,
                threads: Optional[int] = None) -> TileResult:
    """Solve the tile model exactly on ``solver`` (cpsat | highs | cbc); CP-SAT starts from
    the grid heuristic's tiling. A time limit returns the better of the incumbent and the
    heuristic, with the proven bound."""
    h_rects, h_cost = grid_heuristic(tm)
    if solver == "cpsat":
        m, v = build_cpsat(tm, hint=h_rects)
        r, s = solve_cpsat(m, time_limit=time_limit, workers=threads, scale=TICKS_PER_S)
        rects = None
        if r.status in ("optimal", "feasible"):
            rects = [(s.value(v["a"][d]), s.value(v["b"][d]), s.value(v["c"][d]), s.value(v["e"][d]))
                     for d in range(len(tm.names))]
    elif solver in ("highs", "cbc"):
        p, v = build_milp(tm)
        r = solve_milp(p, solver, time_limit=time_limit, threads=threads, scale=MILP_UNITS_PER_S)
        rects = _rects_from_milp(tm, v) if r.status in ("optimal", "feasible") else None
    else:
        raise PartoptError(f"unknown solver {solver!r}; choose from cpsat, highs, cbc")
    if rects is None:
        return TileResult("no_solution" if r.status != "infeasible" else "infeasible", h_rects, h_cost, r.bound,
                          r.solve_s, solver)
    cost = tile_latency(tm, rects)
    status = r.status
    if status == "feasible" and h_cost < cost:
        rects, cost = h_rects, h_cost
    bound = r.bound
    if status == "optimal":
        bound = cost if bound is None else min(bound, cost)
    return TileResult(status, rects, cost, bound, r.solve_s, solver)


def model(graph: LayerGraph, cluster: Cluster, *, solver: str = "cpsat", grid: tuple[int, int] = (8, 8),
          source: Optional[str] = None):
    """The exact model itself (CP-SAT CpModel, or a PuLP LpProblem for cbc/highs), for export."""
    tm = tile_model(graph, cluster, grid, source=source)
    return build_cpsat(tm)[0] if solver == "cpsat" else build_milp(tm)[0]


TILE_OBJECTIVE = "tile_model_s (surrogate of latency_s: no per-message latency, no memory, one tiling for every layer)"


def exact(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
          solver: str = "cpsat", time_limit: Optional[float] = 60.0, threads: Optional[int] = None,
          grid: tuple[int, int] = (8, 8)) -> Solution:
    """The tiling of a ``grid`` of cells with the lowest tile-model latency (module doc).

    The tile model is a **surrogate** of ``evaluate`` (no per-message latency, no memory, one
    tiling for every layer): ``objective``, ``bound`` and ``gap`` are in the tile model
    (seconds, ``objective_kind`` says so), ``report`` is ``evaluate``'s pricing of the plan that
    uses the tiling on every layer, and ``plan.meta`` holds the grid heuristic's tile-model
    latency for comparison.

    Never worse than the heuristic under ``evaluate``: when the NPTP heuristic's plan
    (:func:`heuristic`) is faster than the tile-model optimum's plan, or fits where it does
    not, that plan is returned with status ``feasible``, no bound, and a reason that gives both
    latencies. Status ``infeasible`` only if neither plan fits memory.
    """
    t0 = time.perf_counter()
    tm = tile_model(graph, cluster, grid, source=source)
    res = solve_tiles(tm, solver, time_limit, threads)
    h_rects, h_cost = grid_heuristic(tm)
    meta = {"solver": solver, "tile_latency_s": res.latency_s, "heuristic_tile_latency_s": h_cost,
            "heuristic_cells": [list(r) for r in h_rects]}
    plan = plan_of_cells(graph, cluster, res.rects, (tm.rows, tm.cols), model=model, source=source, meta=meta)
    status = {"optimal": "optimal"}.get(res.status, "feasible")
    gap = None
    if res.bound_s is not None and res.latency_s:
        gap = max(0.0, (res.latency_s - res.bound_s) / res.latency_s)
    sol = _finish(plan, graph, cluster, "nptp", t0, status=status, objective=res.latency_s, mode="exact",
                  solver=solver, bound=res.bound_s, gap=0.0 if status == "optimal" else gap)
    sol.objective_kind = TILE_OBJECTIVE
    if res.status in ("no_solution", "infeasible"):
        sol.reason = "the solver found no tiling within the time limit; the grid heuristic's tiling is returned"
    elif sol.status == "infeasible":
        sol.reason = "the optimal tiling's plan breaks memory (the tile model has no memory rows): " + sol.reason
    h = heuristic(graph, cluster, model=model, source=source)
    worse = h.feasible and (not sol.feasible or h.report.latency_s < sol.report.latency_s * (1 - 1e-12))
    if not worse:
        return sol
    why = ("breaks memory" if not sol.feasible else
           f"is slower under evaluate ({sol.report.latency_s:.6g} s) than the NPTP heuristic's plan "
           f"({h.report.latency_s:.6g} s)")
    h.plan.meta.update(meta, exact_tiling_cells=[list(r) for r in res.rects] if res.rects else None,
                       exact_tiling_latency_s=sol.report.latency_s if sol.report else None)
    return Solution(h.plan, "feasible", "nptp", "exact", objective=h.report.latency_s, solve_s=time.perf_counter() - t0,
                    solver=solver, report=h.report, objective_kind="latency_s",
                    reason=f"the tile model's {res.status} tiling ({res.latency_s:.6g} s in the tile model) {why}; "
                           "the heuristic's plan is returned, with no optimality claim under evaluate")
