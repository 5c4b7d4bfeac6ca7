import pytest

from partopt.cluster import Cluster, Device, heterogeneous, homogeneous, preset
from partopt.methods.baselines import coedge, layer_stages, layerwise, single
from partopt.verify import verify
from partopt.zoo import CLASSIC as ZOO

CLUSTERS = {
    "pi4x4": preset("pi4x4"),
    "hetero3": preset("hetero3"),
    "mesh2": homogeneous(2, link="mesh", bandwidth_bytes_per_s=12.5e6),
}


@pytest.mark.parametrize("cluster", list(CLUSTERS))
@pytest.mark.parametrize("method", [single, layerwise, coedge], ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", list(ZOO))
def test_every_baseline_verifies_on_every_zoo_model(zoo, name, method, cluster):
    module, x, g = zoo(name)
    cl = CLUSTERS[cluster]
    sol = method(g, cl, model=name)
    assert sol.status == "heuristic" and sol.report.memory_ok
    v = verify(sol.plan, module, x, g, cl)
    assert v.ok, v.reason
    assert v.bytes_moved == sol.report.comm_bytes
    assert v.max_rel_err <= 1e-4


@pytest.mark.parametrize("name", ["vgg16", "yolov2_tiny", "resnet18"])
def test_eight_devices(zoo, name):
    module, x, g = zoo(name)
    cl = preset("pi4x8")
    for method in (layerwise, coedge):
        sol = method(g, cl, model=name)
        assert verify(sol.plan, module, x, g, cl).ok


def test_single_latency_is_flops_over_speed(zoo):
    _, _, g = zoo("vgg16")
    cl = preset("hetero3")           # the source is the fastest device: no transfer at all
    sol = single(g, cl, model="vgg16")
    assert sol.plan.stages[0].tasks[0].device == "server"
    assert sol.report.latency_s == pytest.approx(g.total_flops / 100e9)
    assert sol.report.comm_bytes == 0


def test_single_picks_fastest_device_that_fits(zoo):
    _, _, g = zoo("vgg16")
    need = single(g, preset("hetero3"), model="vgg16").report.peak_memory_bytes["server"]
    cl = heterogeneous([("big", 50e9, need + 10), ("fast", 90e9, need // 2)], 12.5e6, name="x")
    sol = single(g, cl, model="vgg16")
    assert sol.status == "heuristic" and sol.plan.stages[0].tasks[0].device == "big"


def test_infeasible_reports_device_and_missing_bytes(zoo):
    _, _, g = zoo("vgg16")
    cl = homogeneous(4, memory_bytes=64 * 2 ** 20)     # 64 MiB each: VGG-16's FC weights alone are ~470 MB
    for method in (single, layerwise, coedge):
        sol = method(g, cl, model="vgg16")
        assert sol.status == "infeasible"
        assert "lacks" in sol.reason and "pi" in sol.reason
        for d, lack in sol.report.over_memory.items():
            assert lack == sol.report.peak_memory_bytes[d] - 64 * 2 ** 20 > 0


def test_coedge_shrinks_share_of_small_device(zoo):
    module, x, g = zoo("yolov2_tiny")
    full = coedge(g, homogeneous(3), model="y")
    peak = full.report.peak_memory_bytes
    cap = int(peak["pi1"] * 0.9)
    cl = Cluster("tight", tuple(Device(f"pi{i}", 8e9, cap if i == 1 else 2 ** 31) for i in range(3)),
                 homogeneous(3).bandwidth, 0.002, "shared")
    sol = coedge(g, cl, model="y")
    assert sol.status == "heuristic" and sol.report.peak_memory_bytes["pi1"] <= cap
    assert sol.plan.meta["shares"]["pi1"] < sol.plan.meta["shares"]["pi0"]
    assert verify(sol.plan, module, x, g, cl).ok


def test_layer_stages_have_one_output(zoo):
    for name in ZOO:
        _, _, g = zoo(name)
        stages = layer_stages(g)
        assert [n for s in stages for n in s] == [o.name for o in g.ops]
        for s in stages:
            inside = set(s)
            for n in s[:-1]:
                assert all(c in inside for c in g.consumers[n])


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "mobilenet_v2"])
def test_coedge_concat_all_gathers_before_every_conv_and_linear_and_verifies(zoo, name):
    """coedge-concat splits every layer by output channels; a conv (groups=1) or linear layer
    then reads every input channel, so each device receives exactly the channels it lacks of
    the whole input: the concatenation of the IOP paper's baseline."""
    from partopt.methods.baselines import coedge_concat
    from partopt.plan import FLOAT_BYTES
    module, x, g = zoo(name)
    cl = preset("hetero3")
    sol = coedge_concat(g, cl, model=name)
    checked = 0
    for s in sol.plan.stages[1:]:
        op = g.op[s.ops[0]]
        if not (op.kind == "linear" or (op.kind == "conv" and op.groups == 1 and op.kernel[0] >= op.stride[0])):
            continue        # a strided 1x1 conv reads (and is sent) only the rows and columns it samples
        tensor = op.inputs[0]
        c, h, w = g.tensor_chw(tensor)
        for t in s.tasks:
            own = sum(b.box.volume for prev in sol.plan.stages if prev.output == tensor for b in prev.tasks
                      if b.device == t.device)
            got = sum(tr.nbytes for tr in s.transfers if tr.dst == t.device and tr.tensor == tensor)
            assert got == (c * h * w - own) * FLOAT_BYTES * g.batch, (s.ops[0], t.device)
            checked += 1
    assert checked > 0
    v = verify(sol.plan, module, x, g, cl)
    assert v.ok and v.max_rel_err <= 1e-4 and v.bytes_moved == sol.report.comm_bytes
