"""Baselines over the same plan format and cost model as every method.

- :func:`single`: the whole model on the fastest device that fits in memory.
- :func:`layerwise` (MoDNN-style): each layer (a conv/pool/linear op with the channel-local ops
  that follow it) split by output rows in proportion to device speed (fully connected layers
  and 1x1 maps by output neurons/channels); after every layer the pieces are gathered at the
  master (the source device), which sends each device the rows it needs for the next layer.
- :func:`coedge` (CoEdge-style): the same per-layer split, but devices keep their rows and
  fetch only the halo rows they lack from the neighbours that hold them. Shares start in
  proportion to speed; a device whose plan overflows its memory gets a smaller share (the
  rows move to the others) until every device fits, or the result is ``infeasible``.
- :func:`coedge_concat` (CoEdge as the IOP paper frames it): each layer split by **output
  channels** in proportion to speed (a fully connected layer by output neurons), and no halo
  reasoning: a conv or linear layer reads every input channel, so each device first fetches
  every other device's channels of the previous layer's output: the distributed activations
  are concatenated (all-gathered) on every device before each such layer (a strided 1x1 conv
  is sent only the rows and columns it samples). Channel-local layers
  (pooling, depthwise convs, element-wise ops) read only their own channels, so nothing is
  concatenated before them. The output is gathered at the sink; shares are not adapted to memory.

A baseline plan that breaks a memory limit is returned with status ``infeasible`` and the
reason; it is never silently repaired beyond what the baseline itself does (only ``coedge``
adapts shares, as CoEdge does).

Example:
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> net, shape, _ = load_model("lenet5")
    >>> g = LayerGraph.from_module(net, example_input(shape))
    >>> [s.status for s in (single(g, preset("pi4x4")), layerwise(g, preset("pi4x4")), coedge(g, preset("pi4x4")))]
    ['heuristic', 'heuristic', 'heuristic']
"""
from __future__ import annotations

import time
from typing import Optional

from ..cluster import Cluster
from ..geometry import Box, ranges_from_counts, split_proportional
from ..graph import LAYER_KINDS, LayerGraph
from ..plan import Stage, Task, build_plan, evaluate
from ..solvers import Solution


def layer_stages(graph: LayerGraph) -> list[list[str]]:
    """Ops grouped into layers: a new layer starts at each conv, pool, flatten or linear op
    (a linear right after a flatten joins it); channel-local ops join the layer before them.
    A layer is cut after any op whose output is read outside it, so that each layer has one
    output tensor."""
    stages: list[list[str]] = []
    for op in graph.ops:
        starts = op.kind in LAYER_KINDS
        if starts and op.kind == "linear" and stages and all(graph.op[n].kind == "flatten" for n in stages[-1]):
            starts = False
        if starts or not stages:
            stages.append([op.name])
        else:
            stages[-1].append(op.name)
    changed = True
    while changed:
        changed = False
        out = []
        for st in stages:
            inside = set(st)
            cut = next((j for j, n in enumerate(st[:-1]) if any(c not in inside for c in graph.consumers[n])), None)
            if cut is None:
                out.append(st)
            else:
                out += [st[:cut + 1], st[cut + 1:]]
                changed = True
        stages = out
    return stages


def split_tasks(graph: LayerGraph, output: str, shares: dict[str, float]) -> list[Task]:
    """Split ``output``'s map by rows (or, for a 1-row map, by channels) in proportion to ``shares``."""
    c, h, w = graph.tensor_chw(output)
    names = [d for d in shares if shares[d] > 0]
    if h > 1:
        counts = split_proportional(h, [shares[d] for d in names])
        return [Task(d, Box(0, c, a, b, 0, w)) for d, (a, b) in zip(names, ranges_from_counts(counts)) if b > a]
    counts = split_proportional(c, [shares[d] for d in names])
    return [Task(d, Box(a, b, 0, h, 0, w)) for d, (a, b) in zip(names, ranges_from_counts(counts)) if b > a]


def split_channels(graph: LayerGraph, output: str, shares: dict[str, float]) -> list[Task]:
    """Split ``output``'s channels (all rows and columns) in proportion to ``shares``."""
    c, h, w = graph.tensor_chw(output)
    names = [d for d in shares if shares[d] > 0]
    counts = split_proportional(c, [shares[d] for d in names])
    return [Task(d, Box(a, b, 0, h, 0, w)) for d, (a, b) in zip(names, ranges_from_counts(counts)) if b > a]


