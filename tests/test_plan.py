import copy
import json

import pytest
import torch
import torch.nn as nn

from partopt.cluster import Cluster, Device, homogeneous
from partopt.errors import PlanError
from partopt.geometry import Box
from partopt.graph import LayerGraph
from partopt.methods.baselines import coedge, layerwise
from partopt.plan import Plan, Stage, Task, build_plan, evaluate
from partopt.verify import verify
from partopt.zoo import randomize


def two_devices(link="mesh"):
    devs = (Device("d0", 1000.0, 10_000), Device("d1", 1000.0, 10_000))
    return Cluster("two", devs, {("d0", "d1"): 1000.0, ("d1", "d0"): 1000.0}, 0.01, link)


def tiny():
    net = randomize(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)), 3)
    x = torch.randn(1, 1, 4, 4)
    return net, x, LayerGraph.from_module(net, x)


def row_plan(g, cl):
    conv = g.ops[0].name
    tasks = [Task("d0", Box(0, 2, 0, 2, 0, 4)), Task("d1", Box(0, 2, 2, 4, 0, 4))]
    return build_plan(g, cl, [Stage([conv], tasks)], model="tiny", method="test", source="d0")


def test_evaluate_by_hand():
    """conv 1->2, 3x3, pad 1 on 4x4; rows [0,2) on d0 (holds the input), [2,4) on d1.

    d1 needs input rows 1..3 (12 floats = 48 B): 0.01 + 48/1000 = 0.058 s, then computes
    2*1*9*16 = 288 FLOPs in 0.288 s (done 0.346); sends its 16 output floats (64 B) back:
    0.01 + 0.064 = 0.074 s -> latency 0.420 s. d0 finishes at 0.288 s.
    """
    net, x, g = tiny()
    cl = two_devices()
    plan = row_plan(g, cl)
    r = evaluate(plan, g, cl)
    assert r.latency_s == pytest.approx(0.42)
    assert r.comm_bytes == 112 and r.link_bytes == {"d0->d1": 48, "d1->d0": 64}
    assert r.flops == {"d0": 288, "d1": 288} and r.compute_s["d1"] == pytest.approx(0.288)
    # throughput: busiest resource per inference is a device's 0.288 s of compute
    assert r.throughput_per_s == pytest.approx(1 / 0.288)
    # memory: weights (2*9 + 2) * 4 = 80 B; d0: input 64 + its output rows 64 (and, at the end,
    # its rows + d1's 64 received); d1: received 48 + its output rows 64
    assert r.weight_bytes == {"d0": 80, "d1": 80}
    assert r.peak_memory_bytes == {"d0": 80 + 128, "d1": 80 + 112}
    assert verify(plan, net, x, g, cl).ok


def test_shared_medium_serialises_messages():
    net, x, g = tiny()
    mesh, shared = two_devices("mesh"), two_devices("shared")
    assert evaluate(row_plan(g, shared), g, shared).latency_s >= evaluate(row_plan(g, mesh), g, mesh).latency_s
    # throughput on a shared medium counts all messages on one resource
    r = evaluate(row_plan(g, shared), g, shared)
    assert r.throughput_per_s == pytest.approx(1 / max(0.288, 0.058 + 0.074))


def test_memory_over_limit_is_reported():
    net, x, g = tiny()
    small = Cluster("small", (Device("d0", 1000.0, 150), Device("d1", 1000.0, 10_000)),
                    {("d0", "d1"): 1000.0, ("d1", "d0"): 1000.0}, 0.01, "mesh")
    r = evaluate(row_plan(g, small), g, small)
    assert r.over_memory == {"d0": 208 - 150} and "d0" in r.infeasible_reason()


def test_json_roundtrip(tmp_path):
    net, x, g = tiny()
    plan = row_plan(g, two_devices())
    p = tmp_path / "plan.json"
    plan.save(str(p))
    back = Plan.load(str(p))
    assert back.to_dict() == plan.to_dict()
    assert verify(back, net, x, g).ok


def test_json_roundtrip_zoo(zoo):
    module, x, g = zoo("resnet18")
    plan = layerwise(g, homogeneous(3), model="resnet18").plan
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back.to_dict() == plan.to_dict()
    assert verify(back, module, x, g).ok


def mutated(plan, fn):
    d = copy.deepcopy(plan.to_dict())
    fn(d)
    return Plan.from_dict(d)


