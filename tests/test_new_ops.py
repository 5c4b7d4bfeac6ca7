"""Edge-CNN ops (issue 17): squeeze-excite gates, channel split and shuffle, upsampling,
transposed convs, zero padding, functional pools, mean over H and W. Random shapes, random
splits, split execution against the unsplit layers; parser errors; the lower bound."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from partopt.bounds import lower_bound, necessary_flops
from partopt.cluster import homogeneous, preset
from partopt.cost import region_flops
from partopt.errors import UnsupportedOpError
from partopt.geometry import Box
from partopt.graph import LayerGraph
from partopt.methods import METHODS
from partopt.methods.baselines import layer_stages, single
from partopt.plan import Stage, build_plan
from partopt.verify import verify
from partopt.zoo import randomize

from test_split_execution import CL, DEVS, check_fused_split, random_tasks


class Gate(nn.Module):
    """Squeeze-excite: x * hardsigmoid(conv(relu(conv(mean(x)))))."""

    def __init__(self, c, sigmoid=False):
        super().__init__()
        self.a, self.b, self.sigmoid = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1), sigmoid

    def forward(self, x):
        g = x.mean((2, 3), keepdim=True)
        g = self.b(F.relu(self.a(g)))
        return x * (torch.sigmoid(g) if self.sigmoid else F.hardsigmoid(g))


class Shuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.size()
        x = x.view(b, self.groups, c // self.groups, h, w)
        return torch.transpose(x, 1, 2).contiguous().view(b, c, h, w)


class SplitCat(nn.Module):
    """chunk along channels, a conv on one part, concatenated back (ShuffleNetV2's unit)."""

    def __init__(self, c):
        super().__init__()
        self.half = c // 2
        self.conv = nn.Conv2d(c - self.half, c - self.half, 3, padding=1)

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([a, self.conv(b)], 1)


class Interp(nn.Module):
    def __init__(self, s, mode):
        super().__init__()
        self.s, self.mode = s, mode

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.s, mode=self.mode)


