import dataclasses

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from partopt.cluster import heterogeneous, homogeneous, preset
from partopt.errors import PlanError
from partopt.graph import LayerGraph
from partopt.methods import iop
from partopt.plan import evaluate
from partopt.verify import verify
from partopt.zoo import CLASSIC as ZOO, randomize

GiB = 2 ** 30
MiB = 2 ** 20


def clusters(n):
    """Homogeneous shared-medium and heterogeneous mesh clusters of n devices."""
    homo = homogeneous(n, name=f"pi4x{n}")
    het = heterogeneous([(f"d{i}", (1 + i % 3) * 10e9, 4 * GiB) for i in range(n)], 12.5e6, name=f"het{n}")
    return [homo, het]


def tiny_clusters(n):
    """Slow devices and links, so that the tiny model's plans differ by milliseconds, far above
    the MILP's tolerances (about 1e-7 s of big-M slack)."""
    homo = homogeneous(n, flops_per_s=1e7, bandwidth_bytes_per_s=1e6, latency_s=1e-4, name=f"slow{n}")
    het = heterogeneous([(f"d{i}", (1 + i % 3) * 1e7, GiB) for i in range(n)], 1e6, latency_s=1e-4, name=f"shet{n}")
    return [homo, het]


def tiny(seed=0, size=12, c=(4, 5, 4)):
    """conv -> relu -> conv -> relu -> pool -> conv -> bn -> relu: two candidate pairs that share a conv."""
    net = nn.Sequential(nn.Conv2d(3, c[0], 3, padding=1), nn.ReLU(), nn.Conv2d(c[0], c[1], 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(c[1], c[2], 3, padding=1), nn.BatchNorm2d(c[2]), nn.ReLU())
    x = torch.randn(1, 3, size, size)
    randomize(net, seed)
    return net, x, LayerGraph.from_module(net, x)


def all_pairs(g, cl):
    chosen = {}
    for p in iop.legal_pairs(g, len(cl.devices)):
        if not iop._conflict(p, chosen):
            chosen[p] = iop.speed_counts(p.channels, cl)
    return chosen


# -- legality ------------------------------------------------------------------------------
def test_legal_pairs_of_the_zoo(zoo):
    _, _, r = zoo("resnet18")
    pairs = iop.legal_pairs(r)
    assert len(pairs) == 8 and all(p.a.endswith("conv1") and p.b.endswith("conv2") for p in pairs)
    _, _, m = zoo("mobilenet_v2")
    # expand -> depthwise -> project: the depthwise conv stands inside the A stage
    assert any(len(p.groups) == 2 and m.op[m.op[p.b].inputs[0]].kind == "act" for p in iop.legal_pairs(m))
    _, _, y = zoo("yolov2_tiny")
    last_conv = [o.name for o in y.ops if o.kind == "conv"][-1]
    assert all(p.b != last_conv for p in iop.legal_pairs(y))  # nothing after it to carry the reduction
    _, _, le = zoo("lenet5")
    assert len(iop.legal_pairs(le, 6)) == 1 and iop.legal_pairs(le, 7) == []   # conv1 has 6 channels


@pytest.mark.parametrize("names, msg", [
    ([("layers_0_conv2", "layers_1_conv1")], "not channel-local"),
    ([("layers_0_bn1", "layers_0_conv2")], "does not start a layer"),
    ([("layers_0_conv1", "layers_1_conv1")], "can pair with is layers_0_conv2"),
    ([("nope", "layers_0_conv2")], "no op 'nope'"),
    ([("layers_0_conv1", "layers_0_conv2"), ("layers_0_conv1", "layers_0_conv2")], "share a layer"),
])
def test_forced_illegal_pairs_are_refused(zoo, names, msg):
    _, _, g = zoo("resnet18")
    with pytest.raises(iop.IllegalPairError, match=msg):
        iop.heuristic(g, homogeneous(2), pairs=names)


def test_grouped_conv_cannot_be_a(zoo):
    _, _, m = zoo("mobilenet_v2")
    dw = next(o for o in m.ops if o.kind == "conv" and o.groups > 1)
    nxt = next(o.name for o in m.ops[m.ops.index(dw) + 1:] if o.kind == "conv")
    with pytest.raises(iop.IllegalPairError, match="grouped conv"):
        iop.check_pairs(m, [(dw.name, nxt)], 2)


def test_too_few_channels_is_refused(zoo):
    _, _, g = zoo("lenet5")
    p = iop.legal_pairs(g)[0]
    with pytest.raises(iop.IllegalPairError, match="cannot give each"):
        iop.check_pairs(g, [(p.a, p.b)], 8)


# -- execution in torch --------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_all_pairs_verify_in_torch(zoo, name):
    net, x, g = zoo(name)
    for cl in [clusters(2)[0], clusters(3)[1]]:
        chosen = all_pairs(g, cl)
        assert chosen or name == "lenet5"
        plan = iop.plan_of(g, cl, chosen, model=name)
        v = verify(plan, net, x, g, cl)
        assert v.ok and v.max_rel_err <= 1e-4, (name, cl.name, v.reason)
        assert v.bytes_moved == v.bytes_planned == plan.comm_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_all_pairs_and_greedy_verify_everywhere(zoo, name, n):
    net, x, g = zoo(name)
    for cl in clusters(n):
        for plan in (iop.plan_of(g, cl, all_pairs(g, cl), model=name), iop.heuristic(g, cl, model=name).plan):
            v = verify(plan, net, x, g, cl)
            assert v.ok and v.max_rel_err <= 1e-4, (name, cl.name, v.reason)
            assert v.bytes_moved == v.bytes_planned


@settings(max_examples=25, deadline=None)
@given(c1=st.integers(3, 9), c2=st.integers(3, 9), k=st.sampled_from([1, 3, 5]), n=st.integers(2, 3),
       size=st.integers(6, 14), data=st.data())
def test_random_pairs_and_counts_verify(c1, c2, k, n, size, data):
    net, x, g = tiny(seed=c1 * 31 + c2, size=size, c=(c1, c2, 4))
    net[2] = nn.Conv2d(c1, c2, k, padding=k // 2)
    randomize(net, 1)
    g = LayerGraph.from_module(net, x)
    cl = clusters(n)[data.draw(st.integers(0, 1))]
    pairs = iop.legal_pairs(g, n)
    p = data.draw(st.sampled_from(pairs))
    cuts = sorted(data.draw(st.lists(st.integers(1, p.channels - 1), min_size=n - 1, max_size=n - 1, unique=True)))
    counts = [b - a for a, b in zip([0] + cuts, cuts + [p.channels])]
    plan = iop.plan_of(g, cl, {p: counts})
    v = verify(plan, net, x, g, cl)
    assert v.ok and v.max_rel_err <= 1e-4, v.reason


# -- the model: pair stages and memory -----------------------------------------------------
def test_pair_splits_weights_of_a_and_b():
    net, x, g = tiny(c=(8, 8, 4))
    cl = homogeneous(2, memory_bytes=GiB)
    p = iop.legal_pairs(g, 2)[0]
    plan = iop.plan_of(g, cl, {p: [3, 5]})
    rep = evaluate(plan, g, cl)
    a, b = g.op[p.a], g.op[p.b]
    # A: rows of W_A (+ bias), B: columns of W_B (+ the whole bias on each device holding a partial)
    wa = lambda c: (c * a.in_chw[0] * 9 + c) * 4
    wb = lambda c: (b.out_chw[0] * c * 9 + b.out_chw[0]) * 4
    rest = sum(o.param_bytes for o in g.ops if o.name not in (p.a, p.b))
    assert rep.weight_bytes["pi0"] == wa(3) + wb(3) + rest
    assert rep.weight_bytes["pi1"] == wa(5) + wb(5) + rest
    # the B stage moves nothing; its partial sums travel in the reduce-scatter after it
    b_stage = next(s for s in plan.stages if s.ops == [p.b])
    assert b_stage.transfers == [] and b_stage.partial


# -- greedy and exact ----------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
def test_exact_equals_brute_force_near_a_tenth_of_a_millisecond(solver):
    """Fast devices: plans of about 1e-4 s that differ by far less. With times in microseconds
    (MILP) and integer picoseconds (CP-SAT) and explicit gaps (partopt.solvers), every back-end's
    optimum equals brute force to 1e-6 relative."""
    net, x, g = tiny(c=(12, 12, 8), size=6)
    for c in (homogeneous(2, flops_per_s=2e9, bandwidth_bytes_per_s=2e8, latency_s=2e-6, name="fast2"),
              heterogeneous([("a", 1e9, GiB), ("b", 3e9, GiB)], 5e8, latency_s=1e-6, name="fasth2")):
        bf = iop.brute_force(g, c)
        assert 2e-5 < bf.report.latency_s < 5e-4
        ex = iop.exact(g, c, solver=solver)
        assert ex.status == "optimal"
        assert ex.report.latency_s == pytest.approx(bf.report.latency_s, rel=1e-6, abs=0)
        assert ex.plan.meta["model_latency_s"] == pytest.approx(ex.report.latency_s, rel=1e-6, abs=0)


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
@pytest.mark.parametrize("n, which", [(2, 0), (2, 1), (3, 1)])
@pytest.mark.parametrize("cuts", [False, True])
def test_exact_equals_brute_force(rated, solver, n, which, cuts):
    """Over three bandwidths and three memory caps (none, and two that rule out the plan
    without pairs), the exact model finds the brute-force optimum, or proves there is none,
    with and without the load cuts. Many channels on a small map make weights dominate memory,
    where pairs pay off."""
    if cuts and solver == "cpsat":
        pytest.skip("the cuts are for the MILP back-ends: they slow CP-SAT past its limit (iop.exact's doc)")
    net, x, g = tiny(c=(12, 12, 8), size=6)
    paired = 0
    tol = 1e-6 if solver != "cpsat" else 1e-4
    for f in (0.1, 1.0, 10.0):
        free = rated(tiny_clusters(n)[which].scaled(f))
        base_peak = evaluate(iop.plan_of(g, free, {}), g, free).peak_memory_bytes
        for cut in (None, 0.1, 0.3):
            c = free if cut is None else dataclasses.replace(free, name="capped", devices=tuple(
                dataclasses.replace(d, memory_bytes=int(base_peak[d.name] * (1 - cut))) for d in free.devices))
            bf = iop.brute_force(g, c)
            ex = iop.exact(g, c, solver=solver, cuts=cuts)
            assert ex.status == ("optimal" if bf.feasible else "infeasible"), (f, cut, bf.reason)
            if not bf.feasible:
                continue
            paired += bool(bf.plan.meta["pairs"])
            assert ex.report.memory_ok
            assert ex.report.latency_s == pytest.approx(bf.report.latency_s, rel=tol, abs=1e-6)
            assert ex.plan.meta["model_latency_s"] == pytest.approx(ex.report.latency_s, rel=tol, abs=1e-6)
            h = iop.heuristic(g, c)
            if h.feasible:
                assert ex.report.latency_s <= h.report.latency_s * (1 + tol)
    assert paired, "no instance needed a pair: the test would not exercise the channel counts"


def test_memory_too_small_is_infeasible_with_reason(zoo):
    _, _, g = zoo("alexnet")
    cl = homogeneous(2, memory_bytes=8 * MiB)
    for sol in (iop.heuristic(g, cl), iop.exact(g, cl, solver="highs")):
        assert sol.status == "infeasible"
        assert "device pi" in sol.reason and "lacks" in sol.reason


@pytest.mark.parametrize("claim", ["infeasible", "optimal"])
def test_a_wrong_solver_answer_never_passes_for_proven(zoo, monkeypatch, claim):
    """A back-end that calls the instance infeasible, or proves "optimal" a plan slower than the
    greedy's (both seen from HiGHS on numerically hard instances), does not make the exact
    method say so: the greedy's plan comes back as `feasible`, with the reason."""
    from partopt import maxplus
    from partopt.solvers import SolveResult
    _, _, g = zoo("alexnet")
    cl = clusters(3)[0]
    h = iop.heuristic(g, cl)
    assert h.feasible and not h.plan.meta["pairs"]      # here no pair pays

    def wrong(self, *a, **k):
        if claim == "infeasible":
            return SolveResult("infeasible", None, None, None, 0.0, "highs")
        first = sorted(n for n in self.vars if n.startswith("x_"))[0]    # "optimal": a pair forced in
        self.prob.addConstraint(self.vars[first] == 1)
        return maxplus.solve_milp(self.prob, "highs", scale=self.obj_scale)
    monkeypatch.setattr(maxplus.PulpBuilder, "solve", wrong)
    e = iop.exact(g, cl, solver="highs")
    assert e.status == "feasible" and e.report.latency_s == pytest.approx(h.report.latency_s, rel=1e-12)
    if claim == "infeasible":
        assert "reported infeasible" in e.reason


def test_highs_right_where_microseconds_made_its_proof_wrong(zoo):
    """VGG-16 on 4 devices at a tenth of iop-paper's bandwidth: stated in microseconds (horizon
    3.9e8 units) HiGHS proved optimal a plan 6.7x slower than the greedy's (CBC and CP-SAT were
    right). The MILP's time unit is now coarsened for long horizons (milp_units_per_s), and HiGHS
    proves the optimum CBC finds."""
    from partopt.solvers import milp_units_per_s
    _, _, g = zoo("vgg16")
    base = preset("iop-paper")
    bw = base.bw(base.names[0], base.names[1]) * 0.1
    cl = homogeneous(4, memory_bytes=GiB, bandwidth_bytes_per_s=bw, latency_s=base.latency_s, link=base.link)
    h, e = iop.heuristic(g, cl), iop.exact(g, cl, solver="highs")
    assert e.status == "optimal" and e.report.latency_s <= h.report.latency_s * (1 + 1e-9)
    assert e.plan.meta["model_latency_s"] == pytest.approx(e.report.latency_s, rel=1e-9)
    assert milp_units_per_s(1e-3) == 1e6 and milp_units_per_s(392.0) == 1e4


@pytest.mark.parametrize("name", ["lenet5", "alexnet", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_greedy_never_beats_exact(zoo, name):
    _, _, g = zoo(name)
    for cl in clusters(3):
        for f in (0.1, 10.0):
            c = cl.scaled(f)
            h, e = iop.heuristic(g, c), iop.exact(g, c, solver="highs")
            assert e.status == "optimal"
            assert e.report.latency_s <= h.report.latency_s * (1 + 1e-9)
            assert e.plan.meta["model_latency_s"] == pytest.approx(e.report.latency_s, rel=1e-6, abs=1e-6)


def test_iop_fits_where_coedge_does_not(zoo):
    """Splitting A's and B's weights is what lets IOP fit a device that row splits cannot."""
    from partopt.methods.baselines import coedge
    _, _, g = zoo("resnet18")
    roomy = homogeneous(4, memory_bytes=GiB)
    peak_all = evaluate(iop.plan_of(g, roomy, all_pairs(g, roomy)), g, roomy).max_peak_memory_bytes
    cl = homogeneous(4, memory_bytes=peak_all + MiB)
    assert coedge(g, cl).status == "infeasible"
    h = iop.heuristic(g, cl)
    assert h.status == "heuristic" and h.report.memory_ok


def test_model_exports(tmp_path, zoo):
    from partopt.solvers import export_model
    _, _, g = zoo("lenet5")
    cl = homogeneous(2)
    for solver, ext in (("highs", "lp"), ("cbc", "mps"), ("cpsat", "pb.txt")):
        path = export_model(iop.model(g, cl, solver=solver), str(tmp_path / f"iop.{ext}"))
        text = open(path).read()
        assert "x_0" in text and "n_0_1" in text


def test_cli_solve_iop_with_a_forced_pair(capsys):
    from partopt.cli import main
    assert main(["solve", "resnet18", "--method", "iop", "--pair", "layers_0_conv1,layers_0_conv2",
                 "--cluster", "iop-paper", "--verify", "--json"]) == 0
    import json
    rec = json.loads(capsys.readouterr().out)
    assert rec["status"] == "heuristic" and rec["verified"] is True
    assert main(["solve", "resnet18", "--method", "iop", "--pair", "layers_0_conv2,layers_1_conv1"]) == 2
    assert "not channel-local" in capsys.readouterr().err
    assert main(["solve", "resnet18", "--method", "coedge", "--pair", "a,b"]) == 2
    assert main(["solve", "lenet5", "--method", "iop", "--outside", "channels", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "heuristic"
    for bad in (["--method", "coedge", "--outside", "channels"], ["--method", "iop", "--outside", "rows", "--exact"]):
        assert main(["solve", "lenet5"] + bad) == 2
        assert "--outside applies only to --method iop without --exact" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["alexnet", "mobilenet_v2"])
def test_greedy_against_the_papers_own_baseline(zoo, name):
    """outside="channels": the layers outside the pairs are split as coedge-concat splits them,
    so with no pair the plan is coedge-concat's, and the greedy is never slower than it; on
    MobileNetV2 (an expand conv, a depthwise conv, a project conv) pairs replace the all-gather
    of the wide expanded map by a sum of the narrow projection. Plans verify in torch."""
    from partopt.methods.baselines import coedge_concat
    net, x, g = zoo(name)
    cl = preset("iop-paper")
    base = coedge_concat(g, cl, model=name)
    assert evaluate(iop.plan_of(g, cl, {}, model=name, outside="channels"), g, cl).latency_s == base.report.latency_s
    h = iop.heuristic(g, cl, model=name, outside="channels")
    assert h.report.latency_s <= base.report.latency_s
    if name == "mobilenet_v2":
        assert h.plan.meta["pairs"] and h.report.latency_s < 0.9 * base.report.latency_s
    v = verify(h.plan, net, x, g, cl)
    assert v.ok and v.max_rel_err <= 1e-4 and v.bytes_moved == v.bytes_planned
    with pytest.raises(PlanError, match="outside"):
        iop.plan_of(g, cl, {}, outside="columns")


@pytest.mark.slow
def test_load_cuts_with_tight_tolerances_keep_the_optimum():
    """ResNet-18 on 8 devices, bandwidth x10, tight memory: with the load cuts and HiGHS's
    default tolerances the solver once called 1.0967 s optimal while the greedy's plan takes
    1.0919 s; with the cuts on (and HIGHS_TIGHT) the exact model proves the greedy's latency."""
    import sys
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from bench_iop import all_pairs_plan, graph_of, with_memory
    from partopt.methods.baselines import coedge
    base = preset("iop-paper")
    g = graph_of("resnet18")
    roomy = homogeneous(8, memory_bytes=base.devices[0].memory_bytes,
                        bandwidth_bytes_per_s=10 * base.bw(base.devices[0].name, base.devices[1].name),
                        latency_s=base.latency_s, link=base.link, name="iop8")
    cm = coedge(g, roomy, model="resnet18").report.max_peak_memory_bytes
    am = evaluate(all_pairs_plan(g, roomy, "resnet18"), g, roomy).max_peak_memory_bytes
    cl = with_memory(roomy, (cm + am) / 2)
    h = iop.heuristic(g, cl, model="resnet18")
    e = iop.exact(g, cl, model="resnet18", solver="highs", cuts=True, time_limit=120)
    assert e.status == "optimal", e.reason
    assert e.report.latency_s <= h.report.latency_s * (1 + 1e-9)
    assert e.plan.meta["model_latency_s"] == pytest.approx(e.report.latency_s, rel=1e-6)
