import pytest
import torch
import torch.nn as nn

from partopt.cluster import heterogeneous, homogeneous, preset
from partopt.graph import LayerGraph
from partopt.methods import dpfp
from partopt.verify import verify
from partopt.zoo import CLASSIC as ZOO, randomize
from conftest import kinded

GiB = 2 ** 30


def clusters(n):
    """Homogeneous shared-medium and heterogeneous mesh clusters of n devices."""
    homo = homogeneous(n, name=f"pi4x{n}")
    het = heterogeneous([(f"d{i}", (1 + i % 3) * 10e9, 4 * GiB) for i in range(n)], 12.5e6, name=f"het{n}")
    return [homo, het]


def chain(seed=0, size=64):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 5, stride=2),
                        nn.ReLU(), nn.AvgPool2d(2))
    x = torch.randn(1, 3, size, size)
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
        sol = dpfp.exact(g, cl, model=name, solver=solver, time_limit=60, rows="speed")
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
    assert len(x) == p.n * (p.n + 1) // 2 + 1          # every block, and the tail
    text = open(export_model(prob, str(tmp_path / "dpfp.lp"))).read()
    assert "flow_0" in text and "memory_0" in text


def test_exact_keeps_memory_by_choosing_another_blocking(zoo):
    """Where the fastest blocking breaks memory, the exact model takes the fastest that fits
    (brute force over every blocking with the memory rule agrees)."""
    from partopt.methods import segment_path
    _, _, g = zoo("alexnet")
    roomy = preset("pi4x2")
    p = dpfp.problem(g, roomy, rows="optimal")
    arcs, last = dpfp.arcs(p)
    free_value, free = segment_path.shortest(arcs, last)
    need = segment_path.memory_of(arcs, free, roomy.names)
    # a cap just under what the memory-free optimum needs on its busiest device
    cap = max(need.values()) - 1
    tight = homogeneous(2, memory_bytes=cap, name="tight2")
    e = dpfp.exact(g, tight, model="alexnet")
    bf_value, bf = segment_path.brute_force(arcs, last, tight)
    if bf:
        assert e.status == "optimal" and e.report.memory_ok
        assert e.report.latency_s == pytest.approx(bf_value, rel=1e-9)
        assert e.report.latency_s > free_value
    else:
        assert e.status == "infeasible" and e.reason


# -- integer rows (partopt/methods/rfs_rows.py) ------------------------------------------------
import itertools

from partopt.geometry import Box
from partopt.methods import rfs_rows
from partopt.methods.rfs_rows import best_rows
from partopt.plan import Stage, Task, gathered, route_stage, stage_span


def span_of(g, cl, ops, x, master, segs):
    c, _, w = g.op[ops[-1]].out_chw
    st = Stage(ops, [Task(d, Box(0, c, a, b, 0, w)) for d, (a, b) in segs.items()], gather_to=master)
    return stage_span(g, cl, route_stage(g, st, {x: gathered(g, x, master)}), master)


def brute_rows(g, cl, ops, x, master, orders=None, tab=None):
    """Every integer split of the block's output rows into contiguous segments, in every order
    of the devices (or in the given ``orders``), priced by ``stage_span``, or with ``tab`` (the
    block's tables) by ``table_span``: equal where ``tab.exact`` (tested below), and fast enough
    for every order of four devices."""
    h = g.op[ops[-1]].out_chw[1]

    def price(segs):
        return rfs_rows.table_span(tab, cl, master, segs) if tab is not None else span_of(g, cl, ops, x, master, segs)
    best = float("inf")
    for order in orders or itertools.permutations(cl.names):
        for cuts in itertools.combinations_with_replacement(range(h + 1), len(cl) - 1):
            b = [0, *cuts, h]
            best = min(best, price({d: (b[i], b[i + 1]) for i, d in enumerate(order) if b[i + 1] > b[i]}))
    return best


