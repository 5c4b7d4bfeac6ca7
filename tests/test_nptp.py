import itertools

import pytest
from hypothesis import given, settings, strategies as st

from partopt.cluster import heterogeneous, homogeneous
from partopt.errors import PartoptError
from partopt.geometry import Box, union_volume
from partopt.graph import LayerGraph
from partopt.methods import nptp
from partopt.methods.baselines import coedge
from partopt.verify import verify
from partopt.zoo import example_input, load_model

from conftest import kinded

GiB = 2 ** 30


def clusters(n):
    return [homogeneous(n, name=f"pi4x{n}"),
            heterogeneous([(f"d{i}", (1 + i % 3) * 10e9, 4 * GiB) for i in range(n)], 12.5e6, name=f"het{n}")]


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), weights=st.lists(st.floats(0.5, 4.0), min_size=1, max_size=9),
       orient=st.lists(st.integers(0, 1), max_size=4))
def test_guillotine_tiles_the_map(h, w, weights, orient):
    rects = nptp.guillotine(h, w, weights, orient)
    assert len(rects) == len(weights)
    boxes = [Box(0, 1, r0, r1, c0, c1) for r0, r1, c0, c1 in rects if r1 > r0 and c1 > c0]
    assert all(0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w for r0, r1, c0, c1 in rects)
    assert sum(b.volume for b in boxes) == h * w == union_volume(boxes)      # disjoint and covering


def test_guillotine_areas_follow_speed():
    rects = nptp.guillotine(60, 60, [1, 2, 3])
    areas = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in rects]
    assert areas[2] > areas[1] > areas[0]
    assert abs(sum(areas) - 3600) == 0
    # non-penetrative: some border stops inside the map
    assert len({r[0] for r in rects} | {r[1] for r in rects}) > 2 or len({r[2] for r in rects}) > 1


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11", "yolov2_tiny", "resnet18", "mobilenet_v2"])
def test_nptp_and_ftp_verify_and_nptp_never_loses_to_coedge(zoo, name):
    net, x, g = zoo(name)
    for n in (3, 4):
        for cl in clusters(n):
            h, f, c = nptp.heuristic(g, cl), nptp.ftp(g, cl), coedge(g, cl)
            assert h.report.latency_s <= c.report.latency_s * (1 + 1e-12)   # strips are a candidate
            for s in (h, f):
                v = verify(s.plan, net, x, g, cl)
                assert v.ok and v.max_rel_err <= 1e-4 and v.bytes_moved == v.bytes_planned, (s.method, v.reason)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "yolov2_tiny"])
@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9])
def test_large_inputs_verify(name, scale, n):
    net, shape, _ = load_model(name)
    shape = (shape[0], shape[1], shape[2] * scale, shape[3] * scale)
    x = example_input(shape)
    g = LayerGraph.from_module(net, x)
    for cl in clusters(n):
        s = nptp.heuristic(g, cl, model=name)
        v = verify(s.plan, net, x, g, cl)
        assert v.ok and v.max_rel_err <= 1e-4, v.reason


# ---------------------------------------------------------------------------------------
# The tile model and its exact solvers
# ---------------------------------------------------------------------------------------
def _het3(bw):
    return heterogeneous([("a", 10e9, 4 * GiB), ("b", 20e9, 4 * GiB), ("c", 30e9, 4 * GiB)], bw, name="het3")


@pytest.fixture(scope="module")
def yolo_graph():
    net, shape, _ = load_model("yolov2_tiny")
    return LayerGraph.from_module(net, example_input(shape))


