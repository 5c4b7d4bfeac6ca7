"""DN2PCIoT: partitioning a small CNN's neurons onto memory-constrained IoT devices for
inference rate, with an exact model and METIS, per-layer and greedy baselines.

After de Oliveira and Borin, "Partitioning Convolutional Neural Networks to Maximize the
Inference Rate on Constrained IoT Devices" (Future Internet 11(10):209, 2019). Readings that
partopt states as assumptions (the stored copy of the paper gives only its first pages):

**The graph.** Vertices are groups of neurons of the model's layers
(:func:`partopt.methods.baselines.layer_stages`: a conv with its activation, a pool, a fully
connected layer with its activation): a conv or pool layer's output is cut, per channel, into
``blocks x blocks`` spatial tiles, a fully connected layer's neurons into groups of
``fc_group``. :data:`GROUPINGS` has the two versions the experiments use, ``coarse`` (one
vertex per feature map, FC neurons by 12; 62 vertices for LeNet-5) and ``fine`` (2 x 2 tiles
per map, FC neurons by 6; 212 vertices). A vertex's weight is its FLOPs and its bytes; an
edge's weight the bytes its neurons need from another vertex. The model input starts on the
first device (the sensor), which is also where the output goes.

**Shared parameters.** A conv's filter for channel c (its weights and bias) is stored once
on every device that holds any neuron of channel c; a fully connected neuron's weights belong
to it alone. **Redundant edges**: a neuron's output goes to a device once, however many of
that device's neurons read it. Both are exactly what partopt's plan routing and memory rule
do (:func:`partopt.plan.evaluate`), so the assignment is a partopt :class:`~partopt.plan.Plan`
(one stage per layer, one task per vertex) and every figure here equals ``evaluate``'s.

**Objectives.** ``rate``: maximise inferences per second of a pipelined stream, 1 / the
busiest resource (a device's compute, a link's messages, or on a shared medium all
messages), as ``evaluate``'s ``throughput_per_s``; :class:`~partopt.solvers.Solution`'s
``objective`` is then that busiest time (seconds per inference). ``comm``: minimise bytes
sent per inference. Device memory limits are hard in both.

**DN2PCIoT** (:func:`heuristic`, after the paper's Kernighan-Lin-style algorithm): start from
the packed assignment (vertices in order filling one device after another), the per-layer
placement and the greedy baseline (valid or not), improve each, and keep the best; in each pass move one unlocked vertex at a time to the device where the
objective is best among moves that keep every device within memory (ties: fewer bytes sent),
lock it, and repeat; keep the best prefix of the pass; stop when a pass gains nothing. Moves
of a vertex go to the devices holding its producers or consumers, or to the least loaded one.

**Exact** (:func:`exact`): assignment binaries x[v, d]; "class needed" binaries z[k, d] for
each class k of a producer's neurons (neurons read by the same set of vertices), z >= x[v, d] -
x[producer, d]; channel-filter indicators h[c, d] >= x[v, d]; message indicators per stage and
link; sender-receiver products where a byte's cost depends on its link (a mesh, or a shared
medium whose links differ: :func:`uniform_medium`); memory rows per device and stage as ``evaluate``;
objective the bottleneck (``rate``) or the bytes (``comm``); symmetry breaking (compute load
non-increasing) over identical non-source devices; valid cuts that survive the LP relaxation
(cover, product and inflow cuts: a device other than the source that holds a vertex receives at
least :func:`inflow_floor` bytes, a minimum cut; source-count cuts: how many other devices hold
an FC layer, stepping with how much of it the source holds). CBC or HiGHS (PuLP) or CP-SAT (8 workers by
default, :data:`partopt.solvers.CPSAT_PORTFOLIO_WORKERS`); at a time limit, the best plan with
the proven bound. See formulations/dn2pciot.tex.

Example:
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> ng = neuron_graph(g, "coarse"); len(ng.vertices)
    62
    >>> sol = heuristic(g, preset("dn2pciot-2"), model="lenet5")
    >>> sol.status, sol.report.memory_ok
    ('heuristic', True)
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..cluster import Cluster
from ..cost import compute_time
from ..errors import NotApplicableError, PartoptError, SolverError
from ..geometry import Box, ranges_from_counts, split_proportional
from ..graph import LayerGraph
from ..maxplus import Lin, builder
from ..plan import FLOAT_BYTES, Plan, Stage, Task, build_plan, cone, evaluate
from ..solvers import CPSAT_PORTFOLIO_WORKERS, Solution
from .baselines import layer_stages

OBJECTIVES = ("rate", "comm")


@dataclass(frozen=True)
class Grouping:
    """How neurons are grouped into vertices: ``blocks`` x ``blocks`` tiles per conv/pool
    feature map, ``fc_group`` neurons per fully connected vertex."""

    blocks: int
    fc_group: int


GROUPINGS = {"coarse": Grouping(1, 12), "fine": Grouping(2, 6)}


@dataclass(frozen=True)
class Vertex:
    stage: int
    box: Box
    flops: int
    out_bytes: int
    work_bytes: int      # working set beyond its own output while it runs (evaluate's rule)
    flops_by_kind: tuple = ()    # its FLOPs per rate kind (partopt.cost.rate_kind)


@dataclass
class NeuronGraph:
    """Vertices, the classes of neurons they read, and the parameter keys they hold.

    ``cls_*``: per class, its producer vertex (-1: the model input, on the source device),
    its bytes, the stage that reads it, and (``cons_k``, ``cons_v``) the (class, vertex)
    incidences. ``key_*``: per parameter key (a conv channel's filter, or an FC vertex's rows),
    its bytes and (``hold_k``, ``hold_v``) the vertices that need it.
    """

    graph: LayerGraph
    stages: list[list[str]]
    vertices: list[Vertex]
    input_bytes: int
    cls_prod: np.ndarray
    cls_bytes: np.ndarray
    cls_stage: np.ndarray
    cons_k: np.ndarray
    cons_v: np.ndarray
    key_bytes: np.ndarray
    hold_k: np.ndarray
    hold_v: np.ndarray
    grouping: Grouping

    @property
    def n_stages(self) -> int:
        return len(self.stages)


def _boxes(graph: LayerGraph, out: str, grouping: Grouping) -> list[Box]:
    c, h, w = graph.tensor_chw(out)
    if h == 1 and w == 1:
        k = math.ceil(c / grouping.fc_group)
        counts = split_proportional(c, [1] * k)
        return [Box(a, b, 0, 1, 0, 1) for a, b in ranges_from_counts(counts) if b > a]
    rows = [r for r in ranges_from_counts(split_proportional(h, [1] * min(grouping.blocks, h))) if r[1] > r[0]]
    cols = [r for r in ranges_from_counts(split_proportional(w, [1] * min(grouping.blocks, w))) if r[1] > r[0]]
    return [Box(ch, ch + 1, r0, r1, c0, c1) for ch in range(c) for r0, r1 in rows for c0, c1 in cols]


def neuron_graph(graph: LayerGraph, grouping: str | Grouping = "coarse") -> NeuronGraph:
    """The DN2PCIoT graph of ``graph`` (a chain of layers) at ``grouping`` (see :data:`GROUPINGS`)."""
    if isinstance(grouping, str):
        if grouping not in GROUPINGS:
            raise PartoptError(f"unknown grouping {grouping!r}; groupings: {', '.join(GROUPINGS)}")
        grouping = GROUPINGS[grouping]
    if grouping.blocks < 1 or grouping.fc_group < 1:
        raise PartoptError(f"grouping needs blocks >= 1 and fc_group >= 1, got {grouping}")
    stages = layer_stages(graph)
    outputs = [s[-1] for s in stages]
    for i, s in enumerate(stages):
        for n in s:
            for inp in graph.op[n].inputs:
                if inp not in s and inp != (outputs[i - 1] if i else graph.input_name):
                    raise NotApplicableError(f"DN2PCIoT partitions a chain of layers; {n} reads {inp}, "
                                       f"which is not the previous layer's output")
    batch = graph.batch
    verts: list[Vertex] = []
    by_stage: list[list[int]] = []
    for i, s in enumerate(stages):
        ids = []
        for box in _boxes(graph, s[-1], grouping):
            c = cone(graph, s, Task("-", box))
            out = box.volume * batch * FLOAT_BYTES
            ids.append(len(verts))
            verts.append(Vertex(i, box, c.flops, out, max(0, c.work_peak_bytes - out), c.flops_by_kind))
        by_stage.append(ids)
    # classes: a producer's elements grouped by the set of consumer vertices that read them
    cls_prod, cls_bytes, cls_stage, cons_k, cons_v = [], [], [], [], []
    for i, s in enumerate(stages):
        tensor = outputs[i - 1] if i else graph.input_name
        shape = graph.tensor_chw(tensor)
        prods = by_stage[i - 1] if i else [-1]
        owner = np.full(shape, -1, dtype=np.int64)
        for u in prods:
            b = verts[u].box if u >= 0 else Box.full(shape)
            owner[b.c0:b.c1, b.h0:b.h1, b.w0:b.w1] = u
        readers = [[] for _ in range(int(np.prod(shape)))]
        mask = np.zeros(shape, dtype=bool)
        for v in by_stage[i]:
            need = cone(graph, s, Task("-", verts[v].box)).needs.get(tensor)
            if need is None or need.empty:
                continue
            mask[:] = False
            mask[need.c0:need.c1, need.h0:need.h1, need.w0:need.w1] = True
            for e in np.flatnonzero(mask):
                readers[e].append(v)
        groups: dict[tuple, int] = {}
        flat_owner = owner.ravel()
        for e, rs in enumerate(readers):
            if rs:
                key = (int(flat_owner[e]), tuple(rs))
                groups[key] = groups.get(key, 0) + 1
        for (u, rs), size in groups.items():
            k = len(cls_prod)
            cls_prod.append(u)
            cls_bytes.append(size * batch * FLOAT_BYTES)
            cls_stage.append(i)
            cons_k += [k] * len(rs)
            cons_v += list(rs)
    # parameter keys: a conv/bn channel is shared by its vertices; FC rows are the vertex's own
    keys: dict[tuple, int] = {}
    key_bytes, hold_k, hold_v = [], [], []
    from ..cost import weight_bytes
    for v, vx in enumerate(verts):
        c = cone(graph, stages[vx.stage], Task("-", vx.box))
        for name in stages[vx.stage]:
            op = graph.op[name]
            r = c.regions[name]
            if r.empty or op.param_bytes == 0:
                continue
            if op.kind in ("conv", "bn"):
                for ch in range(r.c0, r.c1):
                    key = (name, ch)
                    if key not in keys:
                        keys[key] = len(key_bytes)
                        ci = op.conv_in_channels(ch, ch + 1) if op.kind == "conv" else (0, 1)
                        key_bytes.append(weight_bytes(op, [(ch, ch + 1, ci[0], ci[1])]))
                    hold_k.append(keys[key])
                    hold_v.append(v)
            elif op.kind == "linear":
                keys[(name, v)] = len(key_bytes)
                key_bytes.append(weight_bytes(op, [(r.c0, r.c1, 0, 1)]))
                hold_k.append(keys[(name, v)])
                hold_v.append(v)
            else:
                raise NotApplicableError(f"DN2PCIoT: no parameter rule for {op.kind} op {name}")
    arr = lambda x: np.asarray(x, dtype=np.int64)
    return NeuronGraph(graph, stages, verts, graph.tensor_bytes(graph.input_name), arr(cls_prod), arr(cls_bytes),
                       arr(cls_stage), arr(cons_k), arr(cons_v), arr(key_bytes), arr(hold_k), arr(hold_v), grouping)


# ---------------------------------------------------------------------------------------
# Costs of an assignment (the same numbers as evaluate, without building the plan)
# ---------------------------------------------------------------------------------------
@dataclass
class Costs:
    """Per assignment: bottleneck seconds per inference (1 / rate), bytes sent per inference,
    per-device peak memory (bytes) and the bytes each device lacks."""

    bottleneck_s: float
    comm_bytes: int
    peak: np.ndarray
    over: np.ndarray

    @property
    def valid(self) -> bool:
        return not self.over.any()

    def key(self, objective: str) -> tuple:
        return (self.bottleneck_s, self.comm_bytes) if objective == "rate" else (self.comm_bytes, self.bottleneck_s)


def _csr(owner: np.ndarray, item: np.ndarray, n_owners: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct items of each owner, with how often each occurs: (ptr, items, counts), owner
    o's entries at ptr[o]:ptr[o + 1]."""
    pairs, counts = np.unique(np.stack([np.asarray(owner, dtype=np.int64), np.asarray(item, dtype=np.int64)]),
                              axis=1, return_counts=True)
    ptr = np.searchsorted(pairs[0], np.arange(n_owners + 1))
    return ptr, pairs[1], counts