SLOW_DEVICES = [  # compute dear, messages cheap: splitting pays, so the optimum is not trivial
    homogeneous(3, flops_per_s=2e7, link="mesh", bandwidth_bytes_per_s=1e9, latency_s=1e-4, name="m3"),
    heterogeneous([("a", 4e7, GiB), ("b", 2e7, GiB), ("c", 1e7, GiB)], 5e8, 1e-4, "shared", "h3"),
    homogeneous(2, flops_per_s=1e7, bandwidth_bytes_per_s=1e8, latency_s=1e-4, name="s2"),
    homogeneous(2, name="pi2"),
]


MESH_HET = heterogeneous([("a", 2e7, GiB), ("b", 4e7, GiB), ("c", 1e7, GiB)], 1e9, 1e-4, "mesh", "mh3")
# per-kind rates and a task overhead (conftest.kinded): the row tables split FLOPs by kind
KINDED = [kinded(SLOW_DEVICES[0], 2e-4), kinded(SLOW_DEVICES[1], 2e-4), kinded(MESH_HET, 2e-4)]


@pytest.mark.parametrize("cl", SLOW_DEVICES + [MESH_HET] + KINDED, ids=lambda c: c.name)
def test_row_dp_matches_brute_force(cl):
    """The row DP (no solver) against brute force: on a mesh over every order of the devices."""
    net, x, g = chain(size=16 if cl.link == "mesh" else 32)
    p = dpfp.problem(g, cl)
    nontrivial = reordered = 0
    for i, j in [(0, p.n), (0, 1), (0, 3), (2, 6), (5, p.n)]:
        ops = [n for u in p.units[i:j] for n in u]
        r = best_rows(g, cl, ops, p.inputs[i], p.master)
        assert r.status == "optimal" and r.bound <= r.objective
        true = span_of(g, cl, ops, p.inputs[i], p.master, r.segments)
        assert true == pytest.approx(brute_rows(g, cl, ops, p.inputs[i], p.master), abs=1e-9, rel=1e-8)
        assert true == pytest.approx(r.objective, abs=1e-12, rel=1e-9)
        nontrivial += len(r.segments) > 1
        if cl.link == "mesh":
            first = [[p.master] + [d for d in cl.names if d != p.master]]
            reordered += brute_rows(g, cl, ops, p.inputs[i], p.master, orders=first) > true + 1e-12
    if cl.name != "pi2":
        assert nontrivial       # the cases exercise real splits, not everything on the master
    if cl.link == "mesh":
        assert reordered        # and an order other than source-first-then-cluster's wins somewhere


@pytest.mark.parametrize("solver", ["cpsat", "highs", "cbc"])
@pytest.mark.parametrize("cl", SLOW_DEVICES + [MESH_HET] + KINDED, ids=lambda c: c.name)
def test_row_models_are_twins_of_the_dp(cl, solver):
    """MILP and CP-SAT (rows in a given order) agree with the DP at their best over every
    order."""
    net, x, g = chain(size=16 if cl.link == "mesh" else 32)
    p = dpfp.problem(g, cl)
    orders = list(itertools.permutations(cl.names))
    for i, j in [(0, p.n), (2, 6)]:
        ops = [n for u in p.units[i:j] for n in u]
        dp_value = best_rows(g, cl, ops, p.inputs[i], p.master).objective
        runs = [best_rows(g, cl, ops, p.inputs[i], p.master, solver=solver, order=list(o)) for o in orders]
        assert all(r.status == "optimal" for r in runs)
        # CP-SAT rounds every table entry to the ns; the MILPs carry their integrality tolerance
        assert min(r.objective for r in runs) == pytest.approx(dp_value, abs=4e-9 * len(cl), rel=1e-6)


def test_row_optimum_does_not_depend_on_how_the_cluster_lists_devices():
    net, x, g = chain(size=32)
    base = [("a", 2e7, GiB), ("b", 4e7, GiB), ("c", 1e7, GiB), ("d", 3e7, GiB)]
    for link, spec in [("mesh", base), ("shared", [("a", 2e7, GiB)] + [(n, 3e7, GiB) for n in "bcd"])]:
        values = set()
        for rest in itertools.permutations(spec[1:]):
            cl = heterogeneous([spec[0], *rest], 5e8, 1e-4, link, "perm")
            p = dpfp.problem(g, cl)
            ops = [n for u in p.units for n in u]
            values.add(round(best_rows(g, cl, ops, p.inputs[0], "a").objective, 12))
        assert len(values) == 1, (link, values)


