import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from partopt.cluster import heterogeneous, preset
from partopt.errors import PartoptError
from partopt.graph import LayerGraph
from partopt.methods import dn2pciot as dn
from partopt.plan import evaluate
from partopt.verify import verify
from partopt.zoo import randomize

KiB = 1024
SETUPS = ["dn2pciot-1", "dn2pciot-2", "dn2pciot-3", "dn2pciot-4"]


def tiny(size=6):
    """conv(1->2) -> relu -> avgpool -> flatten -> linear(8->4): five vertices when coarse."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(2 * (size // 2) ** 2, 4))
    x = torch.randn(1, 1, size, size)
    randomize(net, 3)
    return net, x, LayerGraph.from_module(net, x)


def iot(n, mem, link="shared", hetero=False):
    """n devices of ``mem`` bytes, 2000 B/s links; link "shared-slow": a shared medium whose link
    iot1 -> iot2 runs at half that (so a byte's cost depends on its sender)."""
    specs = [(f"iot{i}", (2e6 if hetero and i % 2 else 1e6), mem) for i in range(n)]
    cl = heterogeneous(specs, 2000.0, latency_s=1e-3, link=link.removesuffix("-slow"), name=f"iot{n}")
    if link.endswith("-slow"):
        cl = dataclasses.replace(cl, bandwidth={**cl.bandwidth, ("iot1", "iot2"): 1000.0})
    return cl


def test_graph_sizes_and_shared_filters(zoo):
    _, _, g = zoo("lenet5")
    assert len(dn.neuron_graph(g, "coarse").vertices) == 62
    ng = dn.neuron_graph(g, "fine")
    assert len(ng.vertices) == 212
    # every conv filter key is shared by the 2x2 tiles of its channel; FC rows are private
    holders = np.bincount(ng.hold_k)
    assert set(holders[:6]) == {4} and holders.max() == 4 and holders.min() == 1


def test_shared_parameters_counted_once(zoo):
    _, _, g = zoo("lenet5")
    ng = dn.neuron_graph(g, "fine")
    cl = preset("dn2pciot-1")
    conv1 = [v for v, vx in enumerate(ng.vertices) if vx.stage == 0 and vx.box.c0 == 0]
    assert len(conv1) == 4
    x = np.zeros(len(ng.vertices), dtype=np.int64)
    x[conv1[:2]] = 1      # two tiles of channel 0 on iot1: its filter (9 + 1) x 4 bytes... once
    rep = evaluate(dn.plan_of(ng, cl, x), g, cl)
    w = g.op[g.ops[0].name]
    per_channel = (w.in_chw[0] * w.kernel[0] * w.kernel[1] + 1) * 4
    assert rep.weight_bytes["iot1"] == per_channel
    assert rep.weight_bytes["iot0"] == g.total_param_bytes       # iot0 still holds channel 0's other tiles


@pytest.mark.parametrize("grouping", ["coarse", "fine"])
@pytest.mark.parametrize("link", ["shared", "mesh"])
def test_fast_costs_equal_evaluate(zoo, rated, grouping, link):
    _, _, g = zoo("lenet5")
    ng = dn.neuron_graph(g, grouping)
    cl = rated(iot(4, 64 * KiB, link, hetero=True))
    ev = dn.Evaluator(ng, cl)
    rng = np.random.default_rng(1)
    for _ in range(6):
        x = rng.integers(0, 4, len(ng.vertices))
        c = ev.costs(x)
        rep = evaluate(dn.plan_of(ng, cl, x), g, cl)
        assert c.bottleneck_s == pytest.approx(1 / rep.throughput_per_s, rel=1e-12)
        assert c.comm_bytes == rep.comm_bytes
        assert [int(p) for p in c.peak] == [rep.peak_memory_bytes[d] for d in cl.names]


@pytest.mark.parametrize("grouping", ["coarse", "fine"])
@pytest.mark.parametrize("link", ["shared", "mesh"])
def test_batched_scores_equal_costs_row_by_row(zoo, rated, grouping, link):
    """The local search prices every move of a step at once (Evaluator.scores); each row equals
    costs() of that assignment to the last bit, on clusters with rates per kind and overheads."""
    _, _, g = zoo("lenet5")
    ng = dn.neuron_graph(g, grouping)
    cl = rated(iot(4, 64 * KiB, link, hetero=True))
    ev = dn.Evaluator(ng, cl)
    X = np.random.default_rng(2).integers(0, 4, (40, len(ng.vertices)))
    X[0] = 0                                    # everything on the source: nothing sent
    for objective in ("rate", "comm"):
        assert ev.scores(X, objective) == [(int(c.over.sum()),) + c.key(objective) for c in map(ev.costs, X)]


@pytest.mark.parametrize("grouping", ["coarse", "fine"])
@pytest.mark.parametrize("link", ["shared", "mesh"])
def test_move_scores_equal_scores_of_the_moved_assignments(zoo, rated, grouping, link):
    """The local search prices a step's moves from the current assignment and what each move
    changes (Evaluator.move_scores); every move's tuple equals scores() of the moved assignment
    to the last bit: every vertex to every other device, from assignments that spread the graph
    over all devices, pack it on one, or leave a device's largest working set to one vertex."""
    _, _, g = zoo("lenet5")
    ng = dn.neuron_graph(g, grouping)
    cl = rated(iot(4, 64 * KiB, link, hetero=True))
    ev = dn.Evaluator(ng, cl)
    V, rng = len(ng.vertices), np.random.default_rng(3)
    starts = [rng.integers(0, 4, V) for _ in range(3)] + [np.zeros(V, dtype=np.int64), np.full(V, 2)]
    starts.append(np.where(np.arange(V) % 7 == 0, 1, 3))
    lone = np.zeros(V, dtype=np.int64)
    lone[int(np.argmax(ev.work))] = 1     # device 1's one vertex: its working set leaves with it
    starts.append(lone)
    for y in starts:
        vs = np.repeat(np.arange(V), 3)
        ds = np.array([d for v in range(V) for d in range(4) if d != y[v]])
        trial = np.repeat(y[None, :], len(vs), axis=0)
        trial[np.arange(len(vs)), vs] = ds
        for want, got in zip(ev._batch(trial), ev.move_costs(y, vs, ds)):     # bottleneck, bytes, peaks
            assert np.array_equal(want, got)
        for objective in ("rate", "comm"):
            assert ev.move_scores(y, vs, ds, objective) == ev.scores(trial, objective)
    assert ev.move_scores(starts[0], [], [], "rate") == []
    with pytest.raises(PartoptError):
        ev.move_costs(starts[0], [0], [starts[0][0]])


def test_symmetry_breaking_only_between_truly_interchangeable_devices():
    """Two identical devices are ordered by load only if every link, theirs to each other in
    both directions included, is the same: a one-way slow link between them makes them differ."""
    cl = iot(3, 64 * KiB, "mesh")
    a, c = cl.names[1], cl.names[2]
    assert dn.interchangeable(cl, a, c)
    bw = dict(cl.bandwidth)
    bw[(a, c)] = bw[(a, c)] / 4
    one_way = type(cl)(cl.name, cl.devices, bw, cl.latency_s, cl.link)
    assert not dn.interchangeable(one_way, a, c)
    bw = dict(cl.bandwidth)
    bw[(cl.names[0], c)] = bw[(cl.names[0], c)] / 4
    assert not dn.interchangeable(type(cl)(cl.name, cl.devices, bw, cl.latency_s, cl.link), a, c)


@pytest.mark.parametrize("setup", SETUPS)
def test_every_reported_plan_verifies(zoo, setup):
    net, x, g = zoo("lenet5")
    cl = preset(setup)
    sols = [dn.heuristic(g, cl, model="lenet5")] + [dn.baseline(g, cl, k) for k in ("metis", "per-layer", "greedy")]
    for s in sols:
        v = verify(s.plan, net, x, g, cl)
        assert v.ok and v.max_rel_err <= 1e-4 and v.bytes_moved == v.bytes_planned, (s.method, v.reason)
        assert s.status == ("infeasible" if not s.report.memory_ok else "heuristic")
    assert sols[0].status == "heuristic"           # DN2PCIoT fits every setup
    assert sols[2].status == ("heuristic" if setup == "dn2pciot-1" else "infeasible")   # fc1 is 188 KiB


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
@pytest.mark.parametrize("objective", ["rate", "comm"])
def test_exact_equals_brute_force(rated, solver, objective):
    net, x, g = tiny()
    ng = dn.neuron_graph(g, "coarse")
    assert len(ng.vertices) == 5
    solo = dn.Evaluator(ng, iot(1, 10 ** 9)).costs(np.zeros(5, dtype=np.int64)).peak[0]
    tol = 1e-6 if solver != "cpsat" else 1e-4
    for n, frac, link, het in [(2, 2.0, "shared", False), (3, 0.7, "shared", True), (3, 0.7, "shared-slow", True),
                               (3, 0.55, "mesh", True), (3, 0.2, "mesh", False)]:
        cl = rated(iot(n, int(solo * frac), link, het))
        b, _ = dn.build_model(ng, cl, solver, objective)
        # sender variables only where a byte's cost depends on its link (dn.uniform_medium)
        assert any(v.startswith("q_") for v in b.vars) == (link != "shared"), link
        best, key = dn.brute_force(g, cl, objective=objective)
        e = dn.exact(g, cl, solver=solver, objective=objective, time_limit=60)
        if best is None:
            assert e.status == "infeasible"
            continue
        assert e.status == "optimal", (n, frac, link)
        got = (1 / e.report.throughput_per_s) if objective == "rate" else e.report.comm_bytes
        assert got == pytest.approx(key[0], rel=tol, abs=1e-9)
        # the model's own optimum is the same number: it prices messages and bytes as evaluate
        assert e.plan.meta["model_objective"] == pytest.approx(key[0], rel=tol, abs=1e-9), (n, frac, link)
        v = verify(e.plan, net, x, g, cl)
        assert v.ok


def test_heuristic_never_beats_exact_and_exact_beats_valid_baselines(zoo):
    _, _, g = zoo("lenet5")
    for setup in ("dn2pciot-1", "dn2pciot-3"):
        cl = preset(setup)
        e = dn.exact(g, cl, solver="cpsat", time_limit=60)
        assert e.status == "optimal"
        h = dn.heuristic(g, cl)
        assert e.objective <= h.objective * (1 + 1e-4)
        for k in ("metis", "per-layer", "greedy"):
            b = dn.baseline(g, cl, k)
            if b.feasible:
                assert e.objective <= b.objective * (1 + 1e-4)


def test_comm_objective_sends_no_more_bytes(zoo):
    _, _, g = zoo("lenet5")
    cl = preset("dn2pciot-2")
    rate, comm = dn.heuristic(g, cl, objective="rate"), dn.heuristic(g, cl, objective="comm")
    assert comm.report.comm_bytes <= rate.report.comm_bytes
    assert comm.objective == comm.report.comm_bytes


def test_a_solver_calling_a_fitting_instance_infeasible_is_not_believed(zoo, monkeypatch):
    """A back-end that wrongly reports infeasible (numerics) where the heuristic's assignment
    fits memory: the exact method returns that assignment as `feasible`, with the reason."""
    from partopt import maxplus
    from partopt.solvers import SolveResult
    _, _, g = zoo("lenet5")
    cl = preset("dn2pciot-1")
    h = dn.heuristic(g, cl)
    assert h.feasible
    monkeypatch.setattr(maxplus.PulpBuilder, "solve",
                        lambda self, *a, **k: SolveResult("infeasible", None, None, None, 0.0, "highs"))
    e = dn.exact(g, cl, solver="highs", time_limit=5)
    assert e.status == "feasible" and "reported infeasible" in e.reason
    assert e.objective == pytest.approx(h.objective, rel=1e-12)


def test_too_little_memory_is_infeasible(zoo):
    _, _, g = zoo("lenet5")
    cl = iot(2, 32 * KiB)
    h = dn.heuristic(g, cl)
    assert h.status == "infeasible" and "lacks" in h.reason
    e = dn.exact(g, cl, solver="highs", time_limit=30)
    assert e.status == "infeasible"


def test_bad_input(zoo):
    _, _, g = zoo("lenet5")
    _, _, r = zoo("resnet18")
    with pytest.raises(PartoptError, match="grouping"):
        dn.neuron_graph(g, "medium")
    with pytest.raises(PartoptError, match="objective"):
        dn.heuristic(g, preset("dn2pciot-1"), objective="latency")
    with pytest.raises(PartoptError, match="chain"):
        dn.neuron_graph(r)
    with pytest.raises(PartoptError, match="baseline"):
        dn.baseline(g, preset("dn2pciot-1"), "kl")


def test_cli(capsys):
    import json
    from partopt.cli import main
    assert main(["solve", "lenet5", "--cluster", "dn2pciot-2", "--method", "dn2pciot", "--objective", "comm",
                 "--grouping", "coarse", "--verify", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["status"] == "heuristic" and rec["verified"] is True
    assert main(["solve", "lenet5", "--cluster", "dn2pciot-4", "--method", "dn2pciot-per-layer", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "infeasible"
    assert main(["solve", "lenet5", "--method", "coedge", "--objective", "rate"]) == 2


def test_model_exports(tmp_path, zoo):
    from partopt.solvers import export_model
    _, _, g = zoo("lenet5")
    for solver, ext in (("highs", "lp"), ("cpsat", "pb.txt")):
        path = export_model(dn.model(g, preset("dn2pciot-2"), solver=solver), str(tmp_path / f"dn.{ext}"))
        assert "x_0_1" in open(path).read()


def _fc_net():
    """Conv, pool and one FC layer of three 432-byte vertices (coarse grouping): 7 vertices."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 36))
    randomize(net, 5)
    return LayerGraph.from_module(net, torch.randn(1, 1, 4, 4))


@pytest.mark.parametrize("solver", ["highs", "cpsat"])
def test_layer_cover_counts_what_a_holder_keeps_alive_and_the_product_cuts_keep_the_optimum(solver):
    """An FC layer of three 432-byte groups on devices of 680 bytes: by weights alone two
    devices could hold it (2 x 680 >= 1296), but each holder also keeps the layer's 32-byte
    input and its 48-byte outputs alive, so the cover is three (2 x 600 < 1296). Every
    assignment that fits memory (all 3^7, priced as evaluate) uses at least that many devices
    for the layer, and the exact model with the cover and product cuts proves brute force's
    optimum."""
    import itertools
    g = _fc_net()
    ng = dn.neuron_graph(g, "coarse")
    cl = iot(3, 680)
    ev = dn.Evaluator(ng, cl)
    fc = int(ev.stage_of[-1])
    assert dn.stage_reserve(ng, ev, fc) == 8 * 4 + 12 * 4
    assert dn.layer_cover(ng, ev, fc) == 3
    fc_verts = np.flatnonzero(ev.stage_of == fc)
    fits = 0
    for a in itertools.product(range(3), repeat=len(ng.vertices)):
        a = np.array(a)
        if ev.costs(a).valid:
            fits += 1
            assert len(set(a[fc_verts].tolist())) >= dn.layer_cover(ng, ev, fc)
    assert fits
    best, key = dn.brute_force(g, cl)
    e = dn.exact(g, cl, solver=solver, time_limit=60)
    assert e.status == "optimal"
    assert 1 / e.report.throughput_per_s == pytest.approx(key[0], rel=1e-6 if solver == "highs" else 1e-4)


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
@pytest.mark.parametrize("objective", ["rate", "comm"])
def test_cover_cuts_keep_the_optimum_where_memory_splits_a_layer(solver, objective):
    """An FC layer (two vertices) whose weights fit on no single device: the cover cuts are in
    the model and it still proves brute force's optimum; without the cuts, the same."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 24))
    x = torch.randn(1, 1, 4, 4)
    randomize(net, 5)
    g = LayerGraph.from_module(net, x)
    ng = dn.neuron_graph(g, "coarse")
    fc = max(range(ng.n_stages), key=lambda s: sum(ng.key_bytes[k] for k, v in zip(ng.hold_k, ng.hold_v)
                                                      if dn.Evaluator(ng, iot(1, 10 ** 9)).stage_of[v] == s))
    fc_bytes = 8 * 24 * 4 + 24 * 4
    tol = 1e-6 if solver != "cpsat" else 1e-4
    checked = 0
    for n, link, het in [(3, "shared", False), (3, "shared", True), (3, "mesh", True)]:
        cl = iot(n, int(fc_bytes * 0.75), link, het)
        ev = dn.Evaluator(ng, cl)
        assert dn.layer_cover(ng, ev, fc) == 2
        best, key = dn.brute_force(g, cl, objective=objective)
        if best is None:
            continue
        b, _ = dn.build_model(ng, cl, solver, objective)
        assert any(v.startswith(f"w_{fc}_") for v in getattr(b, "vars", getattr(b, "lp_vars", {})))
        for cover in (True, False):
            e = dn.exact(g, cl, solver=solver, objective=objective, time_limit=60, cover=cover)
            assert e.status == "optimal", (n, link, het, cover)
            got = (1 / e.report.throughput_per_s) if objective == "rate" else e.report.comm_bytes
            assert got == pytest.approx(key[0], rel=tol, abs=1e-9)
        checked += 1
    assert checked >= 2


def _received(ng, held: set) -> int:
    """Bytes a device other than the source receives when it holds the vertices ``held``: every
    class one of them reads that none of them makes (the model input always)."""
    need = {int(k) for k, v in zip(ng.cons_k, ng.cons_v) if int(v) in held}
    return int(sum(ng.cls_bytes[k] for k in need if int(ng.cls_prod[k]) not in held))


@pytest.mark.parametrize("grouping", ["coarse", "fine"])
def test_inflow_floor_is_the_least_any_holding_set_receives(grouping):
    """inflow_floor (a minimum cut) equals, per vertex, the least bytes over every set of
    vertices that contains it, by enumeration (2^V sets)."""
    import itertools
    _, _, g = tiny(4 if grouping == "fine" else 6)
    ng = dn.neuron_graph(g, grouping)
    V = len(ng.vertices)
    assert V <= 17
    floor = dn.inflow_floor(ng)
    least = [None] * V
    for r in range(1, V + 1):
        for S in itertools.combinations(range(V), r):
            got = _received(ng, set(S))
            for v in S:
                least[v] = got if least[v] is None else min(least[v], got)
    assert floor.tolist() == least
    assert floor.min() > 0            # every device but the source receives something


def test_inflow_floor_on_lenet5_fc1_is_its_whole_input(zoo):
    """On LeNet-5 a device holding a neuron of fc1 receives at least the 400 floats of its
    input: making some of them itself would mean receiving conv2's or the model's input,
    which are larger."""
    _, _, g = zoo("lenet5")
    for grouping in ("coarse", "fine"):
        ng = dn.neuron_graph(g, grouping)
        ev = dn.Evaluator(ng, preset("dn2pciot-4"))
        fc1 = np.flatnonzero(ev.stage_of == 4)
        assert set(dn.inflow_floor(ng)[fc1].tolist()) == {1600.0}


def test_cpsat_gets_its_full_portfolio_by_default(monkeypatch):
    """DN2PCIoT's exact model hands CP-SAT CPSAT_PORTFOLIO_WORKERS workers (or one per core, if
    more) unless the caller gives threads; a caller's threads are passed as given."""
    import partopt.maxplus as mp
    from partopt.solvers import CPSAT_PORTFOLIO_WORKERS
    seen = []
    real = mp.solve_cpsat

    def spy(model, **kw):
        seen.append(kw.get("workers"))
        return real(model, **kw)

    monkeypatch.setattr(mp, "solve_cpsat", spy)
    _, _, g = tiny()
    cl = iot(2, 10 ** 6)
    dn.exact(g, cl, solver="cpsat", time_limit=10)
    dn.exact(g, cl, solver="cpsat", time_limit=10, threads=1)
    import os
    assert seen == [max(CPSAT_PORTFOLIO_WORKERS, os.cpu_count() or 1), 1]


@pytest.mark.parametrize("setup", ["dn2pciot-3", "dn2pciot-4"])
def test_symmetry_order_meets_the_symmetry_rows_at_equal_cost(zoo, setup):
    """The heuristic's start, relabelled by symmetry_order, has non-increasing loads over each
    pair of consecutive interchangeable devices (the model's symmetry rows) and the same costs;
    devices that are not interchangeable keep their labels."""
    _, _, g = zoo("lenet5")
    cl = preset(setup)
    ng = dn.neuron_graph(g, "coarse")
    ev = dn.Evaluator(ng, cl)
    rng = np.random.default_rng(3)
    swaps = 0
    for _ in range(20):
        x = rng.integers(0, ev.n, len(ng.vertices))
        y = dn.symmetry_order(cl, ev, x)
        load = np.bincount(y, weights=ev.flops, minlength=ev.n)
        for d in range(1, ev.n - 1):
            if dn.interchangeable(cl, cl.names[d], cl.names[d + 1]):
                assert load[d] >= load[d + 1]
        assert ev.costs(y).key("rate") == pytest.approx(ev.costs(x).key("rate"), rel=1e-12)
        assert (np.sort(ev.costs(y).peak) == np.sort(ev.costs(x).peak)).all()
        assert ((x == 0) == (y == 0)).all()
        if setup == "dn2pciot-3":     # iot1 (200 MFLOP/s) is interchangeable with neither iot2 nor iot3
            assert ((x == 1) == (y == 1)).all()
        swaps += int((x != y).any())
    assert swaps > 0


@pytest.mark.parametrize("flops,bw,lat", [(1e4, 1e4, 1e-2), (1e4, 1e5, 1e-2), (1e5, 1e5, 1e-3), (1e3, 1e3, 1e-3)])
def test_product_cuts_skip_a_layer_with_unread_vertices(flops, bw, lat):
    """A 2 x 2 stride-2 conv after a 3 x 3 map reads only its top-left tile, so on the fine
    grouping three tiles per channel send nothing. The product cuts ("each holder of a vertex of
    s sends to each holder of t") do not hold there and must be left out: with them, HiGHS's
    optimum on the first three setups is worse than brute force's, and exact falls back to the
    heuristic as 'feasible'."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 2, stride=2), nn.ReLU())
    x = torch.randn(1, 1, 5, 5)
    randomize(net, 5)
    g = LayerGraph.from_module(net, x)
    grp = dn.Grouping(2, 6)
    assert len(dn.neuron_graph(g, grp).vertices) == 9
    cl = heterogeneous([(f"iot{i}", flops, 10 ** 6) for i in range(2)], bw, latency_s=lat, link="shared", name="t")
    _, key = dn.brute_force(g, cl, grouping=grp)
    e = dn.exact(g, cl, solver="highs", grouping=grp, time_limit=30)
    assert e.status == "optimal"
    assert 1 / e.report.throughput_per_s == pytest.approx(key[0], rel=1e-9)
    assert verify(e.plan, net, x, g, cl).ok


SOURCE_COUNT_CLUSTERS = {
    # two FC vertices fit per device: none on the source needs two others, one needs one
    "even": lambda link: iot(3, 1100, link),
    # the source fits two, iot1 three, iot2 one: one other device always suffices
    "uneven": lambda link: heterogeneous([("iot0", 1e6, 1100), ("iot1", 2e6, 1500), ("iot2", 1e6, 600)], 2000.0,
                                         latency_s=1e-3, link=link, name="iot3u"),
}


@pytest.mark.parametrize("kind", sorted(SOURCE_COUNT_CLUSTERS))
def test_source_count_floor_holds_for_every_assignment_that_fits(kind):
    """source_count_floor[g]: with g of the FC layer's vertices on the source, at least that many
    other devices hold one. Checked on every assignment that fits memory (all 3^7)."""
    import itertools
    g = _fc_net()
    ng = dn.neuron_graph(g, "coarse")
    cl = SOURCE_COUNT_CLUSTERS[kind]("shared")
    ev = dn.Evaluator(ng, cl)
    fc = int(ev.stage_of[-1])
    fc_verts = np.flatnonzero(ev.stage_of == fc)
    floor = dn.source_count_floor(ng, ev, fc)
    assert floor == ([2, 1, 1] if kind == "even" else [1, 1, 1])
    assert dn.source_count_floor(ng, ev, 1) is None           # a pool holds no parameters
    fine = dn.neuron_graph(g, "fine")
    assert dn.source_count_floor(fine, dn.Evaluator(fine, cl), 0) is None    # 2 x 2 tiles share each filter
    fits, tight = 0, 0
    for a in itertools.product(range(3), repeat=len(ng.vertices)):
        a = np.array(a)
        if not ev.costs(a).valid:
            continue
        fits += 1
        on_src = int((a[fc_verts] == 0).sum())
        others = len(set(a[fc_verts].tolist()) - {0})
        assert on_src < len(floor) and others >= floor[on_src]
        tight += others == floor[on_src]
    assert fits and tight


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
@pytest.mark.parametrize("link", ["shared", "mesh"])
def test_source_count_cuts_keep_the_optimum(solver, link):
    """Where the floor steps (two other holders with none of the FC layer on the source, one
    otherwise) the model has a threshold binary and still proves brute force's optimum."""
    g = _fc_net()
    ng = dn.neuron_graph(g, "coarse")
    cl = SOURCE_COUNT_CLUSTERS["even"](link)
    b, _ = dn.build_model(ng, cl, solver, "rate")
    fc = int(dn.Evaluator(ng, cl).stage_of[-1])
    assert f"sc_{fc}_1" in getattr(b, "vars", {})
    best, key = dn.brute_force(g, cl)
    e = dn.exact(g, cl, solver=solver, time_limit=60)
    assert e.status == "optimal"
    tol = 1e-6 if solver != "cpsat" else 1e-4
    assert 1 / e.report.throughput_per_s == pytest.approx(key[0], rel=tol)
    assert e.plan.meta["model_objective"] == pytest.approx(key[0], rel=tol)


def _two_fc_net():
    """Conv, pool, an FC layer of two 432-byte vertices and one of one 1200-byte vertex (coarse
    grouping): 7 vertices."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 24),
                        nn.ReLU(), nn.Linear(24, 12))
    randomize(net, 5)
    return LayerGraph.from_module(net, torch.randn(1, 1, 4, 4))


def _phase_traffic(ng, a, t) -> tuple[int, int]:
    """Messages and bytes of stage t's phase under assignment ``a``, counted from the graph: each
    class t reads goes from its producer's device to every other device holding a reader."""
    msgs, sent = set(), 0
    for k in np.flatnonzero(ng.cls_stage == t):
        u = int(ng.cls_prod[k])
        if u < 0:
            continue
        to = {int(a[v]) for kk, v in zip(ng.cons_k, ng.cons_v) if kk == k} - {int(a[u])}
        msgs |= {(int(a[u]), e) for e in to}
        sent += int(ng.cls_bytes[k]) * len(to)
    return len(msgs), sent


def test_phase_floor_holds_for_every_assignment_that_fits():
    """The second FC layer (1200 bytes) and a vertex of the first (432) fit beside each other and
    the second layer's 144 live bytes in 1776 bytes, not in 1775. At 1775 (excludes) the phase
    between them carries at least one message and all of the first layer's 96 bytes, and some
    assignment carries exactly that; at 1776 one carries 48 bytes (the second layer's holder makes
    half of the first), so excludes must be False there. The floor is checked on every assignment
    that fits (all 3^7), and the least messages and bytes are found."""
    import itertools
    g = _two_fc_net()
    ng = dn.neuron_graph(g, "coarse")
    fc1, fc2 = ng.n_stages - 2, ng.n_stages - 1
    for mem, apart, floor, least_seen in [(1775, True, (1, 96.0), (1, 96)), (1776, False, (0, 0.0), (1, 48))]:
        ev = dn.Evaluator(ng, iot(3, mem))
        assert dn.stage_reserve(ng, ev, fc2) == 24 * 4 + 12 * 4
        assert dn.excludes(ng, ev, fc1, fc2) == apart
        assert dn.phase_floor(ng, ev, fc1, fc2) == floor
        seen = []
        for a in itertools.product(range(3), repeat=len(ng.vertices)):
            a = np.array(a)
            if ev.costs(a).valid:
                m, sent = _phase_traffic(ng, a, fc2)
                assert m >= floor[0] and sent >= floor[1]
                seen.append((m, sent))
        assert (min(m for m, _ in seen), min(b for _, b in seen)) == least_seen, mem


def test_phase_floor_on_lenet5_fine_dn2pciot4(zoo):
    """The worked case in formulations/dn2pciot.tex: each device fits 4 of fc1's 20 groups, so at
    least 5 hold it; fc2 (40.7 KB) fits on one device but not beside an fc1 group, so the phase
    into fc2 carries at least 5 messages and all of fc1's 480 bytes (not 5 - 1 and 0)."""
    _, _, g = zoo("lenet5")
    ng = dn.neuron_graph(g, "fine")
    ev = dn.Evaluator(ng, preset("dn2pciot-4"))
    fc1, fc2 = 4, 5
    assert (ev.stage_of == fc1).sum() == 20 and (ev.stage_of == fc2).sum() == 14
    assert (dn.layer_cover(ng, ev, fc1), dn.layer_cover(ng, ev, fc2)) == (5, 1)
    assert dn.excludes(ng, ev, fc1, fc2)
    assert dn.phase_floor(ng, ev, fc1, fc2) == (5, 480.0)
    # into fc1: pool2 (1600 bytes) on one device, fc1 on five or more: 5 - 1 messages, 4 x 1600 bytes
    assert dn.phase_floor(ng, ev, fc1 - 1, fc1) == (4, 4 * 1600.0)


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
@pytest.mark.parametrize("link", ["shared", "shared-slow", "mesh"])
def test_exact_with_the_phase_floor_equals_brute_force(solver, link):
    """Where excludes holds (1775 bytes per device, test above), the exact model with the
    phase floor proves brute force's optimum: with and without sender variables."""
    g = _two_fc_net()
    cl = iot(3, 1775, link)
    best, key = dn.brute_force(g, cl)
    assert best is not None
    e = dn.exact(g, cl, solver=solver, time_limit=60)
    assert e.status == "optimal"
    tol = 1e-6 if solver != "cpsat" else 1e-4
    assert 1 / e.report.throughput_per_s == pytest.approx(key[0], rel=tol)
    assert e.plan.meta["model_objective"] == pytest.approx(key[0], rel=tol)


@pytest.mark.parametrize("solver", ["highs", "cpsat"])
@pytest.mark.parametrize("link", ["shared", "shared-slow", "mesh"])
def test_the_model_at_a_fixed_assignment_prices_it_as_evaluate(solver, link):
    """The exact model with x fixed to an assignment has that assignment's bottleneck (and bytes)
    as its optimum: messages, bytes and links are counted as evaluate counts them. Eight random
    assignments of the fine tiny net (17 vertices; tiles read from several senders in one phase),
    with and without the cuts."""
    from partopt.maxplus import Lin
    net, x, g = tiny()
    ng = dn.neuron_graph(g, "fine")
    assert len(ng.vertices) == 17
    cl = iot(3, 10 ** 6, link, hetero=True)
    ev = dn.Evaluator(ng, cl)
    rng = np.random.default_rng(7)
    tol = 1e-6 if solver != "cpsat" else 1e-4
    for trial in range(8):
        a = rng.integers(0, 3, len(ng.vertices))
        a[0] = 0
        c = ev.costs(a)
        for objective in ("rate", "comm"):
            b, xv = dn.build_model(ng, cl, solver, objective, symmetry=False, cover=bool(trial % 2))
            for (v, d), name in xv.items():
                b.equal(Lin.var(name), int(a[v] == d))
            r = b.solve(solver, time_limit=30)
            assert r.status == "optimal", (trial, objective)
            want = c.bottleneck_s if objective == "rate" else c.comm_bytes
            assert r.objective == pytest.approx(want, rel=tol, abs=1e-9), (trial, objective, a)
