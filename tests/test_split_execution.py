"""Property tests: random conv/pool layers, random splits, split execution equals unsplit."""
import random

import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from partopt.cluster import homogeneous
from partopt.geometry import Box, ranges_from_counts
from partopt.graph import LayerGraph
from partopt.methods.baselines import layer_stages
from partopt.plan import Stage, Task, build_plan, evaluate
from partopt.verify import verify
from partopt.zoo import randomize

CL = homogeneous(3, bandwidth_bytes_per_s=1e6, latency_s=1e-3, link="mesh")
DEVS = CL.names


def cuts(draw, n, max_parts):
    parts = draw(st.integers(1, min(n, max_parts)))
    points = sorted(draw(st.lists(st.integers(1, n - 1), min_size=parts - 1, max_size=parts - 1, unique=True))) \
        if n > 1 else []
    edges = [0] + points + [n]
    return list(zip(edges[:-1], edges[1:]))


@st.composite
def layer(draw, cin):
    kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool"]))
    k = draw(st.integers(1, 7))
    s = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    if kind == "conv":
        g = draw(st.sampled_from([g for g in (1, 2, 3) if cin % g == 0]))
        cout = g * draw(st.integers(1, 3))
        p = draw(st.integers(0, 3))
        return nn.Conv2d(cin, cout, k, s, p, d, groups=g, bias=draw(st.booleans())), cout, d * (k - 1) + 1 - 2 * p
    p = draw(st.integers(0, k // 2))
    if kind == "maxpool":
        d = d if p <= (d * (k - 1) + 1) // 2 else 1
        return nn.MaxPool2d(k, s, p, d, ceil_mode=draw(st.booleans())), cin, d * (k - 1) + 1 - 2 * p
    return (nn.AvgPool2d(k, s, p, ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans())), cin,
            k - 2 * p)


@st.composite
def case(draw):
    cin = draw(st.sampled_from([1, 2, 3, 6]))
    layers, c = [], cin
    for _ in range(draw(st.integers(1, 3))):
        m, c, eff = draw(layer(c))
        layers += [m, nn.ReLU()]
    h = draw(st.integers(6, 28))
    w = draw(st.integers(1, 28))
    net = randomize(nn.Sequential(*layers), draw(st.integers(0, 1000)))
    x = torch.randn(1, cin, h, w)
    try:
        with torch.no_grad():
            y = net(x)
    except RuntimeError:
        return None  # shape too small for this stack: not a case
    if y.numel() == 0:
        return None
    return net, x, draw(st.randoms(use_true_random=False)), draw(st.data())


def random_tasks(data, shape, rnd: random.Random):
    c, h, w = shape
    cs = cuts(data.draw, c, 3)
    hs = cuts(data.draw, h, 4)
    ws = cuts(data.draw, w, 3)
    return [Task(rnd.choice(DEVS), Box(a, b, e, f, i, j)) for a, b in cs for e, f in hs for i, j in ws]


def check_fused_split(cs) -> LayerGraph:
    """The stack of case ``cs`` as one fused block, its output cut into random boxes on random
    devices, executed and compared with the unsplit stack; returns its graph."""
    net, x, rnd, data = cs
    g = LayerGraph.from_module(net, x)
    tasks = random_tasks(data, g.op[g.output].out_chw, rnd)
    plan = build_plan(g, CL, [Stage([o.name for o in g.ops], tasks)], model="t", method="test",
                      source=rnd.choice(DEVS), sink=rnd.choice(DEVS))
    v = verify(plan, net, x, g, CL)
    assert v.ok, v.reason
    assert v.bytes_moved == plan.comm_bytes == evaluate(plan, g, CL).comm_bytes
    return g


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case())
def test_fused_block_split_equals_unsplit(cs):
    """The whole stack as one fused block, its output cut into random boxes on random devices."""
    assume(cs is not None)
    check_fused_split(cs)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case())
def test_layer_by_layer_split_equals_unsplit(cs):
    """Each layer its own stage with its own random split: halos routed between stages."""
    assume(cs is not None)
    net, x, rnd, data = cs
    g = LayerGraph.from_module(net, x)
    stages = []
    for ops in layer_stages(g):
        gather = rnd.choice([None, None, rnd.choice(DEVS)])
        stages.append(Stage(ops, random_tasks(data, g.op[ops[-1]].out_chw, rnd), gather_to=gather))
    plan = build_plan(g, CL, stages, model="t", method="test", source=rnd.choice(DEVS), sink=rnd.choice(DEVS))
    v = verify(plan, net, x, g, CL)
    assert v.ok, v.reason


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 9), st.integers(1, 5), st.integers(1, 5), st.integers(3, 12), st.data())
def test_partial_sums_over_input_channels(cin, cout, k, hw, data):
    """A conv split by input channels; partial sums reduced (to one device, or scattered by rows)."""
    k = min(k, hw)
    net = randomize(nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU()), data.draw(st.integers(0, 99)))
    x = torch.randn(1, cin, hw, hw)
    g = LayerGraph.from_module(net, x)
    conv, relu = g.ops[0].name, g.ops[1].name
    full = Box.full(g.op[conv].out_chw)
    parts = cuts(data.draw, cin, 3)
    rnd = data.draw(st.randoms(use_true_random=False))
    stage1 = Stage([conv], [Task(rnd.choice(DEVS), full, rng) for rng in parts])
    stage2 = Stage([relu], random_tasks(data, g.op[relu].out_chw, rnd))
    plan = build_plan(g, CL, [stage1, stage2], model="t", method="test", source=rnd.choice(DEVS))
    v = verify(plan, net, x, g, CL)
    assert v.ok, v.reason


def test_grouped_and_depthwise_channel_splits():
    for groups, cin, cout in [(4, 8, 8), (8, 8, 16), (2, 6, 4)]:
        net = randomize(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups)), 1)
        x = torch.randn(1, cin, 9, 9)
        g = LayerGraph.from_module(net, x)
        for counts in ([1] * cout, [cout - 1, 1], [3, cout - 3]):
            tasks = [Task(DEVS[i % 3], Box(a, b, 0, 9, 0, 9)) for i, (a, b) in enumerate(ranges_from_counts(counts))]
            plan = build_plan(g, CL, [Stage([g.ops[0].name], tasks)], model="t", method="t")
            assert verify(plan, net, x, g, CL).ok