def _finish(plan, graph, cluster, method, t0) -> Solution:
    rep = evaluate(plan, graph, cluster)
    if rep.memory_ok:
        return Solution(plan, "heuristic", method, objective=rep.latency_s, solve_s=time.perf_counter() - t0,
                        report=rep)
    return Solution(plan, "infeasible", method, solve_s=time.perf_counter() - t0, report=rep,
                    reason=rep.infeasible_reason())


def single(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None) -> Solution:
    """Everything on the fastest device that fits; infeasible (with the smallest shortfall) if none does."""
    t0 = time.perf_counter()
    ops = [o.name for o in graph.ops]
    best_fail = None
    for dev in sorted(cluster.devices, key=lambda d: (-d.flops_per_s, -d.memory_bytes, d.name)):
        stage = Stage(ops, [Task(dev.name, Box.full(graph.op[graph.output].out_chw))])
        plan = build_plan(graph, cluster, [stage], model=model, method="single", source=source)
        sol = _finish(plan, graph, cluster, "single", t0)
        if sol.feasible:
            return sol
        lack = sol.report.over_memory[dev.name]
        if best_fail is None or lack < best_fail.report.over_memory[best_fail.plan.stages[0].tasks[0].device]:
            best_fail = sol
    best_fail.reason = "no device fits the whole model: " + best_fail.reason
    best_fail.solve_s = time.perf_counter() - t0
    return best_fail


def _speed_shares(cluster: Cluster) -> dict[str, float]:
    return {d.name: d.flops_per_s for d in cluster.devices}


def layerwise(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None
              ) -> Solution:
    """MoDNN-style: every layer split by rows in proportion to speed, gathered at the master after each."""
    t0 = time.perf_counter()
    master = source or cluster.devices[0].name
    shares = _speed_shares(cluster)
    groups = layer_stages(graph)
    stages = [Stage(ops, split_tasks(graph, ops[-1], shares), gather_to=master if i < len(groups) - 1 else None)
              for i, ops in enumerate(groups)]
    plan = build_plan(graph, cluster, stages, model=model, method="layerwise", source=master)
    return _finish(plan, graph, cluster, "layerwise", t0)


def coedge_concat(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None
                  ) -> Solution:
    """CoEdge as the IOP paper frames it (module doc): output channels of every layer by speed,
    the previous layer's output all-gathered before every conv and linear layer."""
    t0 = time.perf_counter()
    shares = _speed_shares(cluster)
    stages = [Stage(ops, split_channels(graph, ops[-1], shares)) for ops in layer_stages(graph)]
    plan = build_plan(graph, cluster, stages, model=model, method="coedge-concat", source=source,
                      meta={"shares": dict(shares)})
    return _finish(plan, graph, cluster, "coedge-concat", t0)


def coedge(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
           max_rounds: int = 30) -> Solution:
    """CoEdge-style: rows split in proportion to speed, halo exchange only, memory-aware shares."""
    t0 = time.perf_counter()
    shares = _speed_shares(cluster)
    groups = layer_stages(graph)
    sol = None
    for _ in range(max_rounds):
        stages = [Stage(ops, split_tasks(graph, ops[-1], shares)) for ops in groups]
        plan = build_plan(graph, cluster, stages, model=model, method="coedge", source=source,
                          meta={"shares": dict(shares)})
        sol = _finish(plan, graph, cluster, "coedge", t0)
        if sol.feasible:
            return sol
        rep = sol.report
        changed = False
        for dev, lack in rep.over_memory.items():
            act = rep.peak_memory_bytes[dev] - rep.weight_bytes[dev]
            cap = cluster.device(dev).memory_bytes - rep.weight_bytes[dev]
            # shrink the device's share in proportion to the activation memory it may still use
            factor = max(0.0, cap / act) * 0.9 if act > 0 else 0.0
            new = shares[dev] * factor
            if new < 1e-3 * max(shares.values()):
                new = 0.0
            if new != shares[dev]:
                shares[dev] = new
                changed = True
        if not changed or not any(v > 0 for v in shares.values()):
            break
    sol.solve_s = time.perf_counter() - t0
    sol.reason = "no share of rows fits every device: " + sol.reason
    return sol