@pytest.mark.parametrize("n_dev,rows,cols", [(2, 3, 3), (3, 2, 3), (3, 3, 3), (4, 2, 2), (2, 1, 4)])
def test_tilings_enumerates_every_rectangle_partition(n_dev, rows, cols):
    seen = set()
    for rects in nptp.tilings(rows, cols, n_dev):
        key = tuple(rects)
        assert key not in seen
        seen.add(key)
        cells = [(i, j) for r0, r1, c0, c1 in rects for i in range(r0, r1) for j in range(c0, c1)]
        assert sorted(cells) == [(i, j) for i in range(rows) for j in range(cols)]
    # every labelled tiling with one rectangle a device: count independently by brute force over
    # all assignments of cells to devices
    count = 0
    for lab in itertools.product(range(n_dev), repeat=rows * cols):
        ok = True
        for d in range(n_dev):
            cells = [(k // cols, k % cols) for k, x in enumerate(lab) if x == d]
            if cells:
                r = [c[0] for c in cells]
                c = [c[1] for c in cells]
                ok &= len(cells) == (max(r) - min(r) + 1) * (max(c) - min(c) + 1)
        count += ok
    assert count == len(seen)


def test_tile_latency_rejects_bad_tilings(yolo_graph):
    tm = nptp.tile_model(yolo_graph, _het3(12.5e6), (2, 2))
    with pytest.raises(PartoptError, match="overlap"):
        nptp.tile_latency(tm, [(0, 2, 0, 1), (0, 1, 0, 2), (0, 0, 0, 0)])
    with pytest.raises(PartoptError, match="cover"):
        nptp.tile_latency(tm, [(0, 1, 0, 1), (0, 0, 0, 0), (0, 0, 0, 0)])
    with pytest.raises(PartoptError, match="one rectangle per device"):
        nptp.tile_latency(tm, [(0, 2, 0, 2)])
    with pytest.raises(PartoptError, match="grid"):
        nptp.tile_model(yolo_graph, _het3(12.5e6), (0, 2))


def test_tile_latency_counts_halo_and_compute(yolo_graph):
    """One device alone: no halo, compute only (plus nothing from the source it is); two
    halves: each interior side adds exactly the growth times the side's length in pixels."""
    cl = homogeneous(2)
    tm = nptp.tile_model(yolo_graph, cl, (2, 2))
    alone = nptp.tile_latency(tm, [(0, 2, 0, 2), (0, 0, 0, 0)])
    assert alone == pytest.approx(sum(l.flops_per_cell * 4 for l in tm.layers) / cl.devices[0].flops_per_s)
    split = [(0, 1, 0, 2), (1, 2, 0, 2)]
    b0 = nptp.basis_of(split[0], 2, 2)
    assert b0["w_ob"] == 2 and b0["hw"] == 2 and b0["w_ot"] == 0 and b0["h_ol"] == 0
    layer = tm.layers[1]                        # a layer reading a tiled tensor
    t = layer.inputs[0]
    comm, _ = nptp.device_terms(tm, layer, 0)
    assert comm["w_ob"] * tm.bw_in[0] == pytest.approx(t.px_c * t.grow[1] * t.bytes_per_px)


def test_tile_model_prices_each_op_kind_at_its_own_rate(yolo_graph):
    """With rates per kind, a device alone computes every op's FLOPs at its kind's rate."""
    from partopt.cost import rate_kind, region_flops
    cl = kinded(homogeneous(2))
    tm = nptp.tile_model(yolo_graph, cl, (2, 2))
    alone = nptp.tile_latency(tm, [(0, 2, 0, 2), (0, 0, 0, 0)])
    dev = cl.devices[0]
    spatial = {n for ops in nptp.layer_stages(yolo_graph) for n in ops
               if yolo_graph.tensor_chw(ops[-1])[1:] != (1, 1)}
    expect = sum(region_flops(op, Box.full(op.out_chw)) / dev.rate(rate_kind(op))
                 for op in yolo_graph.ops if op.name in spatial)
    assert alone == pytest.approx(expect, rel=1e-12)
    assert alone != pytest.approx(sum(l.flops_per_cell * 4 for l in tm.layers) / dev.flops_per_s, rel=1e-3)


SOLVERS = ["cpsat", "highs", "cbc"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("cluster_kind", ["pi3-shared", "het3-mesh", "het3-slow", "het3-kinded"])
@pytest.mark.parametrize("rows,cols", [(2, 2), (2, 3), (3, 3)])
def test_exact_tile_model_equals_brute_force(yolo_graph, solver, cluster_kind, rows, cols):
    cl = {"pi3-shared": homogeneous(3), "het3-mesh": _het3(12.5e6), "het3-slow": _het3(1.25e6),
          "het3-kinded": kinded(_het3(1.25e6))}[cluster_kind]
    tm = nptp.tile_model(yolo_graph, cl, (rows, cols))
    bf_rects, bf_cost = nptp.brute_force(tm)
    r = nptp.solve_tiles(tm, solver, time_limit=60)
    assert r.status == "optimal"
    assert r.latency_s == pytest.approx(bf_cost, rel=1e-6)
    assert r.latency_s == pytest.approx(nptp.tile_latency(tm, r.rects), rel=1e-12)
    assert r.bound_s <= r.latency_s * (1 + 1e-9)
    h_rects, h_cost = nptp.grid_heuristic(tm)
    assert r.latency_s <= h_cost * (1 + 1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_exact_tile_model_at_a_long_horizon(yolo_graph, solver):
    """Devices and links 1000x slower, latency 1000x longer (a tiling takes about 100 s, 1e8
    microseconds): every back-end still proves brute force's optimum. HiGHS proved wrong optima
    on IOP's MILP at such horizons in microseconds (partopt.solvers.milp_units_per_s); NPTP's
    MILP has no time big-M, and this checks that it stays right there."""
    cl = heterogeneous([("a", 10e6, 4 * GiB), ("b", 20e6, 4 * GiB), ("c", 30e6, 4 * GiB)], 12.5e3, 1.0,
                       "shared", "het3-long")
    tm = nptp.tile_model(yolo_graph, cl, (2, 3))
    bf_rects, bf_cost = nptp.brute_force(tm)
    assert bf_cost > 10                                  # the long horizon this test is about
    r = nptp.solve_tiles(tm, solver, time_limit=60)
    assert r.status == "optimal"
    assert r.latency_s == pytest.approx(bf_cost, rel=1e-6)
    assert sum(c[1] > c[0] and c[3] > c[2] for c in bf_rects) > 1   # the optimum splits the map


def test_exact_tile_model_mixed_sizes_and_resnet(zoo):
    """A 4-device brute-force check on ResNet-18 (residual adds read two tiled tensors)."""
    net, x, g = zoo("resnet18")
    cl = heterogeneous([("a", 10e9, 4 * GiB), ("b", 10e9, 4 * GiB), ("c", 25e9, 4 * GiB), ("d", 10e9, 4 * GiB)],
                       12.5e6, name="het4")
    tm = nptp.tile_model(g, cl, (2, 3))
    assert any(len(l.inputs) == 2 for l in tm.layers)
    bf = nptp.brute_force(tm)
    for solver in ("cpsat", "highs"):
        r = nptp.solve_tiles(tm, solver, time_limit=60)
        assert r.status == "optimal" and r.latency_s == pytest.approx(bf[1], rel=1e-6)


def test_exact_solution_plan_verifies_and_carries_the_comparison(zoo):
    net, x, g = zoo("yolov2_tiny")
    cl = _het3(12.5e6)
    s = nptp.exact(g, cl, grid=(4, 4), time_limit=60)
    assert s.status == "optimal" and s.mode == "exact" and s.gap == 0.0
    assert s.objective <= s.plan.meta["heuristic_tile_latency_s"] * (1 + 1e-9)
    assert s.plan.meta["grid"] == [4, 4] and len(s.plan.meta["cells"]) == 3
    v = verify(s.plan, net, x, g, cl)
    assert v.ok and v.max_rel_err <= 1e-4 and v.bytes_moved == v.bytes_planned


def test_exact_never_optimal_for_a_plan_evaluate_rates_worse_than_the_heuristic(zoo):
    """yolov2_tiny on nptp-paper: the 4x4 tile-model optimum is slower under evaluate than the
    NPTP heuristic's plan (the tile model has no per-message latency); --exact returns the
    better plan as ``feasible``, with both latencies in the reason."""
    from partopt.cluster import preset
    net, x, g = zoo("yolov2_tiny")
    cl = preset("nptp-paper")
    h = nptp.heuristic(g, cl, model="yolov2_tiny")
    s = nptp.exact(g, cl, model="yolov2_tiny", grid=(4, 4), time_limit=60)
    assert s.report.latency_s <= h.report.latency_s * (1 + 1e-12)
    assert s.status == "feasible" and s.bound is None and s.objective_kind == "latency_s"
    assert "slower under evaluate" in s.reason and s.plan.meta["exact_tiling_cells"]
    assert s.objective == s.report.latency_s


def test_exact_objective_is_labelled_a_surrogate(zoo):
    net, x, g = zoo("yolov2_tiny")
    s = nptp.exact(g, _het3(12.5e6), grid=(4, 4), time_limit=60)
    assert s.status == "optimal" and s.objective_kind.startswith("tile_model_s (surrogate")
    assert s.summary()["objective_kind"] == s.objective_kind


def test_scale_rects_keeps_a_tiling():
    rects = [(0, 1, 0, 3), (0, 2, 3, 4), (1, 2, 0, 3)]
    for h, w in [(13, 13), (7, 5), (416, 416), (2, 3)]:
        px = nptp.scale_rects(rects, (2, 4), h, w)
        boxes = [Box(0, 1, r0, r1, c0, c1) for r0, r1, c0, c1 in px if r1 > r0 and c1 > c0]
        assert sum(b.volume for b in boxes) == h * w == union_volume(boxes)


@pytest.mark.slow
@pytest.mark.parametrize("G", [6, 8])
def test_exact_optimal_on_8x8_for_4_devices(yolo_graph, G):
    cl = heterogeneous([("a", 10e9, 4 * GiB), ("b", 20e9, 4 * GiB), ("c", 30e9, 4 * GiB), ("d", 10e9, 4 * GiB)],
                       12.5e6, name="het4")
    tm = nptp.tile_model(yolo_graph, cl, (G, G))
    r = nptp.solve_tiles(tm, "cpsat", time_limit=300)
    assert r.status == "optimal"
    assert r.latency_s <= nptp.grid_heuristic(tm)[1] * (1 + 1e-9)


def test_cli_grid_and_tiles(tmp_path):
    from partopt.cli import main
    png = tmp_path / "t.png"
    assert main(["solve", "yolov2_tiny", "--cluster", "pi4x4", "--method", "nptp", "--exact", "--grid", "3x2",
                 "--tiles", str(png), "--json"]) == 0
    assert png.stat().st_size > 1000
    for bad in (["--grid", "4"], ["--exact", "--grid", "0"], ["--exact", "--grid", "a"]):
        assert main(["solve", "yolov2_tiny", "--method", "nptp", *bad]) == 2
