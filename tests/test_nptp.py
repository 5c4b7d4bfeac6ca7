import pytest
from hypothesis import given, settings, strategies as st

from partopt.cluster import heterogeneous, homogeneous
from partopt.geometry import Box, union_volume
from partopt.graph import LayerGraph
from partopt.methods import nptp
from partopt.methods.baselines import coedge
from partopt.verify import verify
from partopt.zoo import example_input, load_model

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


@pytest.mark.parametrize("name", ["yolov2_tiny", "resnet18", "mobilenet_v2"])
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
