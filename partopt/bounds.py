"""A lower bound on the latency of **every** plan partopt can express that fits memory (seconds).

These facts hold for any plan on any cluster, whatever its stages, tasks and transfers:

1. **Necessary work.** Every output element the model's output depends on must be computed by
   some device at least once. :func:`necessary_flops` walks the graph backwards from the whole
   output and keeps, per op, the rows and columns some needed element reads (exact taps, so a
   stride-2 1x1 conv needs every other row and a dilated kernel only its taps). Its FLOPs,
   :func:`partopt.cost.region_flops` of those elements, are at most the FLOPs of any plan
   (fused cones recompute more, partial sums split a conv's FLOPs exactly).
2. **Nothing computes before data arrives.** A device other than the source holds no data
   until a first message reaches it, and a message takes at least ``latency_s`` plus one
   element's bytes over its link. On a mesh a device's first data arrives no earlier than the
   shortest such path from the source (:func:`earliest_arrivals`); on a shared medium one
   message is served at a time, so the k-th device to receive anything gets it no earlier than
   k messages after the start, and the bound gives the earliest slots to the fastest devices.
3. **Results reach the sink.** What a device other than the sink computes of the necessary
   work must leave it: after its last such task at least one more message (one element) goes
   out, on a mesh along the fastest path to the sink (:func:`latest_departures`), on a shared
   medium in a slot of its own, so the j-th last device to send finishes at least j messages
   before the end (the latest slots go to the fastest devices).

4. **The weights must fit.** Every needed output channel of an op with parameters is computed,
   over all its input channels, by some device, and a device holds the parameters of every
   (output, input) channel pair it computes, summed over the plan (:func:`partopt.cost.weight_bytes`,
   the memory rule of :func:`partopt.plan.evaluate`). So the devices that compute hold
   :func:`necessary_weight_bytes` between them, each within its ``memory_bytes`` (the source's
   less the input, which it holds at the start). Where no single device has that room, more
   devices must compute, and each computing device other than the source must receive data and
   send results (:func:`memory_seconds`).

With ``a_d`` the earliest start of device d, ``e_d`` the time it must leave at the end, ``o``
the cluster's per-task overhead and ``f_d`` its FLOP/s, a plan of latency T computes at most
``sum_d f_d * max(0, T - a_d - e_d - o)`` FLOPs, so T is at least the smallest T at which that
reaches the necessary work (:func:`lower_bound`).
Without communication this is total FLOPs / total FLOP/s. Where devices have rates per op kind,
the same statement is a small LP over how much of each kind's necessary work each device does.

The bound of a plan that fits memory is the larger of that and the memory term (fact 4); a
plan over memory is no plan, and may beat it.

What it misses (why a ratio above ~2 is common): the halo and activation bytes a split must
move (only one element per device is charged, in and out), the activations in memory and
which layer's weights a device can hold (only the total is counted, and a device that holds
little still counts its full speed), and the per-layer barriers that the list schedule imposes.

Example:
    >>> from partopt.cluster import preset
    >>> from partopt.graph import LayerGraph
    >>> from partopt.zoo import example_input, load_model
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> lb = lower_bound(g, preset("pi4x4"))
    >>> lb.necessary_flops == g.total_flops, lb.seconds <= g.total_flops / 8e9
    (True, True)
"""
from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from typing import Optional

from .cluster import Cluster
from .cost import deconv_flops, rate_kind, region_flops, weight_bytes
from .geometry import Box, bilinear_source_1d, deconv_taps_1d
from .graph import LayerGraph, Op
from .plan import FLOAT_BYTES

_WINDOWED = ("conv", "maxpool", "avgpool")


def _taps(op: Op, axis: int, index: int, size_in: int) -> range | list[int]:
    """Input indices along ``axis`` (0: rows, 1: columns) that output index ``index`` of a
    windowed op reads (exact taps: dilation leaves gaps), clipped to the input."""
    box = Box(0, 1, index, index + 1, 0, 1) if axis == 0 else Box(0, 1, 0, 1, index, index + 1)
    win = op.input_windows(box)[0]
    lo, hi = (win.h0, win.h1) if axis == 0 else (win.w0, win.w1)
    step = op.dilation[axis] if op.kind in _WINDOWED else 1
    return [i for i in range(lo, hi, step) if 0 <= i < size_in]


