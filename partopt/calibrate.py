"""Time each op kind on this machine and fit the cost model's device speed to it.

The cost model prices compute as FLOPs / FLOP/s (:mod:`partopt.cost`). :func:`time_ops` runs
every op of a model on its whole output with the same executor the runtime uses
(:func:`partopt.verify.run_op`, one torch thread by default, as each rank of
:func:`partopt.runtime.run` has), ``repeats`` times after a warm-up, and keeps each op's median
seconds. :func:`calibrate` turns those into one speed per device: the models' total FLOPs over
their total seconds (ops without FLOPs, such as flatten, count with their time), so the cost
model's compute time of the whole models equals the measured one. The per-kind table shows
how far each kind is from that single number (memory-bound kinds such as activations and pools
run at far fewer FLOP/s than convolutions).

``concurrent=N`` times in N processes at once, as N ranks would compute on a machine with
fewer cores than ranks; each op's time is the mean over the processes.

The calibrated cluster copies ``like`` (device names, memory, links, latency) and sets every
device's ``flops_per_s`` to the measured speed: every rank of a local run is this machine.

Example:
    >>> t = time_ops("lenet5", repeats=1)
    >>> sorted({x.kind for x in t})[:3]
    ['act', 'avgpool', 'conv']
    >>> fitted_flops_per_s(t) > 0
    True
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import torch

from .cluster import Cluster, Device, load_cluster
from .cost import region_flops
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


@dataclass
class Calibration:
    """The fitted speed (FLOP/s), the per-kind table and the cluster that carries the speed."""

    flops_per_s: float
    per_kind: dict[str, dict[str, float]]
    timings: list[OpTiming]
    cluster: Cluster
    models: list[str] = field(default_factory=list)
    concurrent: int = 1
    threads: int = 1


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
                         statistics.median(seconds[op.name])) for op in graph.ops]
    finally:
        torch.set_num_threads(old)


def fitted_flops_per_s(timings: list[OpTiming]) -> float:
    """Total FLOPs over total seconds: the one speed that makes the models' compute time match."""
    secs = sum(t.seconds for t in timings)
    if secs <= 0:
        raise PartoptError("no measured time to fit a speed to")
    return sum(t.flops for t in timings) / secs


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


def calibrate(models: tuple[str, ...] | list[str] = ("vgg16",), like: str | Cluster = "pi4x4", repeats: int = 5,
              threads: int = 1, concurrent: int = 1) -> Calibration:
    """Time ``models`` on this machine and return the cluster ``like`` with the fitted speed."""
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
        timings = [OpTiming(t.model, t.op, t.kind, t.flops, statistics.mean(r[i].seconds for r in runs))
                   for i, t in enumerate(runs[0])]
    speed = fitted_flops_per_s(timings)
    cluster = Cluster(f"{base.name}-calibrated", tuple(Device(d.name, speed, d.memory_bytes) for d in base.devices),
                      dict(base.bandwidth), base.latency_s, base.link)
    return Calibration(speed, per_kind(timings), timings, cluster, models, concurrent, threads)
