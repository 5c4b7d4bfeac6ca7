"""The edge CNNs of the zoo (partopt/zoo_edge.py): sizes against their papers, plans verified."""
import pytest

from partopt.bounds import lower_bound
from partopt.cluster import preset
from partopt.errors import NotApplicableError
from partopt.methods import METHODS
from partopt.methods.baselines import coedge, single
from partopt.verify import verify
from partopt.zoo import EDGE

# multiply-accumulates of the convs and linear layers, and parameters, as the papers (and, for
# YOLOv5n, Ultralytics' table: 4.5 GFLOPs = 2 x MACs at 640x640) state them
PUBLISHED = {"mobilenet_v3_small": (56e6, 2.5e6), "efficientnet_b0": (0.39e9, 5.3e6),
             "shufflenet_v2": (146e6, 2.3e6), "squeezenet": (0.35e9, 1.24e6), "yolov5n": (4.5e9 / 2, 1.9e6)}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_sizes_match_the_papers(zoo, name):
    _, _, g = zoo(name)
    macs = sum(o.flops for o in g.ops if o.kind in ("conv", "deconv", "linear")) / 2
    params = sum(o.param_bytes for o in g.ops if o.kind in ("conv", "deconv", "linear", "bn")) / 4
    bn_stats = sum(2 * o.out_chw[0] for o in g.ops if o.kind == "bn")       # running mean and var: buffers
    want_macs, want_params = PUBLISHED[name]
    assert macs == pytest.approx(want_macs, rel=0.03)
    assert params - bn_stats == pytest.approx(want_params, rel=0.04)


def test_unet_flops_by_hand(zoo):
    """The small U-Net's first double conv at 512x512: two 3x3 convs (3->16, 16->16)."""
    _, _, g = zoo("unet")
    convs = [o for o in g.ops if o.kind == "conv"]
    assert convs[0].flops == 2 * 3 * 9 * 16 * 512 * 512
    assert convs[1].flops == 2 * 16 * 9 * 16 * 512 * 512
    ups = [o for o in g.ops if o.kind == "deconv"]
    assert [o.out_chw for o in ups] == [(128, 64, 64), (64, 128, 128), (32, 256, 256), (16, 512, 512)]
    assert ups[0].flops == 2 * 256 * 4 * 128 * 32 * 32       # 2x2 taps, stride 2: each input lands 4 times


@pytest.mark.parametrize("name", EDGE)
def test_edge_models_verify_layer_by_layer(zoo, name):
    net, x, g = zoo(name)
    cl = preset("pi4x4")
    sol = coedge(g, cl, model=name)
    v = verify(sol.plan, net, x, g, cl)
    assert v.ok and v.max_rel_err <= 1e-4 and v.bytes_moved == sol.report.comm_bytes, v.reason
    assert lower_bound(g, cl).seconds <= single(g, cl).report.latency_s * (1 + 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", EDGE)
def test_every_demo_method_plans_and_verifies_the_edge_models(zoo, name):
    net, x, g = zoo(name)
    cl = preset("hetero3")
    for m, entry in METHODS.items():
        if not entry.demo:
            continue
        try:
            sol = entry.heuristic(g, cl, model=name)
        except NotApplicableError:
            continue
        if sol.plan is not None:
            v = verify(sol.plan, net, x, g, cl)
            assert v.ok and v.max_rel_err <= 1e-4, (m, v.reason)
