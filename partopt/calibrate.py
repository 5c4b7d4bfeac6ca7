"""Fit the cost model's compute rates per op kind and its per-task and per-stage overheads here.

The cost model prices compute as each op kind's FLOPs over the device's rate for that kind, plus
a fixed overhead per task and one per stage (:func:`partopt.cost.compute_time`). :func:`time_ops` runs every op of
a model on its whole output with the same executor the runtime uses
(:func:`partopt.verify.run_op`, one torch thread by default, as each rank of
:func:`partopt.runtime.run` has), ``repeats`` times after a warm-up, and keeps each op's median
seconds. :func:`fit_rates` fits, by least squares over those ops, ``seconds = FLOPs / rate of
the op's kind (partopt.cost.rate_kind) + c`` (one rate per kind, one per-op constant c, all
non-negative); the fit's relative residual says how well one rate per kind explains the ops.
:func:`fitted_flops_per_s` is the single speed that makes the models' total compute time match
(kept as each device's ``flops_per_s``: the fallback for kinds without a rate and the speed the
heuristics split work by).

:func:`probe_overhead` measures the per-task and per-stage overheads as the runtime pays them:
it runs a layer-by-layer plan of a small model with :func:`partopt.runtime.run` on a network with
no latency and no bandwidth limit (nearly "empty" stages): on one device with one task per stage
and with every task cut into four (the difference is the cost of a task: nothing is sent), then
on every device (the rest of the time per stage is the stage's: messages, set-up, reporting).

``concurrent=N`` times ops in N processes at once, as N ranks would compute on a machine with
fewer cores than ranks; each op's time is the mean over the processes.

The calibrated cluster copies ``like`` (device names, memory, links, latency) and gives every
device the fitted rates: every rank of a local run is this machine.

Example:
    >>> t = time_ops("lenet5", repeats=1)
    >>> sorted({x.kind for x in t})[:3]
    ['act', 'avgpool', 'conv']
    >>> fitted_flops_per_s(t) > 0
    True
    >>> rates, per_op_s, residual = fit_rates(t)
    >>> sorted(rates)
    ['conv', 'eltwise', 'linear', 'pool']
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import torch

from .cluster import Cluster, Device, load_cluster
from .cost import rate_kind, region_flops
from .errors import PartoptError
from .geometry import Box
from .graph import LayerGraph
from .verify import run_op


@dataclass(frozen=True)
class OpTiming:
    """One op of one model: its FLOPs (whole batch) and median seconds on this machine."""

    model: str
    op: str
    kind: str
    flops: int
    seconds: float
    rate_kind: str = ""        # partopt.cost.rate_kind of the op: which device rate prices it


@dataclass
class Calibration:
    """The fitted speed (FLOP/s), the rate per kind (FLOP/s), the per-op constant and the
    per-task and per-stage overheads (s), the fit's relative residual, the per-kind table, the
    overhead probe's numbers, and the cluster that carries them."""

    flops_per_s: float
    per_kind: dict[str, dict[str, float]]
    timings: list[OpTiming]
    cluster: Cluster
    models: list[str] = field(default_factory=list)
    concurrent: int = 1
    threads: int = 1
    rates: dict[str, float] = field(default_factory=dict)
    per_op_s: float = 0.0
    residual: float = 0.0
    task_overhead_s: float = 0.0
    stage_overhead_s: float = 0.0
    probe: dict[str, float] = field(default_factory=dict)