def necessary_elements(graph: LayerGraph) -> dict[str, tuple[set[int], set[int]]]:
    """Per op, the (rows, columns) of its output that the model's whole output depends on
    (every channel: each op partopt supports reads all channels of a needed position)."""
    _, h, w = graph.tensor_chw(graph.output)
    need: dict[str, tuple[set[int], set[int]]] = {graph.output: (set(range(h)), set(range(w)))}
    for op in reversed(graph.ops):
        if op.name not in need:
            continue
        rows, cols = need[op.name]
        for inp, shape in zip(op.inputs, op.in_shapes):
            if inp == graph.input_name:
                continue
            _, ih, iw = graph.tensor_chw(inp)
            _, oh, ow = op.out_chw
            if op.kind in ("flatten", "linear"):
                r_in, c_in = set(range(ih)), set(range(iw))
            elif op.kind in _WINDOWED or op.kind == "adaptive_avgpool":
                r_in = {i for r in rows for i in _taps(op, 0, r, ih)}
                c_in = {j for c in cols for j in _taps(op, 1, c, iw)}
            elif op.kind == "deconv":
                r_in = {i for r in rows for i in deconv_taps_1d(r, op.kernel[0], op.stride[0], op.padding[0],
                                                                op.dilation[0], ih)}
                c_in = {j for c in cols for j in deconv_taps_1d(c, op.kernel[1], op.stride[1], op.padding[1],
                                                                op.dilation[1], iw)}
            elif op.kind == "upsample":
                r_in = {i for r in rows for i in _upsample_taps(op, 0, r, ih)}
                c_in = {j for c in cols for j in _upsample_taps(op, 1, c, iw)}
            elif op.kind == "pad":
                left, _, top, _ = op.pads
                r_in = {r - top for r in rows if 0 <= r - top < ih}
                c_in = {c - left for c in cols if 0 <= c - left < iw}
            elif (ih, iw) == (1, 1) and (oh, ow) != (1, 1):     # a broadcast [N, C, 1, 1] operand
                r_in, c_in = {0}, {0}
            else:   # element-wise, add, mul, concat, slice, shuffle: the same positions
                r_in, c_in = set(rows), set(cols)
            old = need.get(inp, (set(), set()))
            need[inp] = (old[0] | r_in, old[1] | c_in)
    return need