def test_every_order_lists_each_distinct_order_once():
    """The twins' orders: on a mesh interchangeable devices swapped give the same block time, so
    each sequence of device classes is listed once; on a shared medium messages follow the
    cluster's order, so every permutation. Given no order, a twin's best over them is the DP's."""
    from partopt.methods import rfs_rows
    mesh = SLOW_DEVICES[0]                                   # three identical devices on a mesh
    orders = rfs_rows.every_order(mesh, "pi0")
    assert len(orders) == 3 and sorted(o.index("pi0") for o in orders) == [0, 1, 2]
    shared = homogeneous(3, flops_per_s=2e7, bandwidth_bytes_per_s=1e9, latency_s=1e-4, link="shared")
    assert len(rfs_rows.every_order(shared, "pi0")) == 6
    net, x, g = chain(size=16)
    p = dpfp.problem(g, mesh)
    ops = [n for u in p.units for n in u]
    twin = best_rows(g, mesh, ops, p.inputs[0], p.master, solver="highs")
    assert twin.status == "optimal"
    assert twin.objective == pytest.approx(best_rows(g, mesh, ops, p.inputs[0], p.master).objective, rel=1e-6)


def test_row_solver_errors():
    from partopt.errors import SolverError
    net, x, g = chain(size=16)
    cl = SLOW_DEVICES[0]
    p = dpfp.problem(g, cl)
    ops = p.units[0]
    with pytest.raises(SolverError, match="unknown row solver"):
        best_rows(g, cl, ops, p.inputs[0], p.master, solver="glpk")
    with pytest.raises(SolverError, match="chooses the order"):
        best_rows(g, cl, ops, p.inputs[0], p.master, order=cl.names)
    with pytest.raises(SolverError, match="every device"):
        best_rows(g, cl, ops, p.inputs[0], p.master, solver="cpsat", order=cl.names[:1])
    uneven = heterogeneous([("a", 2e7, GiB), ("b", 4e7, GiB), ("c", 4e7, GiB)], 5e8, 1e-4, "shared", "u")
    uneven.bandwidth[("b", "a")] = 1e8
    with pytest.raises(SolverError, match="one gather bandwidth"):
        best_rows(g, uneven, ops, p.inputs[0], "a")
    # dpfp --exact on such a cluster falls back to the CP-SAT twin instead of failing
    e = dpfp.exact(g, uneven, model="chain")
    assert e.status == "optimal" and e.report.memory_ok


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
def test_exact_rows_equal_brute_force_over_blocks_and_rows(solver):
    """Blocks x integer rows: the exact model against per-block brute force + the DP."""
    for cl in (SLOW_DEVICES[2], SLOW_DEVICES[3], kinded(SLOW_DEVICES[2], 2e-4)):
        net, x, g = chain(size=24)
        p = dpfp.problem(g, cl)
        brute_costs = {(i, j): brute_rows(g, cl, [n for u in p.units[i:j] for n in u], p.inputs[i], p.master)
                       for (i, j) in p.cost}
        best, _ = dpfp.dp(dpfp.Problem(g, cl, p.master, p.units, p.inputs, p.tail, p.shares, brute_costs, p.tail_s))
        sol = dpfp.exact(g, cl, model="chain", solver=solver)
        assert sol.status == "optimal" and sol.gap == 0.0
        assert sol.report.latency_s == pytest.approx(best, abs=1e-8)
        assert sol.report.latency_s <= dpfp.heuristic(g, cl, model="chain").report.latency_s + 1e-12
        assert verify(sol.plan, net, x, g, cl).ok


