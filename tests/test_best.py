"""best (every method, device subsets, mixed blocks) and the lower bound no plan can beat."""
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings

from partopt.bounds import earliest_arrivals, lower_bound, necessary_flops
from partopt.cluster import Device, heterogeneous, homogeneous, preset
from partopt.methods import METHODS, best, dpfp, iop
from partopt.methods.baselines import layer_stages
from partopt.plan import Stage, build_plan, evaluate
from partopt.verify import verify

from test_split_execution import CL, case, random_tasks

GiB = 2 ** 30
OTHERS = [m for m, e in METHODS.items() if e.demo and m != "best"]


@pytest.mark.parametrize("name,cl", [("lenet5", "pi4x2"), ("lenet5", "hetero3"), ("alexnet", "pi4x4"),
                                     ("alexnet", "hetero3"), ("lenet5", "dn2pciot-2")])
def test_best_is_never_slower_than_any_other_heuristic_and_verifies(zoo, name, cl):
    net, x, g = zoo(name)
    c = preset(cl)
    b = best.heuristic(g, c, model=name)
    others = OTHERS + (["dn2pciot", "dn2pciot-metis", "dn2pciot-per-layer", "dn2pciot-greedy"] if name == "lenet5" else [])
    for m in others:
        s = METHODS[m].heuristic(g, c, model=name)
        if s.feasible:
            assert b.report.latency_s <= s.report.latency_s * (1 + 1e-9), m
    assert b.status == "heuristic" and b.plan.method == "best" and b.plan.meta["candidates"] >= len(OTHERS)
    assert b.report.latency_s == evaluate(b.plan, g, c).latency_s
    v = verify(b.plan, net, x, g, c)
    assert v.ok and v.bytes_moved == v.bytes_planned
    assert lower_bound(g, c).seconds <= b.report.latency_s * (1 + 1e-12)


def test_subsets_beat_the_whole_cluster_where_messages_are_dear(zoo):
    """AlexNet on four Pis sharing a 2 ms radio: the best plan leaves devices idle."""
    net, x, g = zoo("alexnet")
    c = preset("pi4x4")
    b = best.heuristic(g, c, model="alexnet")
    assert b.report.latency_s < min(METHODS[m].heuristic(g, c, model="alexnet").report.latency_s for m in OTHERS)
    used = {t.device for s in b.plan.stages for t in s.tasks}
    assert used != set(c.names)


def test_mixed_blocks_dp_value_is_evaluate(zoo):
    net, x, g = zoo("alexnet")
    for c in (preset("hetero3"), preset("pi4x4")):
        plan, value = best.mixed_blocks(g, c, model="alexnet")
        assert evaluate(plan, g, c).latency_s == pytest.approx(value, rel=1e-12)
        # every block alone on one subset of the DP is a blocking the DP could pick: it is never better
        assert value <= dpfp.dp(dpfp.problem(g, c))[0] * (1 + 1e-12)
        assert verify(plan, net, x, g, c).ok


def test_mixed_blocks_equals_brute_force_over_blockings_and_subsets(zoo):
    """LeNet-5 on 3 heterogeneous devices: every blocking x every per-block subset of the DP's list."""
    import itertools
    net, x, g = zoo("lenet5")
    c = heterogeneous([("a", 1e9, GiB), ("b", 3e9, GiB), ("c", 2e9, GiB)], 2e6, latency_s=1e-4)
    plan, value = best.mixed_blocks(g, c, model="lenet5")
    master, peers = "a", best.peers_by_speed(c, "a")
    subsets = [[master] + peers[:k] for k in range(3)] + [peers[:k] for k in range(1, 3)]
    speed = {d.name: d.flops_per_s for d in c.devices}
    probs = [dpfp.problem(g, c, master, shares={d: speed[d] if d in s else 0.0 for d in speed}) for s in subsets]
    n = probs[0].n
    brute = float("inf")
    for mask in itertools.product((0, 1), repeat=n - 1):
        cuts = [0] + [k + 1 for k, m in enumerate(mask) if m] + [n]
        blocks = list(zip(cuts, cuts[1:]))
        for pick in itertools.product(range(len(probs)), repeat=len(blocks)):
            brute = min(brute, sum(probs[k].cost[b] for k, b in zip(pick, blocks)) + probs[0].tail_s)
    assert value == pytest.approx(brute, rel=1e-12)


def test_best_infeasible_when_nothing_fits(zoo):
    net, x, g = zoo("alexnet")
    c = homogeneous(2, memory_bytes=1024, name="tiny")
    b = best.heuristic(g, c, model="alexnet")
    assert b.status == "infeasible" and "no candidate plan fits memory" in b.reason