def _gather(ptr: np.ndarray, items: np.ndarray, counts: np.ndarray, owners: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR entries (:func:`_csr`) of ``owners[i]`` for every i, flat: (i, item, count)."""
    lo, hi = ptr[owners], ptr[owners + 1]
    sizes = hi - lo
    i = np.repeat(np.arange(len(owners)), sizes)
    pos = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes) + np.repeat(lo, sizes)
    return i, items[pos], counts[pos]


class Evaluator:
    """Fast costs of assignments (vertex -> device index) of one graph on one cluster."""

    def __init__(self, ng: NeuronGraph, cluster: Cluster, source: int = 0):
        self.ng, self.cluster, self.src = ng, cluster, source
        self.n = len(cluster.devices)
        self.speed = np.array([d.flops_per_s for d in cluster.devices], dtype=float)
        self.cap = np.array([d.memory_bytes for d in cluster.devices], dtype=np.int64)
        names = cluster.names
        self.inv_bw = np.array([[0.0 if a == b else 1.0 / cluster.bw(a, b) for b in names] for a in names])
        self.stage_of = np.array([v.stage for v in ng.vertices], dtype=np.int64)
        self.flops = np.array([v.flops for v in ng.vertices], dtype=float)
        # secs[v, d]: seconds vertex v keeps device d busy (one task: the cost model's compute rule)
        self.secs = np.array([[compute_time(dev, v.flops_by_kind, 1, cluster.task_overhead_s)
                               for dev in cluster.devices] for v in ng.vertices], dtype=float).reshape(-1, self.n)
        self._rows = np.arange(len(ng.vertices))
        self.out = np.array([v.out_bytes for v in ng.vertices], dtype=np.int64)
        self.work = np.array([v.work_bytes for v in ng.vertices], dtype=np.int64)
        self.last = np.flatnonzero(self.stage_of == ng.n_stages - 1)
        V = len(ng.vertices)
        # per vertex (CSR: entries ptr[v]:ptr[v + 1]): the classes it reads and how often, the
        # classes it makes, the parameter keys it holds and how often (move_scores)
        self._reads_ptr, self._reads_k, self._reads_n = _csr(ng.cons_v, ng.cons_k, V)
        made = np.flatnonzero(ng.cls_prod >= 0)
        self._makes_ptr, self._makes_k, _ = _csr(ng.cls_prod[made], made, V)
        self._holds_ptr, self._holds_k, self._holds_n = _csr(ng.hold_v, ng.hold_k, V)

    def compute_s(self, x: np.ndarray) -> np.ndarray:
        """Seconds each device computes under assignment ``x``: its vertices' seconds (each one
        task), plus the per-stage overhead once per stage in which it has a vertex."""
        return self._compute_many(np.asarray(x)[None, :])[0]

    def costs(self, x: np.ndarray) -> Costs:
        """The costs of assignment ``x`` (:meth:`_batch` of the one row)."""
        busiest, comm, peak = self._batch(np.asarray(x)[None, :])
        peak = peak[0].astype(np.int64)
        return Costs(float(busiest[0]), int(comm[0]), peak, np.maximum(peak - self.cap, 0))

    def scores(self, X: np.ndarray, objective: str) -> list[tuple]:
        """``(bytes over memory,) + costs(x).key(objective)`` for every row x of ``X`` (m x V),
        in one pass (:meth:`_batch`). The local search prices all moves of a step at once."""
        busiest, comm, peak = self._batch(X)
        over = np.maximum(peak - self.cap[None, :], 0).sum(axis=1)
        if objective == "rate":
            return [(int(o), float(b), int(c)) for o, b, c in zip(over, busiest, comm)]
        return [(int(o), int(c), float(b)) for o, b, c in zip(over, busiest, comm)]

    def _batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every row x of ``X`` (m x V, vertex -> device index): the bottleneck seconds per
        inference, the bytes sent per inference, and each device's peak memory in bytes (m x n),
        the same numbers as :func:`partopt.plan.evaluate` of :func:`plan_of` (tested)."""
        bl, outs, work, keyb = self._parts(X)
        return self._tail(bl, self._compute_many(X), outs, work, keyb)

    def _parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The parts :meth:`_tail` takes, for every row of ``X``: link bytes per phase, sender and
        receiver; outputs and working set per stage and device; parameter bytes held (bytes)."""
        ng, n, S, m = self.ng, self.n, self.ng.n_stages, X.shape[0]
        K, rows = len(ng.cls_prod), np.arange(m)[:, None]
        # link bytes [row, phase, sender, receiver]; phases: the stages, then the final gather
        cnt = np.bincount(((rows * K + ng.cons_k[None, :]) * n + X[:, ng.cons_v]).ravel(), minlength=m * K * n)
        need = cnt.reshape(m, K, n) > 0
        prod_dev = np.where(ng.cls_prod[None, :] >= 0, X[:, np.maximum(ng.cls_prod, 0)], self.src)
        need[rows, np.arange(K)[None, :], prod_dev] = False
        mm, kk, dd = np.nonzero(need)
        cells = [((mm * (S + 1) + ng.cls_stage[kk]) * n + prod_dev[mm, kk]) * n + dd]
        nbytes = [ng.cls_bytes[kk]]
        am, aj = np.nonzero(X[:, self.last] != self.src)
        cells.append(((am * (S + 1) + S) * n + X[am, self.last[aj]]) * n + self.src)
        nbytes.append(self.out[self.last[aj]])
        # byte sums as float64 (bincount's weights): exact, as they stay far below 2**53
        bl = np.bincount(np.concatenate(cells), weights=np.concatenate(nbytes),
                         minlength=m * (S + 1) * n * n).reshape(m, S + 1, n, n)
        cell = (rows * S + self.stage_of[None, :]) * n + X
        outs = np.bincount(cell.ravel(), weights=np.broadcast_to(self.out, X.shape).ravel(),
                           minlength=m * S * n).reshape(m, S, n)
        work = np.zeros(m * S * n, dtype=np.int64)
        np.maximum.at(work, cell.ravel(), np.broadcast_to(self.work, X.shape).ravel())
        work = work.reshape(m, S, n)
        held = np.zeros((m, len(ng.key_bytes), n), dtype=bool)
        held[rows, ng.hold_k[None, :], X[:, ng.hold_v]] = True
        keyb = np.einsum("k,mkn->mn", ng.key_bytes, held)
        return bl, outs, work, keyb

    def _tail(self, bl: np.ndarray, comp: np.ndarray, outs: np.ndarray, work: np.ndarray,
              keyb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The costs of m assignments from their parts: ``bl`` (m x (S + 1) x n x n) bytes per
        phase (the stages, then the final gather), sender and receiver; ``comp`` (m x n) compute
        seconds; ``outs`` and ``work`` (m x S x n) bytes of outputs and working set per stage and
        device; ``keyb`` (m x n) parameter bytes held. Returns the bottleneck seconds, the bytes
        sent and each device's peak memory (bytes), as :meth:`_batch`."""
        S, src = self.ng.n_stages, self.src
        link_s = (bl > 0).sum(axis=1) * self.cluster.latency_s + bl.sum(axis=1) * self.inv_bw
        wire = link_s.sum(axis=(1, 2)) if self.cluster.link == "shared" else link_s.max(axis=(1, 2))
        busiest = np.maximum(comp.max(axis=1), wire)
        live = np.zeros(outs.shape, dtype=np.int64)
        live[:, 1:] = outs[:, :-1]
        live[:, 0, src] += self.ng.input_bytes
        act = live + bl[:, :S].sum(axis=2) + outs + work
        peak = act.max(axis=1)
        peak[:, src] = np.maximum(peak[:, src], outs[:, S - 1, src] + bl[:, S].sum(axis=1)[:, src])
        return busiest, bl.sum(axis=(1, 2, 3)), peak + keyb

    def move_scores(self, y: np.ndarray, vs, ds, objective: str) -> list[tuple]:
        """:meth:`scores` of the assignments ``y`` with vertex ``vs[i]`` moved to device ``ds[i]``
        (one move each), from :meth:`move_costs`: the same tuples to the last bit (tested)."""
        busiest, comm, peak = self.move_costs(y, vs, ds)
        over = np.maximum(peak - self.cap[None, :], 0).sum(axis=1)
        if objective == "rate":
            return [(int(o), float(bb), int(c)) for o, bb, c in zip(over, busiest, comm)]
        return [(int(o), int(c), float(bb)) for o, bb, c in zip(over, busiest, comm)]

    def move_costs(self, y: np.ndarray, vs, ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_batch` of the assignments ``y`` with vertex ``vs[i]`` moved to device ``ds[i]``
        (one move each, ``ds[i] != y[vs[i]]``): the bottleneck seconds, bytes sent and peak memory
        (bytes) of each, the same numbers to the last bit (tested), priced from ``y``'s parts and
        what each move changes (the classes the vertex reads or makes, its outputs, working set
        and parameter keys), not from every vertex again. The local search's pricing."""
        ng, n, S, src = self.ng, self.n, self.ng.n_stages, self.src
        y, vs, ds = np.asarray(y, dtype=np.int64), np.asarray(vs, dtype=np.int64), np.asarray(ds, dtype=np.int64)
        m, K = len(vs), len(ng.cls_prod)
        a, b = y[vs], ds
        if m == 0:
            return np.zeros(0), np.zeros(0), np.zeros((0, n))
        if np.any(a == b):
            raise PartoptError("move_costs: a move must change the vertex's device")
        bl0, outs0, work0, keyb0 = self._parts(y[None, :])
        cnt = np.zeros((K, n), dtype=np.int64)
        np.add.at(cnt, (ng.cons_k, y[ng.cons_v]), 1)
        prod = np.where(ng.cls_prod >= 0, y[np.maximum(ng.cls_prod, 0)], src)
        # a class the vertex reads has one reader more on b and one fewer on a: only its
        # messages to a and b can change
        mi, kc, mult = _gather(self._reads_ptr, self._reads_k, self._reads_n, vs)
        p, ph, nb = prod[kc], ng.cls_stage[kc], ng.cls_bytes[kc].astype(float)
        idx, wts = [], []
        for dev, after, sign in ((a[mi], cnt[kc, a[mi]] - mult, -1.0), (b[mi], cnt[kc, b[mi]] + mult, 1.0)):
            had = (cnt[kc, dev] > 0) & (dev != p)
            has = (after > 0) & (dev != p)
            e = np.flatnonzero(had != has)
            idx.append(((mi[e] * (S + 1) + ph[e]) * n + p[e]) * n + dev[e])
            wts.append(sign * nb[e])
        # a class the vertex makes moves its sender from a to b: every receiver but the new sender
        mi, kp, _ = _gather(self._makes_ptr, self._makes_k, self._makes_k, vs)
        readers = cnt[kp] > 0
        for sender, sign in ((a[mi], -1.0), (b[mi], 1.0)):
            e, d = np.nonzero(readers & (np.arange(n)[None, :] != sender[:, None]))
            idx.append(((mi[e] * (S + 1) + ng.cls_stage[kp[e]]) * n + sender[e]) * n + d)
            wts.append(sign * ng.cls_bytes[kp[e]].astype(float))
        last = self.stage_of[vs] == S - 1          # the final gather: outputs go back to the source
        for dev, sign in ((a, -1.0), (b, 1.0)):
            g = np.flatnonzero(last & (dev != src))
            idx.append(((g * (S + 1) + S) * n + dev[g]) * n + src)
            wts.append(sign * self.out[vs[g]].astype(float))
        bl = bl0 + np.bincount(np.concatenate(idx), weights=np.concatenate(wts),
                               minlength=m * (S + 1) * n * n).reshape(m, S + 1, n, n)
        rows, sv = np.arange(m), self.stage_of[vs]
        outs = np.repeat(outs0, m, axis=0)
        outs[rows, sv, a] -= self.out[vs]
        outs[rows, sv, b] += self.out[vs]
        # the working set of (stage, device) a cell's largest; without vertex v: the second
        # largest where v alone is the largest
        top = work0[0]
        ties = np.zeros_like(top)
        at_top = self.work == top[self.stage_of, y]
        np.add.at(ties, (self.stage_of[at_top], y[at_top]), 1)
        second = np.zeros_like(top)
        np.maximum.at(second, (self.stage_of[~at_top], y[~at_top]), self.work[~at_top])
        alone = at_top[vs] & (ties[sv, a] == 1)
        work = np.repeat(work0, m, axis=0)
        work[rows, sv, a] = np.where(alone, second[sv, a], top[sv, a])
        work[rows, sv, b] = np.maximum(work[rows, sv, b], self.work[vs])
        held = np.zeros((len(ng.key_bytes), n), dtype=np.int64)
        np.add.at(held, (ng.hold_k, y[ng.hold_v]), 1)
        keyb = np.repeat(keyb0, m, axis=0)
        mh, kh, hn = _gather(self._holds_ptr, self._holds_k, self._holds_n, vs)
        gone = held[kh, a[mh]] == hn
        np.add.at(keyb, (mh[gone], a[mh[gone]]), -ng.key_bytes[kh[gone]])
        new = held[kh, b[mh]] == 0
        np.add.at(keyb, (mh[new], b[mh[new]]), ng.key_bytes[kh[new]])
        trial = np.repeat(y[None, :], m, axis=0)
        trial[rows, vs] = ds
        return self._tail(bl, self._compute_many(trial), outs, work, keyb)

    def _compute_many(self, X: np.ndarray) -> np.ndarray:
        """:meth:`compute_s` of every row of ``X`` (m x n seconds): FLOPs over speed summed as
        ``evaluate`` sums them on clusters of one rate per device, else each vertex's seconds."""
        m, n = X.shape[0], self.n
        idx = (np.arange(m)[:, None] * n + X).ravel()
        if self.cluster.uniform_rates:
            return np.bincount(idx, weights=np.broadcast_to(self.flops, X.shape).ravel(),
                               minlength=m * n).reshape(m, n) / self.speed
        comp = np.bincount(idx, weights=self.secs[self._rows[None, :], X].ravel(), minlength=m * n).reshape(m, n)
        if self.cluster.stage_overhead_s:
            busy = np.zeros((m, self.ng.n_stages, n), dtype=bool)
            busy[np.arange(m)[:, None], self.stage_of[None, :], X] = True
            comp = comp + busy.sum(axis=1) * self.cluster.stage_overhead_s
        return comp


def plan_of(ng: NeuronGraph, cluster: Cluster, x, *, model: str = "model", method: str = "dn2pciot",
            meta: Optional[dict] = None) -> Plan:
    """The partopt plan of assignment ``x`` (vertex -> device index): one stage per layer,
    one task per vertex; the input starts on, and the output returns to, the first device."""
    names = cluster.names
    stages = [Stage(list(ops), []) for ops in ng.stages]
    for v, vx in enumerate(ng.vertices):
        stages[vx.stage].tasks.append(Task(names[int(x[v])], vx.box))
    meta = dict(meta or {})
    meta.update({"grouping": [ng.grouping.blocks, ng.grouping.fc_group], "assignment": [int(d) for d in x]})
    return build_plan(ng.graph, cluster, stages, model=model, method=method, source=names[0], meta=meta)


def _result(ng, cluster, x, method, objective, t0, model, status="heuristic", **kw) -> Solution:
    plan = plan_of(ng, cluster, x, model=model, method=method, meta={"objective": objective})
    rep = evaluate(plan, ng.graph, cluster)
    obj = 1.0 / rep.throughput_per_s if objective == "rate" else float(rep.comm_bytes)
    if rep.memory_ok:
        return Solution(plan, status, method, objective=obj, solve_s=time.perf_counter() - t0, report=rep, **kw)
    return Solution(plan, "infeasible", method, solve_s=time.perf_counter() - t0, report=rep,
                    reason=rep.infeasible_reason(), **kw)


def _check(objective: str, cluster: Optional[Cluster] = None, source: Optional[str] = None) -> None:
    if objective not in OBJECTIVES:
        raise PartoptError(f"unknown objective {objective!r}; objectives: {', '.join(OBJECTIVES)}")
    if cluster is not None and source not in (None, cluster.devices[0].name):
        raise PartoptError("DN2PCIoT keeps the input on the cluster's first device; reorder the cluster instead")


# ---------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------
def greedy_assignment(ng: NeuronGraph, ev: Evaluator) -> np.ndarray:
    """Vertices in layer order, each to the device with the least compute time so far among
    those whose memory it keeps within capacity (the least-overflowing device if none)."""
    n = ev.n
    x = np.zeros(len(ng.vertices), dtype=np.int64)
    load = np.zeros(n)
    placed: list[int] = []
    for v in range(len(ng.vertices)):
        best, best_over = None, None
        for d in sorted(range(n), key=lambda d: (load[d], d)):
            x[v] = d
            sub = np.array(placed + [v])
            over = _partial_over(ng, ev, x, sub)
            if over[d] == 0:
                best = d
                break
            if best is None or over[d] < best_over:
                best, best_over = d, over[d]
        x[v] = best
        load[best] += ev.secs[v, best]
        placed.append(v)
    return x


def _partial_over(ng: NeuronGraph, ev: Evaluator, x: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """Memory overflow of the vertices placed so far, counting weights and the outputs of two
    consecutive layers (a guide for the baselines; ``evaluate`` decides validity)."""
    n = ev.n
    held = np.zeros((len(ng.key_bytes), n), dtype=bool)
    sel = np.isin(ng.hold_v, placed)
    held[ng.hold_k[sel], x[ng.hold_v[sel]]] = True
    outs = np.zeros((ng.n_stages, n), dtype=np.int64)
    np.add.at(outs, (ev.stage_of[placed], x[placed]), ev.out[placed])
    act = outs.copy()
    act[1:] += outs[:-1]
    peak = act.max(axis=0) + ng.key_bytes @ held
    return np.maximum(peak - ev.cap, 0)


def packed_assignment(ng: NeuronGraph, ev: Evaluator) -> np.ndarray:
    """Vertices in layer order fill the first device until the next one would overflow it
    (weights and outputs), then the next device, and so on: few devices, few bytes sent."""
    x = np.zeros(len(ng.vertices), dtype=np.int64)
    d = 0
    for v in range(len(ng.vertices)):
        x[v] = d
        if d + 1 < ev.n and _partial_over(ng, ev, x, np.arange(v + 1))[d] > 0:
            d += 1
            x[v] = d
    return x


def per_layer_assignment(ng: NeuronGraph, ev: Evaluator) -> np.ndarray:
    """Whole layers on devices, as a general framework places them: layers in order go to the
    current device until one would overflow it (weights and outputs), then to the next device;
    the last device takes whatever remains."""
    x = np.zeros(len(ng.vertices), dtype=np.int64)
    d = 0
    for s in range(ng.n_stages):
        vs = np.flatnonzero(ev.stage_of == s)
        x[vs] = d
        placed = np.flatnonzero(ev.stage_of <= s)
        if s > 0 and d + 1 < ev.n and _partial_over(ng, ev, x, placed)[d] > 0:
            d += 1
            x[vs] = d
    return x


def metis_assignment(ng: NeuronGraph, ev: Evaluator, seed: int = 0) -> np.ndarray:
    """METIS k-way (pymetis): vertex weights = FLOPs, target shares by device speed, edge
    weights = bytes between vertices; minimises the edge cut, knows nothing of memory."""
    import pymetis

    V = len(ng.vertices)
    w: dict[tuple[int, int], int] = {}
    cls_to_v = {}
    for k, v in zip(ng.cons_k, ng.cons_v):
        cls_to_v.setdefault(int(k), []).append(int(v))
    for k, vs in cls_to_v.items():
        u = int(ng.cls_prod[k])
        if u < 0:
            continue
        for v in vs:
            a, b = min(u, v), max(u, v)
            w[(a, b)] = w.get((a, b), 0) + int(ng.cls_bytes[k])
    adj: list[list[tuple[int, int]]] = [[] for _ in range(V)]
    for (a, b), wt in w.items():
        adj[a].append((b, wt))
        adj[b].append((a, wt))
    xadj, adjncy, ew = [0], [], []
    for lst in adj:
        for b, wt in sorted(lst):
            adjncy.append(b)
            ew.append(max(1, wt))
        xadj.append(len(adjncy))
    vw = [max(1, int(v.flops)) for v in ng.vertices]
    tp = (ev.speed / ev.speed.sum()).tolist()
    tp[-1] = max(0.0, 1.0 - sum(tp[:-1]))
    opts = pymetis.Options(seed=seed)
    if hasattr(pymetis, "CSRAdjacency"):
        _, parts = pymetis.part_graph(ev.n, pymetis.CSRAdjacency(xadj, adjncy), vweights=vw, eweights=ew, tpwgts=tp,
                                      options=opts)
    else:  # pymetis before 2025
        _, parts = pymetis.part_graph(ev.n, xadj=xadj, adjncy=adjncy, vweights=vw, eweights=ew, tpwgts=tp,
                                      options=opts)
    return np.asarray(parts, dtype=np.int64)


def baseline(graph: LayerGraph, cluster: Cluster, kind: str, *, model: str = "model", grouping="coarse",
             objective: str = "rate", **_) -> Solution:
    """One of the baselines (``metis``, ``per-layer``, ``greedy``) as a Solution; a plan that
    breaks a memory limit is ``infeasible`` with the reason, never repaired."""
    _check(objective)
    t0 = time.perf_counter()
    ng = neuron_graph(graph, grouping)
    ev = Evaluator(ng, cluster)
    f = {"metis": metis_assignment, "per-layer": per_layer_assignment, "greedy": greedy_assignment}
    if kind not in f:
        raise PartoptError(f"unknown DN2PCIoT baseline {kind!r}; baselines: {', '.join(f)}")
    return _result(ng, cluster, f[kind](ng, ev), f"dn2pciot-{kind}", objective, t0, model)


# ---------------------------------------------------------------------------------------
# DN2PCIoT
# ---------------------------------------------------------------------------------------
def _neighbours(ng: NeuronGraph) -> list[set[int]]:
    nb = [set() for _ in ng.vertices]
    for k, v in zip(ng.cons_k, ng.cons_v):
        u = int(ng.cls_prod[k])
        if u >= 0:
            nb[u].add(int(v))
            nb[int(v)].add(u)
    return nb


def improve(ng: NeuronGraph, ev: Evaluator, x: np.ndarray, objective: str = "rate", max_passes: int = 8,
            max_steps: Optional[int] = None) -> np.ndarray:
    """Kernighan-Lin-style passes of single-vertex moves (module doc) from assignment ``x``."""
    x = x.copy()
    nb = _neighbours(ng)
    V = len(ng.vertices)
    steps = max_steps or V

    def score(c: Costs):
        return (int(c.over.sum()),) + c.key(objective)

    cur = score(ev.costs(x))
    for _ in range(max_passes):
        locked = np.zeros(V, dtype=bool)
        y = x.copy()
        best, best_x = cur, None
        y_over = cur[0]
        for _ in range(steps):
            idlest = int(np.argmin(ev.compute_s(y)))
            moves = []
            for v in np.flatnonzero(~locked):
                targets = {int(y[u]) for u in nb[v]} | {idlest}
                targets.discard(int(y[v]))
                moves += [(v, d) for d in targets]
            if not moves:
                break
            priced = ev.move_scores(y, [v for v, _ in moves], [d for _, d in moves], objective)   # all at once
            step_best, move = None, None
            for s, mv in zip(priced, moves):
                if s[0] > y_over:
                    continue      # a move may worsen the objective (to escape), never the memory
                if step_best is None or s < step_best:      # the first of equal moves, in order
                    step_best, move = s, mv
            if move is None:
                break
            y[move[0]] = move[1]
            locked[move[0]] = True
            y_over = step_best[0]
            if step_best < best:
                best, best_x = step_best, y.copy()
        if best_x is None:
            break
        x, cur = best_x, best
    return x


def heuristic(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
              grouping="coarse", objective: str = "rate", max_passes: int = 8) -> Solution:
    """DN2PCIoT (module doc): Kernighan-Lin-style passes from three starts, the best kept."""
    _check(objective, cluster, source)
    t0 = time.perf_counter()
    ng = neuron_graph(graph, grouping)
    ev = Evaluator(ng, cluster)
    best = None
    for start in (packed_assignment, per_layer_assignment, greedy_assignment):
        x = improve(ng, ev, start(ng, ev), objective, max_passes)
        c = ev.costs(x)
        k = (int(c.over.sum()),) + c.key(objective)
        if best is None or k < best[0]:
            best = (k, x)
    return _result(ng, cluster, best[1], "dn2pciot", objective, t0, model)


# ---------------------------------------------------------------------------------------
# Exact model
# ---------------------------------------------------------------------------------------
def stage_reserve(ng: NeuronGraph, ev: "Evaluator", s: int) -> int:
    """Bytes every holder of a vertex of stage ``s`` has alive while the stage runs, besides
    weights, as the memory rows count them: the vertex's own outputs and the classes it reads
    that the model input or stage s - 1 make (received, or its own live outputs of stage s - 1);
    the least of that over the stage's vertices. A holder's weights fit in its memory less this."""
    reads: dict[int, int] = {}
    for k, v in zip(ng.cons_k, ng.cons_v):
        u = int(ng.cls_prod[int(k)])
        if ev.stage_of[int(v)] == s and (u < 0 or ev.stage_of[u] == s - 1):
            reads[int(v)] = reads.get(int(v), 0) + int(ng.cls_bytes[int(k)])
    return min((reads.get(int(v), 0) + int(ev.out[v]) for v in np.flatnonzero(ev.stage_of == s)), default=0)


def layer_cover(ng: NeuronGraph, ev: "Evaluator", s: int) -> int:
    """The fewest devices that can hold stage ``s``'s parameters: the smallest k whose k largest
    rooms (memory less :func:`stage_reserve`, bytes) add up to the bytes of the parameter keys
    the stage's vertices need (each key is held at least once)."""
    keys = {int(kk) for kk, v in zip(ng.hold_k, ng.hold_v) if ev.stage_of[int(v)] == s}
    need = int(sum(ng.key_bytes[kk] for kk in keys))
    reserve = stage_reserve(ng, ev, s)
    total = 0
    for k, cap in enumerate(sorted((int(c) - reserve for c in ev.cap), reverse=True), start=1):
        total += cap
        if total >= need:
            return k
    return len(ev.cap) + 1          # no assignment fits: the memory rows say so


def _holding(b, ng: NeuronGraph, ev: "Evaluator", x: dict) -> dict:
    """Per (stage s, device d), a binary ``w_{s}_{d}`` >= x[v, d] for every vertex v of s: d holds
    some vertex of s (at least; the cuts below only need the lower side). The cover and inflow
    cuts share them."""
    held = {}
    for s in range(ng.n_stages):
        verts = np.flatnonzero(ev.stage_of == s)
        for d in range(ev.n):
            w = held[(s, d)] = b.boolean(f"w_{s}_{d}")
            for v in verts:
                b.at_most(Lin.var(x[(int(v), d)]) + Lin.var(w, -1.0), 0)
    return held


def _cover_cuts(b, ng: NeuronGraph, ev: "Evaluator", x: dict, held: dict, z: dict, q: dict,
                readers: list[list[int]], src: int) -> None:
    """Valid inequalities that survive the LP relaxation (formulations/dn2pciot.tex, "cover
    cuts"). For a stage whose parameters fit on no fewer than k devices and whose every vertex
    reads every class the stage reads (FC layers; convs on the coarse grouping): with ``w[d]``
    = ``held[(s, d)]`` (:func:`_holding`), sum_d cap_d w[d] >= the stage's parameter
    bytes, and z[k, d] >= w[d] - x[u, d] for each class k it reads (u: k's producer), so that
    sum_d z[k, d] >= sum_d w[d] - 1 even at a fractional point; and every receiver of a class
    has a sender: sum_e q[k, e, d] >= z[k, d]."""
    n, V = ev.n, len(ng.vertices)
    for s in range(ng.n_stages):
        verts = [v for v in range(V) if ev.stage_of[v] == s]
        if layer_cover(ng, ev, s) <= 1:
            continue
        ks = sorted({int(k) for k, v in zip(ng.cons_k, ng.cons_v) if ev.stage_of[int(v)] == s})
        if not ks or any(not set(verts) <= set(readers[k]) for k in ks):
            continue
        keys = {int(kk) for kk, v in zip(ng.hold_k, ng.hold_v) if ev.stage_of[int(v)] == s}
        need = float(sum(ng.key_bytes[kk] for kk in keys))
        w = {d: held[(s, d)] for d in range(n)}
        cov = Lin()
        reserve = stage_reserve(ng, ev, s)
        for d in range(n):
            cov = cov + Lin.var(w[d], -float(ev.cap[d] - reserve))
        b.at_most(cov, -need)
        for k in ks:
            u = int(ng.cls_prod[k])
            for d in range(n):
                if (k, d) not in z:
                    continue        # the input, on the source
                e = Lin.var(w[d]) + Lin.var(z[(k, d)], -1.0)
                if u >= 0:
                    e = e + Lin.var(x[(u, d)], -1.0)
                b.at_most(e, 0)
    if q is None:
        return      # a uniform medium: no sender variables (build_model)
    for (k, d), zv in z.items():
        u = int(ng.cls_prod[k])
        if u < 0:
            continue
        e = Lin.var(zv)
        for e_ in range(n):
            if e_ != d:
                e = e + Lin.var(q[(k, e_, d)], -1.0)
        b.at_most(e, 0)


def _key_holders(ng: NeuronGraph) -> dict[int, list[int]]:
    """Per parameter key, the vertices that need it (a conv channel's filter: its tiles; an FC
    vertex's rows: itself alone)."""
    holders: dict[int, list[int]] = {}
    for kk, v in zip(ng.hold_k, ng.hold_v):
        holders.setdefault(int(kk), []).append(int(v))
    return holders


def inflow_floor(ng: NeuronGraph) -> np.ndarray:
    """Per vertex v: the fewest bytes a device other than the source must receive per
    inference if it holds v (formulations/dn2pciot.tex, "inflow cuts"). The device holds some
    set S of vertices with v in it and receives every class a vertex of S reads that S does not
    make (the model input always). Memory aside, the least such bytes over every S is a minimum
    cut (OR-Tools' max flow): a class node joins the source side when a reader does (an arc
    reader -> class that no cut can take), and pays its bytes when its producer does not (arc
    class -> producer, or -> sink for the model input)."""
    from ortools.graph.python import max_flow

    V, K = len(ng.vertices), len(ng.cls_prod)
    big = int(ng.cls_bytes.sum()) + 1          # more than any cut: "infinite"
    src, sink = V + K, V + K + 1               # nodes: vertices 0..V-1, classes V..V+K-1
    mf = max_flow.SimpleMaxFlow()
    for k in range(K):
        u = int(ng.cls_prod[k])
        mf.add_arc_with_capacity(V + k, u if u >= 0 else sink, int(ng.cls_bytes[k]))
    for k, v in zip(ng.cons_k, ng.cons_v):
        mf.add_arc_with_capacity(int(v), V + int(k), big)
    entry = [mf.add_arc_with_capacity(src, v, 0) for v in range(V)]
    floor = np.zeros(V)
    for v in range(V):
        mf.set_arc_capacity(entry[v], big)
        if mf.solve(src, sink) != mf.OPTIMAL:
            raise SolverError("OR-Tools max flow failed on the inflow floor's cut")
        floor[v] = mf.optimal_flow()
        mf.set_arc_capacity(entry[v], 0)
    return floor


def private_counts(ng: NeuronGraph, ev: "Evaluator", s: int) -> Optional[list[int]]:
    """For a stage whose vertices carry only their own parameter keys (FC rows), per device: how
    many of the stage's lightest vertices fit in its memory less :func:`stage_reserve` (bytes), so
    that no device holds more of them (a Chvatal-Gomory rounding of the memory row); None for a
    stage with a key that two vertices share (a conv channel's filter)."""
    verts = [int(v) for v in np.flatnonzero(ev.stage_of == s)]
    private: dict[int, int] = {}        # vertex -> bytes of the keys it alone holds
    for kk, vs in _key_holders(ng).items():
        if any(ev.stage_of[v] == s for v in vs):
            if len(vs) > 1:
                return None
            private[vs[0]] = private.get(vs[0], 0) + int(ng.key_bytes[kk])
    if not verts or any(v not in private for v in verts):
        return None
    sizes = sorted(private[v] for v in verts)
    reserve = stage_reserve(ng, ev, s)
    counts = []
    for d in range(ev.n):
        room, cnt = int(ev.cap[d]) - reserve, 0
        while cnt < len(sizes) and room >= sizes[cnt]:
            room -= sizes[cnt]
            cnt += 1
        counts.append(cnt)
    return counts


def source_count_floor(ng: NeuronGraph, ev: "Evaluator", s: int, src: int = 0) -> Optional[list[float]]:
    """For a stage with :func:`private_counts`: entry g (g = 0 .. the source's count) is the
    fewest devices other than the source that hold a vertex of the stage when the source holds
    g of them: the fewest whose counts add up to the other ``|V_s| - g`` (``inf``: none can).
    None for other stages. It falls only where g crosses a threshold, and the exact model states
    that step with one binary per threshold (:func:`_source_count_cuts`)."""
    counts = private_counts(ng, ev, s)
    if counts is None:
        return None
    total = int((ev.stage_of == s).sum())
    others = np.cumsum(sorted((c for d, c in enumerate(counts) if d != src), reverse=True))
    floor: list[float] = []
    for g in range(min(counts[src], total) + 1):
        rest = total - g
        floor.append(0 if rest <= 0 else (int(np.searchsorted(others, rest)) + 1 if others.size and
                                          others[-1] >= rest else math.inf))
    return floor


def _source_count_cuts(b, ng: NeuronGraph, ev: "Evaluator", x: dict, held: dict, src: int) -> None:
    """Valid inequalities on how many devices besides the source hold an FC layer
    (formulations/dn2pciot.tex, "source-count cuts"). With g the layer's vertices on the source
    and f = :func:`source_count_floor`: g >= the least g with f finite, and for each threshold t
    where f falls, a binary ``sc_{s}_{t}`` with t * sc <= g <= t - 1 + (g_max - t + 1) * sc (it is
    1 exactly when g >= t); then sum_{d != source} w[s, d] >= f(g_min) - sum_t (f(t - 1) - f(t)) sc_t.
    A fractional point can split the layer's count between the source and the others at no
    cost; these rows make the source's share a decision the solver branches on once."""
    for s in range(ng.n_stages):
        floor = source_count_floor(ng, ev, s, src)
        if floor is None:
            continue
        finite = [g for g, f in enumerate(floor) if f != math.inf]
        if not finite:
            continue        # no assignment fits: the memory rows say so
        g_min, g_max = finite[0], len(floor) - 1
        count = Lin()
        for v in np.flatnonzero(ev.stage_of == s):
            count = count + Lin.var(x[(int(v), src)])
        if g_min > 0:
            b.at_most(count.scaled(-1.0), -float(g_min))
        holders = Lin()
        for d in range(ev.n):
            if d != src:
                holders = holders + Lin.var(held[(s, d)], -1.0)
        for t in range(g_min + 1, g_max + 1):
            drop = floor[t - 1] - floor[t]
            if drop <= 0:
                continue
            sc = b.boolean(f"sc_{s}_{t}")
            b.at_most(count.scaled(-1.0) + Lin.var(sc, float(t)), 0)
            b.at_most(count + Lin.var(sc, -float(g_max - t + 1)), float(t - 1))
            holders = holders + Lin.var(sc, -float(drop))
        if floor[g_min] > 0:
            b.at_most(holders, -float(floor[g_min]))


def _inflow_cuts(b, ng: NeuronGraph, ev: "Evaluator", x: dict, held: dict, z: dict, src: int) -> None:
    """Valid inequalities on what a device receives (formulations/dn2pciot.tex, "inflow
    cuts"). Per stage s and device d, with ``w[d]`` = ``held[(s, d)]`` (:func:`_holding`):
    (i) a device other than the source that holds a vertex of s receives at least the least
    :func:`inflow_floor` over s: sum_k bytes_k z[k, d] >= floor_s w[d]; (ii) where the stage's
    vertices carry their own weights (FC rows), a device holds no more of them than the
    smallest ones that fit beside :func:`stage_reserve`: sum_v x[v, d] <= count w[d]; and the
    stage's parameters need the covering devices: sum_d w[d] >= :func:`layer_cover`."""
    n, V = ev.n, len(ng.vertices)
    floor = inflow_floor(ng)
    received = {d: Lin() for d in range(n)}      # bytes device d receives: sum_k bytes_k z[k, d]
    for (k, d), zv in z.items():
        received[d] = received[d] + Lin.var(zv, float(ng.cls_bytes[k]))
    for s in range(ng.n_stages):
        verts = [v for v in range(V) if ev.stage_of[v] == s]
        w = {d: held[(s, d)] for d in range(n)}
        fs = float(min(floor[v] for v in verts))
        if fs > 0:
            for d in range(n):
                if d != src:
                    b.at_most(Lin.var(w[d], fs) + received[d].scaled(-1.0), 0)
        counts = private_counts(ng, ev, s)
        if counts is not None:
            for d in range(n):
                if counts[d] < len(verts):
                    e = Lin.var(w[d], -float(counts[d]))
                    for v in verts:
                        e = e + Lin.var(x[(v, d)])
                    b.at_most(e, 0)
        cov = layer_cover(ng, ev, s)
        if 1 < cov <= n:
            e = Lin()
            for d in range(n):
                e = e + Lin.var(w[d], -1.0)
            b.at_most(e, -float(cov))


def excludes(ng: NeuronGraph, ev: "Evaluator", s: int, t: int) -> bool:
    """True when no device can hold every vertex of stage ``t`` and a vertex of stage ``s``: the
    parameter bytes of all of t, plus the fewest bytes of keys a vertex of s adds to them, plus
    :func:`stage_reserve` of t, exceed every device's memory (bytes)."""
    keys_t = {int(kk) for kk, v in zip(ng.hold_k, ng.hold_v) if ev.stage_of[int(v)] == t}
    own: dict[int, set] = {}
    for kk, v in zip(ng.hold_k, ng.hold_v):
        if ev.stage_of[int(v)] == s:
            own.setdefault(int(v), set()).add(int(kk))
    verts_s = [int(v) for v in np.flatnonzero(ev.stage_of == s)]
    extra = min(sum(int(ng.key_bytes[kk]) for kk in own.get(v, set()) - keys_t) for v in verts_s)
    need = int(sum(ng.key_bytes[kk] for kk in keys_t)) + extra + stage_reserve(ng, ev, t)
    return bool((need > ev.cap).all())


def phase_floor(ng: NeuronGraph, ev: "Evaluator", s: int, t: int) -> Optional[tuple[int, float]]:
    """For stages s and t where every vertex of t reads every class of s and every vertex of s
    makes one (:func:`_product_cuts`): the fewest messages and the fewest bytes of s's classes
    that t's phase carries, over every a >= :func:`layer_cover` of s holders and b >= that of t
    holders. a * b - min(a, b) messages and (b - 1) * the classes' bytes in general; when one
    device holding all of t cannot also hold a vertex of s (:func:`excludes`), b = 1 means a
    messages and all the classes' bytes. None when no assignment fits."""
    ka, kb = layer_cover(ng, ev, s), layer_cover(ng, ev, t)
    if ka > ev.n or kb > ev.n:
        return None
    total = float(sum(ng.cls_bytes[k] for k in range(len(ng.cls_prod))
                      if int(ng.cls_prod[k]) >= 0 and ev.stage_of[int(ng.cls_prod[k])] == s))
    apart = kb == 1 and excludes(ng, ev, s, t)
    counts, needs = [], []
    for a in range(ka, ev.n + 1):
        for b in range(kb, ev.n + 1):
            if b == 1 and apart:
                counts.append(a), needs.append(total)
            else:
                counts.append(a * b - min(a, b)), needs.append((b - 1) * total)
    return min(counts), min(needs)


def _product_cuts(b, ng: NeuronGraph, ev: "Evaluator", m: dict, q: dict, readers: list[list[int]],
                  held: dict) -> None:
    """Valid inequalities on the messages between two stages (formulations/dn2pciot.tex,
    "product cuts"). Where every vertex of stage t reads every class of stage s, each device
    holding a vertex of s sends to each other device holding a vertex of t: pairwise,
    m[t, d, e] >= w[s, d] + w[t, e] - 1 (``held``, :func:`_holding`); and with a and b such
    devices the phase carries at least ``a * b - min(a, b)`` messages, and each of the b
    receivers lacks every class but those it makes: at least ``(b - 1)`` times the classes'
    bytes; more where a sole holder of t cannot hold a vertex of s. a and b are at least the
    stages' covers (:func:`layer_cover`); :func:`phase_floor` takes the least over them. ``q``:
    (class, sender, receiver) -> the 0/1 variable "sent" (sender None on a uniform medium)."""
    V = len(ng.vertices)
    produced: dict[int, list[int]] = {}
    for k, u in enumerate(ng.cls_prod):
        if int(u) >= 0:
            produced.setdefault(int(ev.stage_of[int(u)]), []).append(k)
    for s, ks in produced.items():
        phases = {int(ng.cls_stage[k]) for k in ks}
        if len(phases) != 1:
            continue
        t = phases.pop()
        verts_t = {v for v in range(V) if ev.stage_of[v] == t}
        if not verts_t or any(not verts_t <= set(readers[k]) for k in ks):
            continue
        if {int(ng.cls_prod[k]) for k in ks} != {v for v in range(V) if ev.stage_of[v] == s}:
            continue        # a vertex of s whose outputs no one reads (a pool's dropped edge) sends nothing
        floor = phase_floor(ng, ev, s, t)
        if floor is None:
            continue        # no assignment fits: the memory rows say so
        count, need = floor
        for d in range(ev.n):         # the pairwise form: d holds a vertex of s, e_ one of t
            for e_ in range(ev.n):
                if d != e_ and (t, d, e_) in m:
                    b.at_most(Lin.var(held[(s, d)]) + Lin.var(held[(t, e_)]) + Lin.var(m[(t, d, e_)], -1.0), 1)
        if count > 0:
            e = Lin()
            for (ph, _, _), mv in m.items():
                if ph == t:
                    e = e + Lin.var(mv, -1.0)
            b.at_most(e, -float(count))
        if need > 0:
            e = Lin()
            kset = set(ks)
            for (k, _, _), qv in q.items():
                if k in kset:
                    e = e + Lin.var(qv, -float(ng.cls_bytes[k]))
            b.at_most(e, -need)


def build_model(ng: NeuronGraph, cluster: Cluster, solver: str = "highs", objective: str = "rate",
                symmetry: bool = True, cover: bool = True):
    """The exact model (module doc; formulations/dn2pciot.tex). Returns (builder, x names).
    ``cover``: add the cover, product, inflow and source-count cuts (:func:`_cover_cuts`,
    :func:`_product_cuts`, :func:`_inflow_cuts`, :func:`_source_count_cuts`; valid for every
    assignment)."""
    _check(objective)
    ev = Evaluator(ng, cluster)
    n, V, S, src = ev.n, len(ng.vertices), ng.n_stages, 0
    lat = cluster.latency_s
    horizon = float(ev.secs.max(axis=1).sum() + S * cluster.stage_overhead_s + (ng.cls_bytes.sum() * n + ev.out.sum()) * ev.inv_bw.max()
                    + lat * (S + 1) * n * n) + 1.0
    b = builder(solver, horizon)
    x = {(v, d): b.boolean(f"x_{v}_{d}") for v in range(V) for d in range(n)}
    for v in range(V):
        e = Lin()
        for d in range(n):
            e = e + Lin.var(x[(v, d)])
        b.equal(e, 1)
    K = len(ng.cls_prod)
    readers: list[list[int]] = [[] for _ in range(K)]
    for k, v in zip(ng.cons_k, ng.cons_v):
        readers[int(k)].append(int(v))
    z = {}
    for k in range(K):
        u = int(ng.cls_prod[k])
        for d in range(n):
            if u < 0 and d == src:
                continue          # the input is on the source
            z[(k, d)] = b.boolean(f"z_{k}_{d}")
            for v in readers[k]:
                e = Lin.var(x[(v, d)]) + Lin.var(z[(k, d)], -1.0)
                if u >= 0:
                    e = e + Lin.var(x[(u, d)], -1.0)
                b.at_most(e, 0)
    # sender of each class to each receiver: product variables q, needed where a byte's cost
    # depends on its link (a mesh, or a shared medium whose links differ in speed); on a uniform
    # shared medium a byte costs the same from any sender, so d receiving class k is z[k, d] itself
    # (``uniform_medium``) and the messages are stated without q
    uniform = uniform_medium(cluster)
    q = {}
    for (k, d), zv in z.items():
        u = int(ng.cls_prod[k])
        for e_ in range(n):
            if e_ == d:
                continue
            if u < 0:
                if e_ == src:
                    q[(k, e_, d)] = zv
                continue
            if uniform:
                continue
            qv = b.boolean(f"q_{k}_{e_}_{d}")
            b.at_most(Lin.var(zv) + Lin.var(x[(u, e_)]) + Lin.var(qv, -1.0), 1)
            q[(k, e_, d)] = qv
    # what each receiver is sent, (class, sender or None on a uniform medium, receiver) -> 0/1
    sent = {(k, None, d): zv for (k, d), zv in z.items()} if uniform else q
    if cover:
        held = _holding(b, ng, ev, x)
        _cover_cuts(b, ng, ev, x, held, z, None if uniform else q, readers, src)
        _inflow_cuts(b, ng, ev, x, held, z, src)
        _source_count_cuts(b, ng, ev, x, held, src)
    last = [int(v) for v in ev.last]
    # messages per (phase, sender, receiver)
    m = {}
    for (k, d), zv in z.items():
        u, s = int(ng.cls_prod[k]), int(ng.cls_stage[k])
        for e_ in range(n):
            if e_ == d or (u < 0 and e_ != src):
                continue
            if (s, e_, d) not in m:
                m[(s, e_, d)] = b.boolean(f"m_{s}_{e_}_{d}")
            if (k, e_, d) in q:       # m >= q, or where there is no q, m >= z[k, d] + x[u, e_] - 1
                b.at_most(Lin.var(q[(k, e_, d)]) + Lin.var(m[(s, e_, d)], -1.0), 0)
            else:
                b.at_most(Lin.var(zv) + Lin.var(x[(u, e_)]) + Lin.var(m[(s, e_, d)], -1.0), 1)
    for e_ in range(n):
        if e_ == src:
            continue
        m[(S, e_, src)] = b.boolean(f"m_{S}_{e_}_{src}")
        for v in last:
            b.at_most(Lin.var(x[(v, e_)]) + Lin.var(m[(S, e_, src)], -1.0), 0)

    if cover:
        _product_cuts(b, ng, ev, m, sent, readers, held)
        # a device that lacks a class it needs receives it in one message at least
        for (k, d), zv in z.items():
            if int(ng.cls_prod[k]) >= 0:
                e = Lin.var(zv)
                for e_ in range(n):
                    if e_ != d:
                        e = e + Lin.var(m[(int(ng.cls_stage[k]), e_, d)], -1.0)
                b.at_most(e, 0)

    def link_terms():
        """(sender, receiver, seconds) of everything that keeps a link busy per inference: each
        message's latency, each class's bytes (sender None on a uniform medium, where every link
        costs the same), the last layer's outputs sent to the source."""
        for (_, a, c), mv in m.items():
            yield a, c, Lin.var(mv, lat)
        for (k, a, c), qv in sent.items():
            yield a, c, Lin.var(qv, float(ng.cls_bytes[k]) * (uniform if a is None else ev.inv_bw[a, c]))
        for v in last:
            for e_ in range(n):
                if e_ != src:
                    yield e_, src, Lin.var(x[(v, e_)], float(ev.out[v]) * ev.inv_bw[e_, src])

    comm = Lin()
    for (k, e_, d), qv in sent.items():
        comm = comm + Lin.var(qv, float(ng.cls_bytes[k]))
    for v in last:
        for e_ in range(n):
            if e_ != src:
                comm = comm + Lin.var(x[(v, e_)], float(ev.out[v]))
    if objective == "rate":
        B = b.time("bottleneck")
        for d in range(n):
            ex = Lin()
            for v in range(V):
                ex = ex + Lin.var(x[(v, d)], float(ev.secs[v, d]))
            if cluster.stage_overhead_s:     # u: d computes in stage s (pays the stage overhead once)
                for s_ in range(S):
                    u = b.boolean(f"u_{s_}_{d}")
                    for v in np.flatnonzero(ev.stage_of == s_):
                        b.at_most(Lin.var(x[(int(v), d)]) + Lin.var(u, -1.0), 0)
                    ex = ex + Lin.var(u, cluster.stage_overhead_s)
            b.at_least(B, ex)
        if cluster.link == "shared":      # one channel: every link's time, summed
            tot = Lin()
            for _, _, term in link_terms():
                tot = tot + term
            b.at_least(B, tot)
        else:                             # a mesh: each link on its own
            busy = {(e_, d): Lin() for e_ in range(n) for d in range(n) if e_ != d}
            for a, c, term in link_terms():
                busy[(a, c)] = busy[(a, c)] + term
            for ex in busy.values():
                b.at_least(B, ex)
        b.minimize(B)
    else:
        C = b.quantity("comm_bytes", float(ng.cls_bytes.sum() * n + ev.out.sum()))
        b.at_most(comm + Lin.var(C, -1.0), 0)
        b.minimize(C)
    # memory, as evaluate: weights held + (live + received + outputs + working set) per stage
    keyholders = _key_holders(ng)
    for d in range(n):
        wsum = Lin()
        for kk, vs in keyholders.items():
            if len(vs) == 1:
                wsum = wsum + Lin.var(x[(vs[0], d)], float(ng.key_bytes[kk]))
                continue
            hv = b.boolean(f"h_{kk}_{d}")
            for v in vs:
                b.at_most(Lin.var(x[(v, d)]) + Lin.var(hv, -1.0), 0)
            wsum = wsum + Lin.var(hv, float(ng.key_bytes[kk]))
        cap = float(ev.cap[d])
        for s in range(S):
            vs = [v for v in range(V) if ev.stage_of[v] == s]
            act = Lin()
            for v in vs:
                act = act + Lin.var(x[(v, d)], float(ev.out[v]))
            if s > 0:
                for v in (v for v in range(V) if ev.stage_of[v] == s - 1):
                    act = act + Lin.var(x[(v, d)], float(ev.out[v]))
            elif d == src:
                act = act + float(ng.input_bytes)
            for (k, dd), zv in z.items():
                if dd == d and int(ng.cls_stage[k]) == s:
                    act = act + Lin.var(zv, float(ng.cls_bytes[k]))
            if any(ev.work[v] for v in vs):
                wv = b.quantity(f"work_{s}_{d}", float(max(ev.work[v] for v in vs)))
                for v in vs:
                    if ev.work[v]:
                        b.at_most(Lin.var(x[(v, d)], float(ev.work[v])) + Lin.var(wv, -1.0), 0)
                act = act + Lin.var(wv)
            b.at_most(wsum + act, cap)
        if d == src:
            fin = Lin()
            for v in last:
                fin = fin + Lin.of(float(ev.out[v]))
            b.at_most(wsum + fin, cap)
    if symmetry:
        devs = cluster.devices
        for d in range(1, n - 1):
            if interchangeable(cluster, devs[d].name, devs[d + 1].name):
                ex = Lin()
                for v in range(V):
                    ex = ex + Lin.var(x[(v, d + 1)], float(ev.flops[v])) + Lin.var(x[(v, d)], -float(ev.flops[v]))
                b.at_most(ex, 0)
    return b, x


def uniform_medium(cluster: Cluster) -> float:
    """Seconds per byte of a shared medium on which every link has the same bandwidth, else 0
    (a mesh, or links of different speeds): then a byte costs the same whoever sends it."""
    if cluster.link != "shared":
        return 0.0
    names = cluster.names
    rates = {cluster.bw(a, c) for a in names for c in names if a != c}
    return 1.0 / rates.pop() if len(rates) == 1 else 0.0


def interchangeable(cluster: Cluster, a: str, c: str) -> bool:
    """True when swapping devices ``a`` and ``c`` maps every plan to one with the same costs:
    the same rates, memory and links to every other device in both directions, and the link
    between them as fast both ways. Only then may the exact model order their loads."""
    da, dc = cluster.device(a), cluster.device(c)
    same_device = (da.flops_per_s, da.flops_per_s_by_kind, da.memory_bytes) == \
        (dc.flops_per_s, dc.flops_per_s_by_kind, dc.memory_bytes)
    same_links = all(cluster.bw(a, o) == cluster.bw(c, o) and cluster.bw(o, a) == cluster.bw(o, c)
                     for o in cluster.names if o not in (a, c))
    return same_device and same_links and cluster.bw(a, c) == cluster.bw(c, a)


def symmetry_order(cluster: Cluster, ev: "Evaluator", x: np.ndarray) -> np.ndarray:
    """``x`` (vertex -> device index) with its devices relabelled so that it meets the exact
    model's symmetry rows: within each run of consecutive interchangeable non-source devices
    (:func:`interchangeable`), compute loads (FLOPs) non-increasing. Only interchangeable
    devices trade labels, so every cost :class:`Evaluator` gives is unchanged. A solver's hint
    that broke those rows would be repaired or dropped; this one is kept as given."""
    x = np.asarray(x, dtype=np.int64)
    names = cluster.names
    load = np.bincount(x, weights=ev.flops, minlength=ev.n)
    new = np.arange(ev.n)
    d = 1
    while d < ev.n:
        end = d
        while end + 1 < ev.n and interchangeable(cluster, names[end], names[end + 1]):
            end += 1
        run = list(range(d, end + 1))
        for pos, old in zip(run, sorted(run, key=lambda a: -load[a])):
            new[old] = pos
        d = end + 1
    return new[x]


def model(graph: LayerGraph, cluster: Cluster, *, solver: str = "highs", grouping="coarse", objective: str = "rate"):
    """The exact model itself (a PuLP ``LpProblem`` or a CP-SAT ``CpModel``), for export
    (:func:`partopt.solvers.export_model`)."""
    b, _ = build_model(neuron_graph(graph, grouping), cluster, solver, objective)
    return b.prob if hasattr(b, "prob") else b.model


def exact(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
          solver: str = "highs", time_limit: Optional[float] = 60.0, threads: Optional[int] = None,
          grouping="coarse", objective: str = "rate", symmetry: bool = True, cover: bool = True) -> Solution:
    """The optimal assignment (module doc) on ``solver``; ``feasible`` with the proven bound at
    the time limit; ``infeasible`` when no assignment fits memory. ``cover``: the cover, product
    and inflow cuts (:func:`build_model`). ``threads``: the solver's threads; CP-SAT's default is
    :data:`~partopt.solvers.CPSAT_PORTFOLIO_WORKERS` workers (its full portfolio) or one per core
    if more."""
    _check(objective, cluster, source)
    if solver == "cpsat" and threads is None:
        threads = max(CPSAT_PORTFOLIO_WORKERS, os.cpu_count() or 1)
    t0 = time.perf_counter()
    ng = neuron_graph(graph, grouping)
    ev = Evaluator(ng, cluster)
    n = len(cluster.devices)
    h = heuristic(graph, cluster, model=model, grouping=grouping, objective=objective)
    hx = np.asarray(h.plan.meta["assignment"], dtype=np.int64)
    b, x = build_model(ng, cluster, solver, objective, symmetry, cover)
    if h.feasible:   # the solvers start from it, relabelled to meet the symmetry rows
        if symmetry:
            hx = symmetry_order(cluster, ev, hx)
        for v in range(len(ng.vertices)):
            for d in range(n):
                b.hint(x[(v, d)], int(hx[v] == d))
    r = b.solve(solver, time_limit=time_limit, threads=threads)
    if r.status == "infeasible" and not h.feasible:
        return Solution(None, "infeasible", "dn2pciot", mode="exact", solve_s=time.perf_counter() - t0, solver=solver,
                        reason="no assignment of the neurons fits every device's memory (proven)")
    if r.status == "infeasible":        # the heuristic's assignment fits: the solver is wrong (numerics)
        sol = _result(ng, cluster, hx, "dn2pciot", objective, t0, model, status="feasible", mode="exact",
                      solver=solver)
        sol.reason = "the solver reported infeasible, but the heuristic's assignment fits memory; not proven"
        return sol
    cands = [hx] if h.feasible else []
    if r.status != "no_solution":
        cands.append(np.array([max(range(n), key=lambda d: b.value(x[(v, d)])) for v in range(len(ng.vertices))]))
    if not cands:
        h.mode, h.solver, h.bound, h.status = "exact", solver, r.bound, "infeasible"
        h.reason = ("the solver found no assignment within the time limit and the heuristic's breaks memory: "
                    + h.reason)
        return h
    # the better of the solver's incumbent and the heuristic's plan (both priced by evaluate)
    best = min(cands, key=lambda a: (not ev.costs(a).valid,) + ev.costs(a).key(objective))
    status = "optimal" if r.status == "optimal" else "feasible"
    reason = ""
    if status == "optimal" and len(cands) == 2 and ev.costs(cands[0]).valid and \
            ev.costs(cands[0]).key(objective)[0] < ev.costs(cands[1]).key(objective)[0] * (1 - 1e-9):
        # the heuristic's assignment beats the solver's "optimal" one: the proof is wrong (numerics)
        status, reason = "feasible", "the solver reported optimal but the heuristic's assignment is better; not proven"
    sol = _result(ng, cluster, best, "dn2pciot", objective, t0, model, status=status, mode="exact", solver=solver,
                  bound=None if reason else r.bound)
    if reason:
        sol.reason = reason
    if sol.feasible and r.bound is not None and sol.objective:
        sol.gap = max(0.0, (sol.objective - r.bound) / sol.objective)
    if sol.plan is not None:
        sol.plan.meta["model_objective"] = r.objective
    return sol


def brute_force(graph: LayerGraph, cluster: Cluster, *, grouping="coarse", objective: str = "rate",
                limit: int = 200000) -> tuple[Optional[np.ndarray], Optional[tuple]]:
    """The best valid assignment by enumeration (tiny graphs): (assignment, its key) or (None, None)."""
    import itertools

    ng = neuron_graph(graph, grouping)
    ev = Evaluator(ng, cluster)
    V, n = len(ng.vertices), ev.n
    if n ** V > limit:
        raise SolverError(f"brute force would evaluate {n ** V} assignments (limit {limit})")
    best, best_key = None, None
    for t in itertools.product(range(n), repeat=V):
        x = np.array(t, dtype=np.int64)
        c = ev.costs(x)
        if c.valid and (best_key is None or c.key(objective) < best_key):
            best, best_key = x, c.key(objective)
    return best, best_key


def _baseline(kind: str):
    def run(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
            grouping="coarse", objective: str = "rate") -> Solution:
        return baseline(graph, cluster, kind, model=model, grouping=grouping, objective=objective)
    run.__doc__ = f"The {kind} baseline of DN2PCIoT (see :func:`baseline`)."
    return run


metis = _baseline("metis")
per_layer = _baseline("per-layer")
greedy = _baseline("greedy")