def time_ops(model: str, input_shape: Optional[tuple[int, ...]] = None, repeats: int = 5, threads: int = 1,
             seed: int = 0) -> list[OpTiming]:
    """Median seconds of every op of ``model`` computing its whole output (see the module doc)."""
    from .zoo import example_input, load_model
    if repeats < 1 or threads < 1:
        raise PartoptError(f"repeats and threads must be >= 1, got {repeats} and {threads}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module, shape, name = load_model(model, input_shape, seed)
        x = example_input(shape, seed)
        graph = LayerGraph.from_module(module, x)
        mods = dict(module.named_modules())
        seconds: dict[str, list[float]] = defaultdict(list)
        with torch.no_grad():
            for rep in range(repeats + 1):            # the first pass warms up and is dropped
                data = {graph.input_name: (x, Box.full(graph.tensor_chw(graph.input_name)))}
                for op in graph.ops:
                    box = Box.full(op.out_chw)
                    ins = [data[i] for i in op.inputs]
                    t0 = time.perf_counter()
                    out = run_op(op, mods.get(op.target) if op.target else None, ins, box,
                                 [graph.tensor_chw(i) for i in op.inputs])
                    dt = time.perf_counter() - t0
                    data[op.name] = (out, box)
                    if rep:
                        seconds[op.name].append(dt)
        return [OpTiming(name, op.name, op.kind, region_flops(op, Box.full(op.out_chw)),
                         statistics.median(seconds[op.name]), rate_kind(op)) for op in graph.ops]
    finally:
        torch.set_num_threads(old)


def fitted_flops_per_s(timings: list[OpTiming]) -> float:
    """Total FLOPs over total seconds: the one speed that makes the models' compute time match."""
    secs = sum(t.seconds for t in timings)
    if secs <= 0:
        raise PartoptError("no measured time to fit a speed to")
    return sum(t.flops for t in timings) / secs


def fit_rates(timings: list[OpTiming]) -> tuple[dict[str, float], float, float]:
    """Least squares ``seconds = FLOPs / rate[kind] + c`` over the timed ops (non-negative
    inverse rates and c; ops are weighted by 1 / their seconds, so each op's relative error
    counts alike). Returns (rate kind -> FLOP/s, c in seconds per op, relative residual: the
    root mean square of (fitted - measured) / measured)."""
    import numpy as np

    kinds = sorted({_rate_kind_of(t) for t in timings if t.flops > 0})
    if not kinds:
        raise PartoptError("no timed op with FLOPs to fit a rate to")
    rows = [t for t in timings if t.seconds > 0]
    a = np.zeros((len(rows), len(kinds) + 1))
    y = np.ones(len(rows))
    for i, t in enumerate(rows):
        w = 1.0 / t.seconds
        if t.flops:
            a[i, kinds.index(_rate_kind_of(t))] = t.flops * w
        a[i, -1] = w
    active = list(range(len(kinds) + 1))
    while True:                          # non-negative: drop a negative coefficient and refit
        coef = np.zeros(len(kinds) + 1)
        sol, *_ = np.linalg.lstsq(a[:, active], y, rcond=None)
        coef[active] = sol
        neg = [j for j in active if coef[j] < 0]
        if not neg:
            break
        active.remove(min(neg, key=lambda j: coef[j]))
    rates = {}
    for j, k in enumerate(kinds):
        if coef[j] > 0:
            rates[k] = float(1.0 / coef[j])
        else:                            # no time left for this kind: its FLOPs over its seconds
            ts = [t for t in rows if t.flops and _rate_kind_of(t) == k]
            rates[k] = float(sum(t.flops for t in ts) / sum(t.seconds for t in ts))
    fitted = np.array([(t.flops / rates[_rate_kind_of(t)] if t.flops else 0.0) + coef[-1] for t in rows])
    meas = np.array([t.seconds for t in rows])
    residual = float(np.sqrt(np.mean(((fitted - meas) / meas) ** 2)))
    return rates, float(coef[-1]), residual


def _rate_kind_of(t: OpTiming) -> str:
    return t.rate_kind or "eltwise"


def per_kind(timings: list[OpTiming]) -> dict[str, dict[str, float]]:
    """kind -> {ops, flops, seconds, flops_per_s, share of time}."""
    total = sum(t.seconds for t in timings) or 1.0
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({t.kind for t in timings}):
        ts = [t for t in timings if t.kind == kind]
        f, s = sum(t.flops for t in ts), sum(t.seconds for t in ts)
        out[kind] = {"ops": len(ts), "flops": f, "seconds": s, "flops_per_s": f / s if s > 0 else 0.0,
                     "time_share": s / total}
    return out


def _time_all(models: list[str], repeats: int, threads: int) -> list[OpTiming]:
    return [t for m in models for t in time_ops(m, repeats=repeats, threads=threads)]


def cut_each_task(stages, k: int):
    """Copies of ``stages`` (unrouted) with every task cut into up to ``k`` tasks of the same
    device: along rows where the box has at least ``k``, else along channels."""
    from .geometry import ranges_from_counts, split_proportional
    from .plan import Stage, Task

    out = []
    for s in stages:
        tasks = []
        for t in s.tasks:
            b = t.box
            if t.in_channels is None and b.h1 - b.h0 >= k:
                parts = [Box(b.c0, b.c1, b.h0 + lo, b.h0 + hi, b.w0, b.w1)
                         for lo, hi in ranges_from_counts(split_proportional(b.h1 - b.h0, [1] * k))]
            elif t.in_channels is None and b.c1 - b.c0 >= k:
                parts = [Box(b.c0 + lo, b.c0 + hi, b.h0, b.h1, b.w0, b.w1)
                         for lo, hi in ranges_from_counts(split_proportional(b.c1 - b.c0, [1] * k))]
            else:
                parts = [b]
            tasks += [Task(t.device, p, t.in_channels) for p in parts]
        out.append(Stage(list(s.ops), tasks, gather_to=s.gather_to))
    return out


PROBE_SPLIT = 4     # the probe's second run cuts every task of the first into this many


def probe_overhead(cluster: Cluster, model: str = "lenet5", repeats: int = 5, threads: int = 1) -> dict[str, float]:
    """The per-task and per-stage overheads (s) the runtime pays on this machine (module doc).

    Three runs with :func:`partopt.runtime.run` over links with no latency and no bandwidth
    limit, each priced by the cost model without overheads; a run's measured latency beyond
    that, per stage, is ``stage + tasks x task`` overhead:

    - ``solo``: ``model``'s layer-by-layer (``coedge``) plan on the cluster's first device alone,
      one task per stage, and ``solo_many``, the same with every task cut into
      :data:`PROBE_SPLIT`. Nothing is sent in either, so their difference is the cost of a task
      as such: ``task_overhead_s``.
    - ``one``: the layer-by-layer plan on every device of ``cluster``, one task per device and
      stage, with its halo exchanges: ``stage_overhead_s`` is its extra per stage less one task's
      overhead (the stage's messages, set-up and reporting).

    Each value is kept >= 0. Returns {task_overhead_s, stage_overhead_s, stages, and each run's
    measured_s and predicted_s}."""
    from .methods import METHODS
    from .plan import build_plan, evaluate
    from .runtime import RunOptions, run
    from .zoo import example_input, load_model

    def unlimited(c: Cluster) -> Cluster:
        ns = c.names
        return Cluster(f"{c.name}-probe", c.devices, {(a, b): 1e15 for a in ns for b in ns if a != b}, 0.0, "mesh")

    module, shape, name = load_model(model)
    graph = LayerGraph.from_module(module, example_input(shape))
    free = unlimited(cluster)
    alone = unlimited(cluster.subset(cluster.names[:1]))
    solo = METHODS["coedge"].heuristic(graph, alone, model=name).plan
    solo_many = build_plan(graph, alone, cut_each_task(solo.stages, PROBE_SPLIT), model=solo.model, method="probe",
                           source=solo.source, sink=solo.sink)
    one = METHODS["coedge"].heuristic(graph, free, model=name).plan
    out: dict[str, float] = {"stages": len(one.stages)}
    extra = {}
    for label, plan, cl in (("solo", solo, alone), ("solo_many", solo_many, alone), ("one", one, free)):
        res = run(plan, RunOptions(repeat=repeats, warmup=1, threads=threads))
        if not res.ok:
            raise PartoptError(f"the overhead probe's run did not match the unsplit model: {res.reason}")
        predicted = evaluate(plan, graph, cl).latency_s
        out[f"{label}_measured_s"], out[f"{label}_predicted_s"] = res.latency_s, predicted
        extra[label] = max(0.0, res.latency_s - predicted) / len(plan.stages)

    def tasks(plan) -> int:
        return max(sum(1 for t in s.tasks if t.device == d) for s in plan.stages for d in {t.device for t in s.tasks})

    per_task = max(0.0, (extra["solo_many"] - extra["solo"]) / max(1, tasks(solo_many) - tasks(solo)))
    out["task_overhead_s"] = per_task
    out["stage_overhead_s"] = max(0.0, extra["one"] - tasks(one) * per_task)
    return out


def calibrate(models: tuple[str, ...] | list[str] = ("vgg16",), like: str | Cluster = "pi4x4", repeats: int = 5,
              threads: int = 1, concurrent: int = 1, overhead: bool = True) -> Calibration:
    """Time ``models`` on this machine and return the cluster ``like`` with the fitted speed,
    rates per kind and (``overhead``: probed with the runtime, see :func:`probe_overhead`)
    per-task and per-stage overheads."""
    base = like if isinstance(like, Cluster) else load_cluster(like)
    models = list(models)
    if not models:
        raise PartoptError("calibrate needs at least one model")
    if concurrent < 1:
        raise PartoptError(f"concurrent must be >= 1, got {concurrent}")
    if concurrent == 1:
        timings = _time_all(models, repeats, threads)
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(concurrent) as pool:
            runs = pool.starmap(_time_all, [(models, repeats, threads)] * concurrent)
        timings = [OpTiming(t.model, t.op, t.kind, t.flops, statistics.mean(r[i].seconds for r in runs), t.rate_kind)
                   for i, t in enumerate(runs[0])]
    speed = fitted_flops_per_s(timings)
    rates, per_op_s, residual = fit_rates(timings)
    devices = tuple(Device(d.name, speed, d.memory_bytes, rates) for d in base.devices)
    cluster = Cluster(f"{base.name}-calibrated", devices, dict(base.bandwidth), base.latency_s, base.link)
    probe: dict[str, float] = {}
    if overhead:
        probe = probe_overhead(cluster, repeats=repeats, threads=threads)
        cluster = Cluster(cluster.name, devices, dict(base.bandwidth), base.latency_s, base.link,
                          probe["task_overhead_s"], probe["stage_overhead_s"])
    return Calibration(speed, per_kind(timings), timings, cluster, models, concurrent, threads, rates, per_op_s,
                       residual, probe.get("task_overhead_s", 0.0), probe.get("stage_overhead_s", 0.0), probe)
