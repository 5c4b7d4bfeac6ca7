import functools

import pytest

from partopt.graph import LayerGraph
from partopt.zoo import example_input, load_model


@functools.lru_cache(maxsize=None)
def zoo_case(name: str):
    """(module, input, graph) for a zoo model, built once per test session."""
    module, shape, _ = load_model(name)
    x = example_input(shape)
    return module, x, LayerGraph.from_module(module, x)


@pytest.fixture
def zoo():
    return zoo_case


def kinded(cluster, overhead_s: float = 3e-4):
    """``cluster`` with non-default compute rates per op kind, different on every device, a
    per-task overhead and a per-stage overhead (twice it): the parity tests run every specialised evaluator and exact model on it,
    so none of them can price compute as FLOPs / flops_per_s alone."""
    import dataclasses

    from partopt.cluster import Device

    factors = {"conv": 1.3, "dwconv": 0.4, "deconv": 0.9, "linear": 0.25, "pool": 0.05, "eltwise": 0.1}
    devs = tuple(Device(d.name, d.flops_per_s, d.memory_bytes,
                        {k: d.flops_per_s * f * (1 + 0.15 * i) for k, f in factors.items()})
                 for i, d in enumerate(cluster.devices))
    return dataclasses.replace(cluster, name=f"{cluster.name}-kinded", devices=devs, task_overhead_s=overhead_s,
                               stage_overhead_s=2 * overhead_s)


@pytest.fixture(params=["plain", "kinded"])
def rated(request):
    """A function cluster -> cluster: the identity, then :func:`kinded` (per-kind rates and a task overhead)."""
    return (lambda c: c) if request.param == "plain" else kinded