def test_cli_best_reports_the_lower_bound_and_refuses_exact(capsys):
    import json
    from partopt.cli import main
    assert main(["solve", "lenet5", "--cluster", "pi4x2", "--method", "best", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["method"] == "best" and 0 < rec["lower_bound_s"] <= rec["latency_s"]
    assert main(["solve", "lenet5", "--cluster", "pi4x2", "--method", "best", "--exact"]) == 2
    assert "no exact model" in capsys.readouterr().err


# --- the lower bound ---------------------------------------------------------------------

def test_bound_is_zero_communication_without_latency(zoo):
    net, x, g = zoo("alexnet")
    c = homogeneous(4, latency_s=0.0, bandwidth_bytes_per_s=1e30, link="mesh")
    lb = lower_bound(g, c)
    assert lb.necessary_flops == g.total_flops
    assert lb.seconds == pytest.approx(g.total_flops / (4 * 8e9), rel=1e-9)


def test_earliest_arrivals_shared_medium_gives_slots_to_the_fastest(zoo):
    net, x, g = zoo("lenet5")
    c = heterogeneous([("src", 1e9, GiB), ("slow", 1e9, GiB), ("fast", 9e9, GiB)], 1e6, latency_s=0.01)
    c = type(c)(c.name, c.devices, c.bandwidth, c.latency_s, "shared")
    a = earliest_arrivals(g, c, "src")
    one = 0.01 + 4 / 1e6
    assert a == pytest.approx({"src": 0.0, "fast": one, "slow": 2 * one})


@pytest.mark.parametrize("solver", ["highs"])
def test_bound_never_above_the_exact_optima_on_tiny_instances(zoo, solver):
    """LeNet-5 on 2 and 3 devices: below the brute-force optimum of IOP (every pairing and channel
    count), of DPFP's blockings, and of best's mixed-block family (brute-forced above)."""
    net, x, g = zoo("lenet5")
    for c in (homogeneous(2, bandwidth_bytes_per_s=1e9, latency_s=1e-6, link="mesh"),
              heterogeneous([("a", 1e9, GiB), ("b", 3e9, GiB), ("c", 2e9, GiB)], 2e7, latency_s=1e-5)):
        lb = lower_bound(g, c).seconds
        assert lb <= iop.brute_force(g, c).report.latency_s * (1 + 1e-12)
        assert lb <= dpfp.brute_force(dpfp.problem(g, c))[0] * (1 + 1e-12)
        assert lb <= best.mixed_blocks(g, c)[1] * (1 + 1e-12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case())
def test_every_random_plan_does_the_necessary_work_and_respects_the_bound(cs):
    """Random conv/pool stacks (stride, dilation, padding): random fused and layer-by-layer
    splits never compute fewer FLOPs than necessary_flops, nor finish before the bound."""
    assume(cs is not None)
    net, x, rnd, data = cs
    from partopt.graph import LayerGraph
    g = LayerGraph.from_module(net, x)
    need = necessary_flops(g)
    assert 0 < need <= g.total_flops
    lb = lower_bound(g, CL).seconds
    ops = [o.name for o in g.ops]
    fused = Stage(ops, random_tasks(data, g.tensor_chw(g.output), rnd))
    layered = [Stage(s, random_tasks(data, g.tensor_chw(s[-1]), rnd)) for s in layer_stages(g)]
    for stages in ([fused], layered):
        plan = build_plan(g, CL, stages, model="m", method="random")
        rep = evaluate(plan, g, CL)
        assert sum(rep.flops.values()) >= need
        assert rep.latency_s >= lb * (1 - 1e-12)


def test_necessary_work_skips_what_a_stride_never_reads():
    """A 1x1 stride-2 conv reads every other row and column: the bound counts only those of the
    conv before it; a fused plan computes their hull (rows 0..6 of 8), still fewer FLOPs than
    the model's total, so the total would not be a valid bound."""
    import torch
    import torch.nn as nn
    from partopt.graph import LayerGraph
    from partopt.plan import Task
    from partopt.geometry import Box
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 1, stride=2)).eval()
    x = torch.randn(1, 3, 8, 8)
    g = LayerGraph.from_module(net, x)
    c = homogeneous(1, link="mesh")
    plan = build_plan(g, c, [Stage([o.name for o in g.ops], [Task("pi0", Box.full(g.tensor_chw(g.output)))])],
                      model="m", method="single")
    flops = sum(evaluate(plan, g, c).flops.values())
    first, second = g.ops
    assert necessary_flops(g) == first.flops // 4 + second.flops < flops < g.total_flops
    assert flops == first.flops * 49 // 64 + second.flops