@pytest.mark.parametrize("name", ["lenet5", "alexnet"])
def test_exact_rows_verify_and_bound_heuristic(zoo, name):
    module, x, g = zoo(name)
    for cl in (preset("pi4x4"), preset("hetero3")):
        e = dpfp.exact(g, cl, model=name)
        h = dpfp.heuristic(g, cl, model=name)
        assert e.status == "optimal" and e.report.latency_s <= h.report.latency_s + 1e-12
        assert e.plan.meta["rows"] == "optimal"
        v = verify(e.plan, module, x, g, cl)
        assert v.ok, v.reason


def test_block_time_limit_gives_feasible_with_bound(zoo):
    _, _, g = zoo("alexnet")
    e = dpfp.exact(g, preset("pi4x8"), model="alexnet", block_time_limit=0.01)
    assert e.status in ("optimal", "feasible")
    if e.status == "feasible":
        assert e.bound is not None and e.bound <= e.report.latency_s + 1e-9 and e.gap >= 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_exact_rows_large(zoo, name):
    module, x, g = zoo(name)
    e = dpfp.exact(g, preset("pi4x4"), model=name, block_time_limit=120)
    assert e.report.latency_s <= dpfp.heuristic(g, preset("pi4x4"), model=name).report.latency_s + 1e-12
    assert verify(e.plan, module, x, g, preset("pi4x4")).ok


@pytest.mark.parametrize("name", ["alexnet", "resnet18"])
def test_block_tables_in_one_walk_equal_per_block_tables_and_stage_span(zoo, name):
    """DPFP prices blocks from tables built in one backward walk per block end
    (rfs_rows.all_block_tables); they equal the per-block tables, and the time they give equals
    stage_span (evaluate's schedule) on every block, with speed rows and with optimal rows."""
    from partopt.methods.rfs_rows import all_block_tables, block_tables
    _, _, g = zoo(name)
    units, inputs, _ = dpfp.spatial_units(g)
    tabs = all_block_tables(g, units, inputs)
    assert len(tabs) == len(units) * (len(units) + 1) // 2
    for (i, j), tab in list(tabs.items())[::3]:
        ref = block_tables(g, [o for u in units[i:j] for o in u], inputs[i])
        assert [list(map(int, x)) for x in (tab.ff, tab.fg, tab.xf, tab.xg)] == [ref.ff, ref.fg, ref.xf, ref.xg]
        assert (tab.in_row_bytes, tab.out_row_bytes, tab.exact) == (ref.in_row_bytes, ref.out_row_bytes, ref.exact)
    for cl in (preset("pi4x4"), preset("hetero3"), kinded(preset("hetero3"))):
        for rows in ("speed", "optimal"):
            p = dpfp.problem(g, cl, rows=rows)
            for (i, j) in list(p.cost)[::4]:
                st = dpfp.block_stage(p, i, j)
                true = stage_span(g, cl, route_stage(g, st, {p.inputs[i]: gathered(g, p.inputs[i], p.master)}), p.master)
                assert p.cost[(i, j)] == pytest.approx(true, rel=1e-12, abs=0)


def test_on_a_shared_medium_the_dp_puts_the_source_in_the_middle_where_that_is_faster():
    """With three identical devices the source's rows in the middle are faster (its
    neighbours' segments are at the map's edges and need a halo on one side only): the row DP
    finds that order (the CP-SAT twin with the order fixed agrees) and beats source-first by
    more than 3 %."""
    from partopt.methods import rfs_rows
    net = randomize(nn.Sequential(nn.Conv2d(3, 2, 5, padding=1), nn.ReLU(), nn.Conv2d(2, 5, 5, padding=1), nn.ReLU()), 0)
    x = torch.randn(1, 3, 15, 8)
    g = LayerGraph.from_module(net, x)
    ops = [o.name for o in g.ops]
    cl = homogeneous(3, flops_per_s=1e6, bandwidth_bytes_per_s=2e5, latency_s=1e-4, link="shared")
    dp = rfs_rows.dp_rows(g, cl, ops, g.input_name, "pi0")
    first = rfs_rows.best_rows(g, cl, ops, g.input_name, "pi0", solver="cpsat", order=["pi0", "pi1", "pi2"])
    middle = rfs_rows.best_rows(g, cl, ops, g.input_name, "pi0", solver="cpsat", order=["pi1", "pi0", "pi2"])
    a, b = dp.segments["pi0"]
    assert 0 < a and b < g.op[ops[-1]].out_chw[1]              # the source's rows in the middle
    assert dp.objective == pytest.approx(middle.objective, rel=1e-9)
    assert dp.objective < first.objective * 0.97
    assert dp.objective == pytest.approx(brute_rows(g, cl, ops, g.input_name, "pi0"), rel=1e-9)
    for solver in ("cpsat", "highs"):       # with no order given the twins search the DP's family too
        twin = rfs_rows.best_rows(g, cl, ops, g.input_name, "pi0", solver=solver)
        assert twin.status == "optimal" and twin.objective == pytest.approx(dp.objective, rel=1e-6)


