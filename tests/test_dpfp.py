import pytest
import torch
import torch.nn as nn

from partopt.cluster import heterogeneous, homogeneous, preset
from partopt.graph import LayerGraph
from partopt.methods import dpfp
from partopt.verify import verify
from partopt.zoo import ZOO, randomize

GiB = 2 ** 30


def clusters(n):
    """Homogeneous shared-medium and heterogeneous mesh clusters of n devices."""
    homo = homogeneous(n, name=f"pi4x{n}")
    het = heterogeneous([(f"d{i}", (1 + i % 3) * 10e9, 4 * GiB) for i in range(n)], 12.5e6, name=f"het{n}")
    return [homo, het]


def chain(seed=0):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 5, stride=2),
                        nn.ReLU(), nn.AvgPool2d(2))
    x = torch.randn(1, 3, 64, 64)
    randomize(net, seed)
    return net, x, LayerGraph.from_module(net, x)


def test_cut_points_follow_residuals(zoo):
    _, _, g = zoo("resnet18")
    cuts = dpfp.cut_points(g)
    names = [o.name for o in g.ops]
    # no cut inside a basic block: the skip tensor would cross it too
    for p in cuts:
        crossing = {t for o in g.ops[p:] for t in o.inputs if t == g.input_name or names.index(t) < p}
        assert len(crossing) == 1
    _, _, v = zoo("vgg16")
    assert dpfp.cut_points(v) == list(range(len(v.ops)))         # a chain: every position


@pytest.mark.parametrize("case", ["lenet5", "alexnet", "chain"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_dp_equals_brute_force_and_evaluate(zoo, case, n):
    net, x, g = chain() if case == "chain" else zoo(case)
    for cl in clusters(n):
        p = dpfp.problem(g, cl)
        v_dp, blocks = dpfp.dp(p)
        v_bf, _ = dpfp.brute_force(p)
        assert v_dp == pytest.approx(v_bf, rel=1e-12)
        sol = dpfp.heuristic(g, cl, model=case)
        # the DP's objective is what the one cost model says of its plan, to rounding
        assert sol.report.latency_s == pytest.approx(v_dp, rel=1e-12)
        assert sol.plan.meta["blocks"] == [list(b) for b in blocks]


@pytest.mark.parametrize("name", list(ZOO))
def test_evaluate_is_additive_over_blocks(zoo, name):
    """Every blocking's evaluated latency is the sum of its block costs (what makes the DP exact)."""
    _, _, g = zoo(name)
    p = dpfp.problem(g, preset("pi4x4"))
    from partopt.plan import evaluate
    for blocks in ([(0, p.n)], [(i, i + 1) for i in range(p.n)], [(0, p.n // 2), (p.n // 2, p.n)]):
        plan = dpfp.plan_of(p, blocks, model=name, method="t")
        assert evaluate(plan, g, p.cluster).latency_s == pytest.approx(dpfp.latency_of(p, blocks), rel=1e-12)


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
@pytest.mark.parametrize("name", ["vgg16", "resnet18", "yolov2_tiny"])
def test_exact_agrees_with_dp(zoo, name, solver):
    _, _, g = zoo(name)
    for cl in (preset("pi4x4"), preset("hetero3"), preset("pi4x4").scaled(0.1)):
        v_dp, _ = dpfp.dp(dpfp.problem(g, cl))
        sol = dpfp.exact(g, cl, model=name, solver=solver, time_limit=60)
        assert sol.status == "optimal" and sol.mode == "exact" and sol.solver == solver
        tol = 1e-9 if solver != "cpsat" else 1e-9 * len(sol.plan.stages) * 10   # CP-SAT: integer ns
        assert sol.report.latency_s == pytest.approx(v_dp, rel=1e-9, abs=tol)
        assert sol.gap == 0.0


@pytest.mark.parametrize("name", list(ZOO))
def test_dpfp_and_fused_verify(zoo, name):
    module, x, g = zoo(name)
    for cl in [preset("pi4x2"), preset("hetero3")]:
        for fn in (dpfp.heuristic, dpfp.fused):
            sol = fn(g, cl, model=name)
            assert sol.status == "heuristic"
            v = verify(sol.plan, module, x, g, cl)
            assert v.ok, v.reason


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("name", list(ZOO))
def test_dpfp_verifies_2_to_8_devices(zoo, name, n):
    module, x, g = zoo(name)
    for cl in clusters(n):
        sol = dpfp.heuristic(g, cl, model=name)
        v = verify(sol.plan, module, x, g, cl)
        assert v.ok, v.reason


def test_dp_never_worse_than_fused_or_layer_blocks(zoo):
    _, _, g = zoo("vgg16")
    for cl in clusters(4):
        p = dpfp.problem(g, cl)
        v, _ = dpfp.dp(p)
        assert v <= dpfp.latency_of(p, [(0, p.n)]) + 1e-12
        assert v <= dpfp.latency_of(p, [(i, i + 1) for i in range(p.n)]) + 1e-12


def test_model_export(tmp_path, zoo):
    from partopt.solvers import export_model
    _, _, g = zoo("lenet5")
    p = dpfp.problem(g, preset("pi4x4"))
    prob, x = dpfp.build_model(p, "cbc")
    assert len(x) == p.n * (p.n + 1) // 2
    assert "flow_0" in open(export_model(prob, str(tmp_path / "dpfp.lp"))).read()
