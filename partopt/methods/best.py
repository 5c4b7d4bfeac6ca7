"""best: the fastest plan partopt finds over every method and over device subsets.

Every other heuristic uses every device; on small or heterogeneous clusters leaving devices
idle is often faster (a whole model on one fast device beats most splits over a slow shared
radio). ``best`` searches, and prices every candidate with :func:`partopt.plan.evaluate`:

1. **Every method's heuristic** on the whole cluster (``single``, ``layerwise``, ``coedge``,
   ``fused``, ``dpfp``, ``iop``, ``nptp``, ``ftp``; and the DN2PCIoT family where the model
   is a chain it accepts of at most 10 MFLOP). So ``best`` is never slower than any of them.
2. **The same splits on device subsets**: ``coedge``, ``nptp``, ``ftp``, ``iop`` and ``dpfp``
   on the source plus its k-1 fastest peers, k = 1..n-1 (the source holds the input, so it
   stays in the sub-cluster), priced on the whole cluster.
3. **Mixed receptive-field blocks** (:func:`mixed_blocks`): DPFP's master-centric blocks, but
   each block picks its own device subset (the source with its k-1 fastest peers, or the k
   fastest peers without the source, k = 1..n). A gather at the master ends every block, so a
   plan's latency is the sum of its blocks' times and the DP over blockings and subsets is
   exact for this family (``evaluate`` of the plan equals the DP's value; a test checks it).
   On large graphs blocks span at most ``max_block_units`` units to keep the table small.

The result is the candidate with the lowest latency among those that fit memory;
``plan.meta["origin"]`` says which, and ``plan.meta["candidates"]`` how many were priced.
There is no exact model of this union yet (``--exact`` is refused): ``lower_bound_s``
(:mod:`partopt.bounds`) says how far any plan could still be below it.

Example:
    >>> from partopt.cluster import preset
    >>> from partopt.graph import LayerGraph
    >>> from partopt.zoo import example_input, load_model
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> s = heuristic(g, preset("pi4x4"), model="lenet5")
    >>> s.status, s.plan.meta["origin"]     # LeNet-5 is too small to split over a 2 ms radio
    ('heuristic', 'single')
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from ..cluster import Cluster
from ..errors import PartoptError
from ..graph import LayerGraph
from ..plan import Plan, Stage, build_plan, evaluate
from ..solvers import Solution
from . import baselines, dn2pciot, dpfp, iop, nptp

WHOLE_CLUSTER: dict[str, Callable] = {
    "single": baselines.single, "layerwise": baselines.layerwise, "coedge": baselines.coedge,
    "fused": dpfp.fused, "dpfp": dpfp.heuristic, "iop": iop.heuristic, "nptp": nptp.heuristic, "ftp": nptp.ftp,
}
SMALL_CHAIN: dict[str, Callable] = {
    "dn2pciot": dn2pciot.heuristic, "dn2pciot-metis": dn2pciot.metis, "dn2pciot-per-layer": dn2pciot.per_layer,
    "dn2pciot-greedy": dn2pciot.greedy,
}
SMALL_CHAIN_MAX_FLOPS = 1e7     # the DN2PCIoT family is for LeNet-sized chains (0.8 MFLOP)
ON_SUBSETS: dict[str, Callable] = {
    "coedge": baselines.coedge, "nptp": nptp.heuristic, "ftp": nptp.ftp, "iop": iop.heuristic, "dpfp": dpfp.heuristic,
}


def peers_by_speed(cluster: Cluster, source: str) -> list[str]:
    """Every device but the source, fastest first (cluster order among equals)."""
    rank = {n: i for i, n in enumerate(cluster.names)}
    return sorted((d.name for d in cluster.devices if d.name != source),
                  key=lambda n: (-cluster.device(n).flops_per_s, rank[n]))


def on_cluster(plan: Plan, graph: LayerGraph, cluster: Cluster, method: str) -> Plan:
    """A plan found on a sub-cluster, re-routed and validated on the whole ``cluster``."""
    stages = [Stage(list(s.ops), list(s.tasks), gather_to=s.gather_to) for s in plan.stages]
    return build_plan(graph, cluster, stages, model=plan.model, method=method, source=plan.source, sink=plan.sink,
                      meta=dict(plan.meta))


def mixed_blocks(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
                 max_block_units: Optional[int] = None) -> tuple[Plan, float]:
    """The DP over blockings where every block picks its device subset (module doc, item 3).

    Returns the plan and the DP's latency (seconds), which ``evaluate`` of the plan equals.
    """
    master = source or cluster.devices[0].name
    peers = peers_by_speed(cluster, master)
    subsets = [[master] + peers[:k] for k in range(len(peers) + 1)] + [peers[:k] for k in range(1, len(peers) + 1)]
    speed = {d.name: d.flops_per_s for d in cluster.devices}
    units, _, _ = dpfp._units(graph)
    if max_block_units is None:
        max_block_units = len(units) if len(units) <= 24 else 6
    probs = [dpfp.problem(graph, cluster, master, shares={d: (speed[d] if d in s else 0.0) for d in speed},
                          max_block_units=max_block_units) for s in subsets]
    base = probs[0]
    choice = {b: min(range(len(probs)), key=lambda k: probs[k].cost[b]) for b in base.cost}
    mixed = dpfp.Problem(graph, cluster, master, base.units, base.inputs, base.tail, base.shares,
                         {b: probs[k].cost[b] for b, k in choice.items()}, base.tail_s)
    value, blocks = dpfp.dp(mixed)
    stages = [dpfp.block_stage(probs[choice[b]], *b) for b in blocks]
    if base.tail:
        stages.append(dpfp.tail_stage(base))
    meta = {"blocks": [list(b) for b in blocks],
            "block_devices": [[d for d in speed if probs[choice[b]].shares[d] > 0] for b in blocks],
            "master": master, "max_block_units": max_block_units}
    plan = build_plan(graph, cluster, stages, model=model, method="best", source=master, sink=master, meta=meta)
    return plan, value


def _candidates(graph: LayerGraph, cluster: Cluster, model: str, source: Optional[str]):
    """(origin, Solution or Plan) for every candidate of the module doc."""
    master = source or cluster.devices[0].name
    for name, fn in WHOLE_CLUSTER.items():
        yield name, fn(graph, cluster, model=model, source=source)
    for name, fn in (SMALL_CHAIN.items() if graph.total_flops <= SMALL_CHAIN_MAX_FLOPS else ()):
        try:
            yield name, fn(graph, cluster, model=model, source=source)
        except PartoptError:
            break       # not a small chain DN2PCIoT accepts
    peers = peers_by_speed(cluster, master)
    for k in range(1, len(cluster)):        # proper subsets: the source and its k-1 fastest peers
        names = [master] + peers[:k - 1]
        sub = cluster.subset([n for n in cluster.names if n in names])
        for name, fn in ON_SUBSETS.items():
            if k == 1 and name != "coedge":
                continue    # one device: every split is the same whole-model plan
            try:
                sol = fn(graph, sub, model=model, source=master)
            except PartoptError:
                continue
            if sol.plan is not None:
                yield f"{name} on {','.join(names)}", on_cluster(sol.plan, graph, cluster, "best")
    try:
        yield "mixed blocks", mixed_blocks(graph, cluster, model=model, source=source)[0]
    except PartoptError:
        pass            # no spatial part to cut into blocks


def heuristic(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None
              ) -> Solution:
    """The fastest plan that fits memory over every candidate (module doc); ``infeasible`` with
    the smallest shortfall when none fits."""
    t0 = time.perf_counter()
    best = None             # (fits, latency, origin, plan, report)
    n = 0
    for origin, cand in _candidates(graph, cluster, model, source):
        plan = cand.plan if isinstance(cand, Solution) else cand
        if plan is None:
            continue
        n += 1
        rep = cand.report if isinstance(cand, Solution) and cand.report is not None else evaluate(plan, graph, cluster)
        key = (not rep.memory_ok, sum(rep.over_memory.values()) if not rep.memory_ok else 0, rep.latency_s)
        # a later candidate must be faster beyond rounding, so ties keep the simpler, earlier plan
        if best is None or key[:2] < best[0][:2] or (key[:2] == best[0][:2] and key[2] < best[0][2] * (1 - 1e-9)):
            best = (key, origin, plan, rep)
    key, origin, plan, rep = best
    plan = Plan(plan.model, plan.input_shape, plan.cluster, "best", plan.source, plan.sink, plan.stages, plan.final,
                plan.seed, {**plan.meta, "origin": origin, "candidates": n})
    if not rep.memory_ok:
        return Solution(plan, "infeasible", "best", solve_s=time.perf_counter() - t0, report=rep,
                        reason="no candidate plan fits memory; the closest: " + rep.infeasible_reason())
    return Solution(plan, "heuristic", "best", objective=rep.latency_s, solve_s=time.perf_counter() - t0, report=rep)