def _random_block(rng):
    k1, k2 = rng.choice([1, 3, 5]), rng.choice([1, 3])
    c1 = rng.randint(1, 6)
    net = nn.Sequential(nn.Conv2d(3, c1, k1, stride=rng.choice([1, 2]), padding=k1 // 2), nn.ReLU(),
                        nn.Conv2d(c1, rng.randint(1, 8), k2, padding=rng.choice([0, k2 // 2])))
    x = torch.randn(1, 3, rng.randint(6, 14), rng.randint(6, 9))
    return LayerGraph.from_module(randomize(net, 0), x)


@pytest.mark.parametrize("seed", range(4))
def test_shared_row_dp_is_optimal_over_every_order_on_random_blocks(seed):
    """Random two-conv blocks on shared media of 2-4 devices (identical, or of three speeds;
    latency 0 to 10 ms): the row DP equals brute force over every order of the devices and
    every integer boundary, with the bound it proves within the search's gap."""
    import random
    from partopt.methods import rfs_rows
    rng = random.Random(seed)
    for _ in range(6):
        g = _random_block(rng)
        ops = [o.name for o in g.ops]
        n, bw, lat = rng.choice([2, 3, 4]), rng.choice([1e4, 1e5, 1e6]), rng.choice([0.0, 1e-4, 1e-2])
        if rng.random() < 0.5:
            cl = homogeneous(n, flops_per_s=rng.choice([1e5, 1e6]), bandwidth_bytes_per_s=bw, latency_s=lat, link="shared")
        else:
            cl = heterogeneous([(f"d{i}", rng.choice([1e5, 3e5, 1e6]), GiB) for i in range(n)], bw, lat, "shared", "h")
        master = cl.names[0]
        r = rfs_rows.dp_rows(g, cl, ops, g.input_name, master)
        tab = rfs_rows.block_tables(g, ops, g.input_name)
        best = brute_rows(g, cl, ops, g.input_name, master, tab=tab if n == 4 and tab.exact else None)
        assert r.status == "optimal"
        assert span_of(g, cl, ops, g.input_name, master, r.segments) == pytest.approx(best, rel=1e-9, abs=1e-15)
        assert best * (1 - 3e-9) <= r.bound <= best * (1 + 1e-12)


def test_on_a_shared_medium_every_order_can_beat_the_family_and_the_dp_finds_it():
    """Four identical devices on a shared medium where no order of the family (the source's
    rows anywhere, the others in the cluster's order, top down or bottom up) is optimal: the
    row DP finds the every-order optimum (brute force), 1.1 % faster than the family's best."""
    from partopt.methods import rfs_rows
    net = randomize(nn.Sequential(nn.Conv2d(3, 5, 5, padding=2), nn.ReLU(), nn.Conv2d(5, 7, 1)), 0)
    g = LayerGraph.from_module(net, torch.randn(1, 3, 9, 7))
    ops = [o.name for o in g.ops]
    cl = homogeneous(4, flops_per_s=1e5, bandwidth_bytes_per_s=1e4, latency_s=0.0, link="shared")
    r = rfs_rows.dp_rows(g, cl, ops, g.input_name, "pi0")
    every = brute_rows(g, cl, ops, g.input_name, "pi0")
    family = brute_rows(g, cl, ops, g.input_name, "pi0", orders=rfs_rows.family_orders(cl, "pi0"))
    assert r.status == "optimal" and r.objective == pytest.approx(every, rel=1e-9)
    assert every < family * 0.99


def test_every_order_dp_with_one_row_edge_zones_is_a_relaxation():
    """:class:`rfs_rows._EveryOrder` with edge zones of one row (inside segments priced at
    their cheapest start) never rules out a time the best split meets, and with the tables'
    own zones it is exact on these blocks (its middle is straight)."""
    import random
    from partopt.methods import rfs_rows
    rng = random.Random(11)
    for _ in range(6):
        g = _random_block(rng)
        ops = [o.name for o in g.ops]
        cl = homogeneous(4, flops_per_s=rng.choice([1e5, 1e6]), bandwidth_bytes_per_s=rng.choice([1e4, 1e5]),
                         latency_s=rng.choice([0.0, 1e-3]), link="shared")
        tab = rfs_rows.block_tables(g, ops, g.input_name)
        best = brute_rows(g, cl, ops, g.input_name, "pi0", tab=tab)
        quick = rfs_rows._EveryOrder(tab, cl, "pi0", zones=(1, 1))
        assert quick.test(best * (1 + 1e-12)) is not None
        full = rfs_rows._EveryOrder(tab, cl, "pi0")
        assert full.exact
        segs = full.test(best * (1 + 1e-12))
        assert segs is not None and rfs_rows.table_span(tab, cl, "pi0", segs) <= best * (1 + 1e-12)
        assert full.test(best * (1 - 1e-9)) is None


def test_mirror_turns_a_block_upside_down():
    from partopt.methods import rfs_rows
    net, x, g = chain(size=32)
    p = dpfp.problem(g, preset("pi4x2"))
    ops = [n for u in p.units[:4] for n in u]
    tab = rfs_rows.block_tables(g, ops, p.inputs[0])
    m = rfs_rows.mirror(tab)
    assert rfs_rows.mirror(m) == tab
    cl = homogeneous(3, flops_per_s=1e7, link="shared")
    for segs in ({"pi0": (0, 3), "pi1": (3, 9), "pi2": (9, tab.h)}, {"pi1": (0, 5), "pi0": (5, tab.h)}):
        flipped = {d: (tab.h - b, tab.h - a) for d, (a, b) in segs.items()}
        for d in segs:
            for t0, t1 in zip(rfs_rows.device_terms(tab, cl, "pi0", d, *segs[d]),
                              rfs_rows.device_terms(m, cl, "pi0", d, *flipped[d])):
                assert t0 == pytest.approx(t1, rel=1e-12)


@pytest.mark.parametrize("cl", ["pi4x4", "hetero3", "dpfp-paper", "kinded"])
def test_table_spans_of_blocks_with_one_end_equal_table_span(zoo, cl):
    """The DP prices the blocks that end at one op together (table_spans); each equals
    table_span of that block alone, bit for bit, on random integer rows (shared medium, mesh,
    rates per kind: the one-by-one path)."""
    import random
    from partopt.methods.rfs_rows import all_block_tables, table_span, table_spans
    _, _, g = zoo("resnet18")
    c = kinded(preset("hetero3")) if cl == "kinded" else preset(cl)
    units, inputs, _ = dpfp.spatial_units(g)
    tabs = all_block_tables(g, units, inputs)
    rng = random.Random(3)
    for j in range(1, len(units) + 1):
        blocks = [tabs[(i, j)] for i in range(j)]
        cuts = sorted(rng.randint(0, blocks[0].h) for _ in range(len(c) - 1))
        rows = [0] + cuts + [blocks[0].h]
        segs = {d: (rows[k], rows[k + 1]) for k, d in enumerate(c.names)}
        assert table_spans(blocks, c, c.names[0], segs) == [table_span(t, c, c.names[0], segs) for t in blocks]