@st.composite
def new_layer(draw, c):
    kind = draw(st.sampled_from(["upsample", "interp", "deconv", "pad", "gate", "shuffle", "split", "maxpool1"]))
    if kind == "upsample":
        return nn.Upsample(scale_factor=draw(st.integers(1, 3)), mode=draw(st.sampled_from(["nearest", "bilinear"]))), c
    if kind == "interp":
        return Interp(draw(st.integers(2, 3)), draw(st.sampled_from(["nearest", "bilinear"]))), c
    if kind == "deconv":
        k, s, d = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        p = draw(st.integers(0, max(0, (d * (k - 1)) // 2)))
        op = draw(st.integers(0, max(s, d) - 1))
        cout = draw(st.integers(1, 4))
        return nn.ConvTranspose2d(c, cout, k, s, p, op, dilation=d, bias=draw(st.booleans())), cout
    if kind == "pad":
        return nn.ZeroPad2d(tuple(draw(st.integers(0, 2)) for _ in range(4))), c
    if kind == "gate":
        return Gate(c, draw(st.booleans())), c
    if kind == "shuffle":
        gs = [g for g in (2, 3, 4) if c % g == 0 and g < c]
        return (Shuffle(draw(st.sampled_from(gs))), c) if gs else (nn.Identity(), c)
    if kind == "split":
        return (SplitCat(c), c) if c >= 2 else (nn.Identity(), c)
    return nn.MaxPool2d(draw(st.sampled_from([3, 5])), 1, draw(st.integers(1, 2))), c     # SPPF's stride-1 pool


@st.composite
def new_case(draw):
    c = draw(st.sampled_from([2, 4, 6]))
    layers = [nn.Conv2d(3, c, 3, padding=1)]
    for _ in range(draw(st.integers(1, 3))):
        m, c = draw(new_layer(c))
        layers += [m, nn.ReLU()]
    net = randomize(nn.Sequential(*layers), draw(st.integers(0, 1000)))
    x = torch.randn(1, 3, draw(st.integers(3, 12)), draw(st.integers(3, 12)))
    try:
        with torch.no_grad():
            y = net(x)
    except RuntimeError:
        return None
    if y.numel() == 0 or y.shape[2] > 60 or y.shape[3] > 60:
        return None
    return net, x, draw(st.randoms(use_true_random=False)), draw(st.data())


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(new_case())
def test_new_ops_fused_split_equals_unsplit(cs):
    """The whole stack as one fused block, its output cut into random boxes on random devices."""
    assume(cs is not None)
    check_fused_split(cs)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(new_case())
def test_new_ops_layer_by_layer_split_equals_unsplit(cs):
    """Each layer its own stage with its own random split; and the lower bound stays below the
    whole model on one device (its FLOPs are the necessary ones, never more)."""
    assume(cs is not None)
    net, x, rnd, data = cs
    g = LayerGraph.from_module(net, x)
    stages = [Stage(ops, random_tasks(data, g.op[ops[-1]].out_chw, rnd), gather_to=rnd.choice([None, DEVS[0]]))
              for ops in layer_stages(g)]
    plan = build_plan(g, CL, stages, model="t", method="test", source=rnd.choice(DEVS), sink=rnd.choice(DEVS))
    v = verify(plan, net, x, g, CL)
    assert v.ok, v.reason
    assert necessary_flops(g) <= g.total_flops
    assert lower_bound(g, CL).seconds <= single(g, CL).report.latency_s * (1 + 1e-12)


def test_region_flops_add_up_and_a_deconv_counts_every_tap():
    net = randomize(nn.Sequential(nn.ConvTranspose2d(3, 5, 3, stride=2)), 0)
    g = LayerGraph.from_module(net, torch.randn(1, 3, 7, 6))
    op = g.ops[0]
    assert op.flops == 2 * 3 * 5 * 9 * 7 * 6          # no padding: every input x tap lands in the output
    full = Box.full(op.out_chw)
    halves = [Box(0, 5, 0, 6, 0, full.w1), Box(0, 5, 6, full.h1, 0, full.w1)]
    assert sum(region_flops(op, b) for b in halves) == op.flops


def test_a_partly_used_split_counts_only_its_used_channels():
    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return torch.chunk(self.conv(x), 2, dim=1)[0] + 1.0

    g = LayerGraph.from_module(randomize(Half(), 0), torch.randn(1, 3, 8, 8))
    conv = g.ops[0]
    assert necessary_flops(g) == conv.flops // 2 + g.total_flops - conv.flops


@pytest.mark.parametrize("module,match", [
    (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), "align_corners"),
    (nn.Upsample(size=(9, 9)), "not by an integer factor"),
    (nn.ConvTranspose2d(4, 4, 3, groups=2), "groups=2"),
    (Interp(2, "bicubic"), "mode='bicubic'"),
])
def test_unsupported_variants_are_refused_with_the_node(module, match):
    with pytest.raises(UnsupportedOpError, match=match):
        LayerGraph.from_module(nn.Sequential(nn.Conv2d(3, 4, 1), module), torch.randn(1, 3, 6, 6))


@pytest.mark.parametrize("fn,match", [
    (lambda x: x.mean(1, keepdim=True), "only the mean over H and W"),
    (lambda x: torch.chunk(x, 2, dim=2)[0], "along channels"),
    (lambda x: x * torch.chunk(x, 4, dim=1)[0], "broadcasting"),      # a one-channel attention map
    (lambda x: x.view(1, 2, 2, 6, 6).sum(1), "after grouped channels"),
])
def test_unsupported_functional_forms_are_refused(fn, match):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return fn(self.conv(x))

    with pytest.raises(UnsupportedOpError, match=match):
        LayerGraph.from_module(M(), torch.randn(1, 3, 6, 6))


def test_every_demo_method_plans_and_verifies_a_net_of_the_new_ops():
    """One net with every new op; every method `partopt demo` runs, on a shared and a mesh cluster."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.se, self.sh, self.sc = nn.Conv2d(3, 8, 3, padding=1), Gate(8), Shuffle(2), SplitCat(8)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear")
            self.pad, self.dc = nn.ZeroPad2d((1, 0, 1, 0)), nn.ConvTranspose2d(8, 6, 3, 2, 1, 1)
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            x = self.sc(self.sh(self.se(self.a(x))))
            x = F.max_pool2d(x, 5, 1, 2)
            x = F.interpolate(self.up(x) + 1.0, scale_factor=2, mode="nearest")
            x = self.dc(self.pad(x)) * 0.5
            return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    net, x = randomize(Net(), 0), torch.randn(1, 3, 12, 12)
    g = LayerGraph.from_module(net, x)
    assert {"mul", "shuffle", "slice", "upsample", "pad", "deconv", "maxpool"} <= {o.kind for o in g.ops}
    for cl in (preset("hetero3"), homogeneous(3, link="mesh")):
        lb = lower_bound(g, cl).seconds
        for name, m in METHODS.items():
            if not m.demo:
                continue
            sol = m.heuristic(g, cl)
            v = verify(sol.plan, net, x, g, cl)
            assert v.ok and v.max_rel_err <= 1e-4, (cl.name, name, v.reason)
            assert lb <= sol.report.latency_s * (1 + 1e-12), (cl.name, name)