def _upsample_taps(op: Op, axis: int, index: int, size_in: int) -> set[int]:
    """Input indices upsampling output index ``index`` reads along ``axis``."""
    s = op.scale[axis]
    if op.mode == "nearest":
        return {index // s}
    i0, i1, _ = bilinear_source_1d(index, s, size_in)
    return {i0, i1}


def needed_channels(graph: LayerGraph, name: str) -> int:
    """How many of ``name``'s output channels some consumer reads: all of them, unless every
    consumer is a channel slice (chunk/split) and the slices leave some out."""
    c = graph.op[name].out_chw[0]
    cons = [graph.op[n] for n in graph.consumers[name] if n in graph.op]
    if name == graph.output or not cons or any(o.kind != "slice" for o in cons):
        return c
    return len({ch for o in cons for ch in range(o.offset, o.offset + o.out_chw[0])})


def necessary_flops(graph: LayerGraph) -> int:
    """FLOPs every plan must spend: :func:`partopt.cost.region_flops` of the needed elements
    (every needed channel; a channel's cost is the same for each channel of an op)."""
    return sum(necessary_flops_by_kind(graph).values())


def necessary_flops_by_kind(graph: LayerGraph) -> dict[str, int]:
    """:func:`necessary_flops` per rate kind (:func:`partopt.cost.rate_kind`)."""
    out: dict[str, int] = {}
    for name, (rows, cols) in necessary_elements(graph).items():
        op = graph.op[name]
        c = needed_channels(graph, name)
        if op.kind == "adaptive_avgpool":   # a position's cost depends on its window
            f = sum(region_flops(op, Box(0, c, r, r + 1, q, q + 1)) for r in rows for q in cols)
        elif op.kind == "deconv":           # ... on its taps, a row's times a column's
            f = deconv_flops(op, rows, cols, c)
        else:
            f = region_flops(op, Box(0, c, 0, 1, 0, 1)) * len(rows) * len(cols)
        if f:
            k = rate_kind(op)
            out[k] = out.get(k, 0) + f
    return out


def necessary_weight_bytes(graph: LayerGraph) -> int:
    """Bytes of parameters the devices of every plan hold between them (module doc, fact 4): each
    op whose output some needed element reads, its needed output channels' parameters over all
    its input channels (:func:`partopt.cost.weight_bytes`; the whole op where every channel is
    needed)."""
    total = 0
    for name in necessary_elements(graph):
        op = graph.op[name]
        if op.param_bytes:
            total += weight_bytes(op, [(0, needed_channels(graph, name), 0, op.in_chw[0])])
    return total


def memory_seconds(graph: LayerGraph, cluster: Cluster, source: str, ready: dict[str, float],
                   weights: int, sink: Optional[str] = None) -> tuple[float, bool]:
    """Fact 4 as seconds: ``(seconds, fits)``; ``fits`` is False when all devices together lack
    room for ``weights`` bytes (no plan fits memory; the seconds are then 0).

    The devices that compute hold ``weights`` between them, each within its room
    (``memory_bytes``, the source's less the model's input). On a mesh, ``ready[d]`` (its
    earliest start, one task's overhead and its way to the sink) is each device's own, so a plan
    lasts at least the ``ready`` of the last device of the shortest prefix in order of ``ready``
    whose room holds the weights. On a shared medium the slots are not any device's own: the
    fewest workers k whose room (the largest first) with the source's holds the weights each
    receive and send one message at least, one message at a time, so a plan lasts at least 2k
    shortest messages, and at least k messages in, one task's overhead and one message out (one
    message fewer where the ``sink`` is not the source: it may be a worker that sends nothing)."""
    sink = sink or source
    room = {d.name: max(0, d.memory_bytes - (graph.tensor_bytes(graph.input_name) if d.name == source else 0))
            for d in cluster.devices}
    if sum(room.values()) < weights:
        return 0.0, False
    if cluster.link == "shared":
        msg = min(_one_element_messages(graph, cluster).values(), default=0.0)
        held, k = room[source], 0
        for r in sorted((r for d, r in room.items() if d != source), reverse=True):
            if held >= weights:
                break
            held, k = held + r, k + 1
        if k == 0:
            return 0.0, True
        out = 0 if sink == source else 1      # the sink, if a worker, sends nothing home
        return max((2 * k - out) * msg, (k + 1 - out) * msg + cluster.one_task_overhead_s), True
    held = 0
    for d in sorted(room, key=lambda n: ready[n]):
        held += room[d]
        if held >= weights:
            return ready[d], True
    raise AssertionError("unreachable: the rooms add up to the weights")


def earliest_arrivals(graph: LayerGraph, cluster: Cluster, source: str) -> dict[str, float]:
    """Per device, the earliest time (s) it can hold any data: 0 at the source; else one
    element's message along the fastest path (mesh), or the k-th message slot (shared medium;
    the fastest devices get the earliest slots)."""
    return _one_element_times(graph, cluster, source, to_end=False)


def latest_departures(graph: LayerGraph, cluster: Cluster, sink: str) -> dict[str, float]:
    """Per device, the least time (s) between the end of its last necessary computation and the
    end of any plan: 0 at the sink; else the output of that computation must still reach the
    sink, one element's message along the fastest path to it (mesh), or, on a shared medium,
    the k-th last message slot (the fastest devices get the latest slots)."""
    return _one_element_times(graph, cluster, sink, to_end=True)


def _one_element_messages(graph: LayerGraph, cluster: Cluster) -> dict[tuple[str, str], float]:
    """Seconds of a one-element message on each link (a, b): latency plus the element's bytes."""
    elem = FLOAT_BYTES * graph.batch
    return {(a, b): cluster.latency_s + elem / cluster.bw(a, b) for a in cluster.names for b in cluster.names if a != b}


def _one_element_times(graph: LayerGraph, cluster: Cluster, end: str, to_end: bool) -> dict[str, float]:
    """Per device, the least time (s) one element's messages take between ``end`` and it: from
    ``end`` to the device (``to_end=False``) or from the device to ``end``, along the fastest
    path on a mesh (Dijkstra, on the reversed links for ``to_end``); on a shared medium, where
    messages go one at a time, k messages for the k-th device, the fastest devices first."""
    msg = _one_element_messages(graph, cluster)
    if cluster.link == "shared":
        others = sorted((d for d in cluster.devices if d.name != end), key=lambda d: -d.flops_per_s)
        shortest = min(msg.values(), default=0.0)
        out = {end: 0.0}
        for k, d in enumerate(others, start=1):
            out[d.name] = k * shortest
        return out
    dist = {end: 0.0}
    heap = [(0.0, end)]
    while heap:
        t, u = heapq.heappop(heap)
        if t > dist.get(u, float("inf")):
            continue
        for w in cluster.names:
            if w == u:
                continue
            step = msg[(w, u)] if to_end else msg[(u, w)]
            if t + step < dist.get(w, float("inf")):
                dist[w] = t + step
                heapq.heappush(heap, (dist[w], w))
    return dist


@dataclass(frozen=True)
class LowerBound:
    """``seconds`` no plan that fits memory can beat, from ``necessary_flops``, the devices'
    ``starts_s``, the time each must leave at the end for its results to reach the sink
    (``ends_s``), and the memory term ``memory_s`` (module doc, fact 4; ``fits`` is False when
    the devices together lack room for ``necessary_weight_bytes``: then no plan fits memory)."""

    seconds: float
    necessary_flops: int
    zero_comm_s: float              # necessary FLOPs / total FLOP/s (per kind: the LP below, all starts 0)
    starts_s: dict[str, float]
    ends_s: dict[str, float]
    necessary_weight_bytes: int = 0
    memory_s: float = 0.0
    fits: bool = True


def lower_bound(graph: LayerGraph, cluster: Cluster, source: Optional[str] = None,
                work: Optional[dict[str, int]] = None, sink: Optional[str] = None,
                weights: Optional[int] = None) -> LowerBound:
    """The smallest T at which the devices, each from its earliest start ``a_d`` plus one task
    overhead, can compute the necessary FLOPs (module doc), seconds. With one rate per device:
    the smallest T with sum_d f_d * max(0, T - a_d - overhead) >= necessary FLOPs (overhead: one
    task's and one stage's). With rates
    per kind (``flops_per_s_by_kind``): a small LP (:func:`_kinds_lp`), work of each kind split
    fractionally over the devices. ``work``: :func:`necessary_flops_by_kind` of ``graph`` when
    the caller already has it (bounds on several sub-clusters of one model), and ``weights``
    likewise :func:`necessary_weight_bytes`. The memory term (fact 4) is the least T of a plan
    that fits memory; the bound is the larger of the two. On
    ``cluster.subset(names)`` it bounds every plan whose tasks run on those devices only
    (messages go directly between the devices that hold and need data, so the other devices
    neither compute nor relay). ``sink``: where the plan's output ends (the source by default)."""
    source = source or cluster.devices[0].name
    sink = sink or source
    cluster.device(source), cluster.device(sink)
    work = necessary_flops_by_kind(graph) if work is None else work
    total = sum(work.values())
    starts = earliest_arrivals(graph, cluster, source)
    ends = latest_departures(graph, cluster, sink)
    # a device that computes anything runs at least one task in one stage: it is busy for the
    # task and stage overheads besides its FLOPs, so its FLOPs fit in [a_d + overhead, T - e_d];
    # in what follows a device's window is T minus its ``ready``
    ready = {d: a + cluster.one_task_overhead_s + ends[d] for d, a in starts.items()}
    if any(d.flops_per_s_by_kind for d in cluster.devices):
        if cluster.link == "shared" and len(starts) > 1:
            # which device is fastest depends on the kind, so the slots are not ordered by
            # speed: every other device may have the first and the last slot (weaker, still valid)
            first = min(a for d, a in starts.items() if d != source)
            last = min(e for d, e in ends.items() if d != sink)
            ready = {d: (0.0 if d == source else first) + (0.0 if d == sink else last) + cluster.one_task_overhead_s
                     for d in starts}
        zero = _kinds_lp(cluster, work, {d: 0.0 for d in starts})
        t = _kinds_lp(cluster, work, ready)
        return _with_memory(graph, cluster, source, sink, ready, weights, LowerBound(max(t, zero), total, zero, starts, ends))
    speed = {d.name: d.flops_per_s for d in cluster.devices}
    zero = total / sum(speed.values())
    # piecewise linear in T: add devices in order of start time until the work fits
    order = sorted(speed, key=lambda d: ready[d])
    rate, done_at, t = 0.0, 0.0, 0.0
    for i, d in enumerate(order):
        rate += speed[d]
        t_next = ready[order[i + 1]] if i + 1 < len(order) else float("inf")
        # work done by T with the devices so far: done_at + rate * (T - ready[d])
        t = ready[d] + (total - done_at) / rate
        if t <= t_next:
            break
        done_at += rate * (t_next - ready[d])
    return _with_memory(graph, cluster, source, sink, ready, weights, LowerBound(max(t, zero), total, zero, starts, ends))


def _with_memory(graph: LayerGraph, cluster: Cluster, source: str, sink: str, ready: dict[str, float],
                 weights: Optional[int], lb: LowerBound) -> LowerBound:
    """``lb`` raised to the memory term (:func:`memory_seconds`) where that is larger."""
    weights = necessary_weight_bytes(graph) if weights is None else weights
    mem, fits = memory_seconds(graph, cluster, source, ready, weights, sink)
    return dataclasses.replace(lb, seconds=max(lb.seconds, mem), necessary_weight_bytes=weights, memory_s=mem,
                               fits=fits)


LP_SAFETY_REL = 1e-6     # the LP's optimum is shaved by this much: a bound must never exceed the truth


def _kinds_lp(cluster: Cluster, work: dict[str, int], ready: dict[str, float]) -> float:
    """Least T (s) such that the work of every kind, split fractionally over the devices, fits:
    device d spends y[d, k] seconds on kind k (computing rate_dk * y[d, k] FLOPs of it) with
    sum_k y[d, k] <= T - ready[d]; a device whose ``ready`` is after T computes nothing. One LP
    (HiGHS) per prefix of the devices in order of ``ready``; the least value is the bound."""
    import highspy
    import numpy as np

    kinds = [k for k, f in work.items() if f > 0]
    if not kinds:
        return 0.0
    order = sorted(cluster.devices, key=lambda d: ready[d.name])
    best = float("inf")
    inf = highspy.kHighsInf
    for m in range(1, len(order) + 1):
        use = order[:m]
        if ready[use[-1].name] >= best:
            break
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        nv = 1 + m * len(kinds)                   # T, then y[d, k]
        h.addVars(nv, np.zeros(nv), np.full(nv, inf))
        h.changeColsCost(1, np.array([0], dtype=np.int32), np.array([1.0]))
        for i, d in enumerate(use):
            idx = np.array([0] + [1 + i * len(kinds) + j for j in range(len(kinds))], dtype=np.int32)
            h.addRow(-inf, -ready[d.name], len(idx), idx, np.array([-1.0] + [1.0] * len(kinds)))
        for j, k in enumerate(kinds):             # each kind's work done: sum_d rate * y / work = 1
            idx = np.array([1 + i * len(kinds) + j for i in range(m)], dtype=np.int32)
            h.addRow(1.0, inf, m, idx, np.array([d.rate(k) / work[k] for d in use]))
        h.run()
        if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            best = min(best, h.getInfo().objective_function_value)
    return best * (1 - LP_SAFETY_REL)