@pytest.mark.parametrize("fn,match", [
    (lambda d: d["stages"][0]["tasks"][1].update(box=[0, 2, 1, 4, 0, 4]), "tile"),          # overlap
    (lambda d: d["stages"][0]["tasks"].pop(), "tile"),                                       # gap
    (lambda d: d["stages"][0]["tasks"][1].update(device="zz"), "unknown device"),
    (lambda d: d.update(source="zz"), "source"),
    (lambda d: d["stages"][0]["transfers"].clear(), "lacks"),
    (lambda d: d["final"].clear(), "lacks"),
    (lambda d: d["stages"][0]["transfers"][0].update(nbytes=4), "declares"),
    (lambda d: d["stages"][0]["transfers"][0].update(src="d1", dst="d0"), "does not hold"),
    (lambda d: d["stages"][0]["ops"].append("nope"), "does not have"),
    (lambda d: d["stages"][0]["tasks"][0].update(box=[0, 2, 0, 2, 0, 9]), "outside"),
])
def test_invalid_plans_are_refused(fn, match):
    net, x, g = tiny()
    cl = two_devices()
    plan = mutated(row_plan(g, cl), fn)
    with pytest.raises(PlanError, match=match):
        evaluate(plan, g, cl)
    with pytest.raises(PlanError):
        verify(plan, net, x, g, cl)


def test_stage_order_and_outputs_are_checked(zoo):
    module, x, g = zoo("lenet5")
    plan = coedge(g, homogeneous(2), model="lenet5").plan
    d = plan.to_dict()
    d["stages"][0], d["stages"][1] = d["stages"][1], d["stages"][0]
    with pytest.raises(PlanError, match="before it is computed"):
        evaluate(Plan.from_dict(d), g, homogeneous(2))
    with pytest.raises(PlanError, match="format"):
        Plan.from_dict({"format": "other"})
    with pytest.raises(PlanError, match="malformed"):
        Plan.from_dict({"format": "partopt-plan/1"})


def test_verification_can_fail():
    """A plan whose data is wrong must fail: the comparison with the unsplit model is not vacuous."""
    net, x, g = tiny()
    cl = two_devices()
    plan = row_plan(g, cl)
    assert verify(plan, net, x, g, cl).ok
    # d1's input rows arrive shifted by one row: the plan still moves its planned bytes, but the
    # rows it computes from are the wrong ones
    d = plan.to_dict()
    t = d["stages"][0]["transfers"][0]
    t["box"] = [0, 1, 0, 3, 0, 4]          # rows 0..2 instead of 1..3
    bad = Plan.from_dict(d)
    with pytest.raises(PlanError):         # d1 then lacks row 3: refused before execution
        verify(bad, net, x, g, cl)


def test_verify_reports_numeric_mismatch(monkeypatch):
    """If the split execution computed something else, verify says so (ok False, reason)."""
    import partopt.verify as pv
    net, x, g = tiny()
    cl = two_devices()
    plan = row_plan(g, cl)
    real = pv.run_op
    monkeypatch.setattr(pv, "run_op", lambda *a, **k: real(*a, **k) * 1.001)
    v = verify(plan, net, x, g, cl)
    assert not v.ok and "relative error" in v.reason and v.max_rel_err > 1e-4


def test_cached_routing_is_the_uncached_routing(zoo):
    """route_stage caches per graph on (stage, holdings of what it reads): a cache hit gives
    the transfers, gather and holding that routing afresh gives, for every stage of plans whose
    stages meet the same tensors held differently (row strips over 2 and over 3 devices)."""
    from partopt.plan import _route_stage, gathered, route_stage
    net, x, g = zoo("alexnet")
    for n in (2, 3, 2):         # the last run hits the cache filled by the first
        plan = coedge(g, homogeneous(n), model="alexnet").plan
        cached = {g.input_name: gathered(g, g.input_name, plan.source)}
        fresh = dict(cached)
        for s in plan.stages:
            a = route_stage(g, Stage(s.ops, s.tasks, gather_to=s.gather_to), cached)
            b = _route_stage(g, Stage(s.ops, s.tasks, gather_to=s.gather_to), fresh)
            assert (a.transfers, a.gather) == (b.transfers, b.gather) == (s.transfers, s.gather)
            assert cached[s.output] == fresh[s.output]
    assert len(g._route_cache) > 0
