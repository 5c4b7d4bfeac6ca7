"""best (every method, device subsets, mixed blocks) and the lower bound no plan can beat."""
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings

from partopt.bounds import earliest_arrivals, latest_departures, lower_bound, necessary_flops, necessary_flops_by_kind
from partopt.cluster import heterogeneous, homogeneous, preset
from partopt.methods import segment_path
from partopt.methods import METHODS, best, dpfp, iop
from partopt.methods.baselines import layer_stages
from partopt.geometry import Box
from partopt.plan import Stage, Task, build_plan, evaluate
from partopt.verify import verify

from test_split_execution import CL, case, random_tasks
from conftest import kinded

GiB = 2 ** 30
OTHERS = [m for m, e in METHODS.items() if e.demo and m != "best"]


@pytest.mark.parametrize("name,cl", [("lenet5", "pi4x2"), ("lenet5", "hetero3"), ("alexnet", "pi4x4"),
                                     ("alexnet", "hetero3"), ("lenet5", "dn2pciot-2")])
def test_best_is_never_slower_than_any_other_heuristic_and_verifies(zoo, name, cl):
    net, x, g = zoo(name)
    c = preset(cl)
    b = best.heuristic(g, c, model=name)
    others = OTHERS + (["dn2pciot", "dn2pciot-metis", "dn2pciot-per-layer", "dn2pciot-greedy"] if name == "lenet5" else [])
    for m in others:
        s = METHODS[m].heuristic(g, c, model=name)
        if s.feasible:
            assert b.report.latency_s <= s.report.latency_s * (1 + 1e-9), m
    assert b.status == "heuristic" and b.plan.method == "best"
    assert b.plan.meta["candidates"] + b.plan.meta["skipped_by_bound"] >= len(OTHERS)
    assert b.report.latency_s == evaluate(b.plan, g, c).latency_s
    v = verify(b.plan, net, x, g, c)
    assert v.ok and v.bytes_moved == v.bytes_planned
    assert lower_bound(g, c).seconds <= b.report.latency_s * (1 + 1e-12)


@pytest.mark.parametrize("name,cl", [("lenet5", "pi4x4"), ("vgg11", "pi4x8")])
def test_candidates_skipped_by_the_bound_could_not_have_won(zoo, name, cl):
    """best skips a candidate when the fitting incumbent is no slower than the lower bound of
    every plan on the candidate's devices; built anyway, every skipped one is no faster."""
    net, x, g = zoo(name)
    c = preset(cl)
    b = best.heuristic(g, c, model=name)
    assert b.plan.meta["skipped_by_bound"] > 0
    work = necessary_flops_by_kind(g)
    seg = best.segments(g, c, memory=False)
    checked = 0
    for origin, devices, make in best._candidates(g, c, name, None, lambda: seg):
        cl_ = c if devices is None else c.subset([n for n in c.names if n in devices])
        if lower_bound(g, cl_, work=work).seconds < b.report.latency_s * (1 - 1e-9):
            continue
        cand = make()
        plan = getattr(cand, "plan", cand)
        if plan is not None:
            assert evaluate(plan, g, c).latency_s >= b.report.latency_s * (1 - 1e-9), origin
            checked += 1
    assert checked >= b.plan.meta["skipped_by_bound"]


def test_heuristic_stops_growing_a_subset_after_rises_exact_tries_every_size(zoo):
    """With the latencies it has seen, the heuristic's candidates stop one method's subsets after
    SUBSET_PATIENCE slower sizes in a row; without them (exact) every size k = 2..n-1 comes."""
    net, x, g = zoo("alexnet")
    c = preset("pi4x8")

    def subset_origins(seen):
        out = []
        for origin, devices, _ in best._candidates(g, c, "alexnet", None, lambda: None, seen):
            if devices is not None:
                out.append(origin)
                if seen is not None:
                    seen[origin] = float(len(devices))     # every size slower than the last
        return out

    every = subset_origins(None)
    assert len(every) == len(best.ON_SUBSETS) * (len(c) - 2)
    grown = subset_origins({})
    assert len(grown) == len(best.ON_SUBSETS) * (1 + best.SUBSET_PATIENCE)
    assert set(grown) < set(every)


@pytest.mark.parametrize("cl", ["pi4x4", "hetero3"])
def test_layers_variants_left_out_of_the_memory_free_dp_change_nothing(zoo, cl):
    """Without memory, a `layers` variant whose messages alone take at least the fastest variant
    of its units priced so far is left out: the DP's optimum is the one over every variant."""
    net, x, g = zoo("alexnet")
    c = preset(cl)
    lean = best.segments(g, c, memory=False)
    every = best.segments(g, c, memory=True)      # memory rows need every variant: none left out
    assert lean.pruned > 0 and every.pruned == 0
    assert best.dp(lean)[0] == pytest.approx(best.dp(every)[0], rel=1e-12)


def test_subsets_beat_the_whole_cluster_where_messages_are_dear(zoo):
    """AlexNet on four Pis sharing a 2 ms radio: the best plan leaves devices idle."""
    net, x, g = zoo("alexnet")
    c = preset("pi4x4")
    b = best.heuristic(g, c, model="alexnet")
    assert b.report.latency_s < min(METHODS[m].heuristic(g, c, model="alexnet").report.latency_s for m in OTHERS)
    used = {t.device for s in b.plan.stages for t in s.tasks}
    assert used != set(c.names)


def test_segment_dp_value_and_memory_are_evaluates(zoo):
    """Gathers at the master make segments additive: evaluate of any segment plan is the sum of
    its variants' times, and its peak memory is weights summed plus the largest activation set."""
    net, x, g = zoo("alexnet")
    rnd = random.Random(0)
    for c in (preset("hetero3"), preset("pi4x4"), kinded(preset("pi4x4"))):
        seg = best.segments(g, c)
        value, chosen = best.dp(seg)
        plan = best.plan_of(seg, chosen, model="alexnet")
        rep = evaluate(plan, g, c)
        assert rep.latency_s == pytest.approx(value, rel=1e-12)
        assert rep.peak_memory_bytes == best.memory_of(seg, chosen)
        assert value <= dpfp.dp(dpfp.problem(g, c))[0] * (1 + 1e-12)     # DPFP's blockings are segment plans
        assert verify(plan, net, x, g, c).ok
        for _ in range(5):              # random segment plans
            path, i = [], 0
            while i < seg.n:
                k = rnd.choice([k for k, v in enumerate(seg.variants) if v.i == i])
                path.append(k)
                i = seg.variants[k].j
            rep = evaluate(best.plan_of(seg, path), g, c)
            assert rep.latency_s == pytest.approx(sum(seg.variants[k].seconds for k in path), rel=1e-12)
            assert rep.peak_memory_bytes == best.memory_of(seg, path)


def _tiny():
    """Conv, ReLU, pool, conv, ReLU on 12x12: five units, small enough to brute-force."""
    import torch
    import torch.nn as nn
    from partopt.graph import LayerGraph
    from partopt.zoo import randomize
    net = randomize(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()), 0).eval()
    x = torch.randn(1, 1, 12, 12)
    return net, x, LayerGraph.from_module(net, x)


def _capped(c, cap_bytes):
    import dataclasses
    return dataclasses.replace(c, name=c.name + "-cap",
                               devices=tuple(dataclasses.replace(d, memory_bytes=cap_bytes) for d in c.devices))


@pytest.mark.parametrize("solver", ["highs", "cbc", "cpsat"])
def test_segment_model_equals_brute_force_with_memory(zoo, solver):
    """A five-unit net on 2-3 devices, memory roomy and so tight that the fastest segment plan
    breaks it: the exact segment model's optimum is brute force's over every segment plan."""
    net, x, g = _tiny()
    for c in (heterogeneous([("a", 1e9, GiB), ("b", 3e9, GiB), ("c", 2e9, GiB)], 2e6, latency_s=1e-4),
              homogeneous(2, bandwidth_bytes_per_s=1e7, latency_s=1e-4, link="shared"),
              kinded(homogeneous(2, bandwidth_bytes_per_s=1e7, latency_s=1e-4, link="shared"), 1e-4)):
        seg = best.segments(g, c)
        free = best.dp(seg)
        peak = max(best.memory_of(seg, free[1]).values())
        outcomes = []
        # roomy; just below the DP plan's peak; binding (a slower plan fits); too small for any
        for cl in (c, _capped(c, peak - 1), _capped(c, int(0.9 * peak)), _capped(c, int(0.4 * peak))):
            seg = best.Segments(g, cl, seg.master, seg.units, seg.inputs, seg.variants)
            bf = best.brute_force(seg)
            r, chosen = segment_path.solve(seg.variants, seg.n, cl, solver, 60, 1)
            if bf[1]:
                assert r.status == "optimal"
                assert sum(seg.variants[k].seconds for k in chosen) == pytest.approx(bf[0], rel=1e-6)
                assert all(v <= cl.device(d).memory_bytes for d, v in best.memory_of(seg, chosen).items())
            else:
                assert r.status == "infeasible"
            outcomes.append(bf[0])
        assert outcomes[0] == free[0] and outcomes[2] > free[0] and outcomes[3] == float("inf")
        if c.uniform_rates:
            assert outcomes[2] > 2 * free[0]


@pytest.mark.parametrize("name,cl", [("lenet5", "pi4x2"), ("alexnet", "pi4x2")])
def test_exact_is_optimal_never_worse_than_the_heuristic_nor_dpfp_exact_and_verifies(zoo, name, cl):
    """DPFP's optimal-row blocks are variants of the segment model, so best --exact is never
    slower than DPFP's exact optimum (AlexNet on pi4x2: integer rows beat speed rows)."""
    net, x, g = zoo(name)
    c = preset(cl)
    h = best.heuristic(g, c, model=name)
    d = dpfp.exact(g, c, model=name, solver="highs")
    assert d.status == "optimal"
    for solver in ("highs", "cpsat"):
        e = best.exact(g, c, model=name, solver=solver, time_limit=60)
        assert e.status == "optimal" and e.mode == "exact" and e.gap == 0.0
        assert e.objective == e.report.latency_s <= h.report.latency_s * (1 + 1e-9)
        assert e.report.latency_s <= d.report.latency_s * (1 + 1e-6)
        assert verify(e.plan, net, x, g, c).ok
    if name == "alexnet":
        assert d.report.latency_s < h.report.latency_s       # the rows variants matter here


def test_exact_under_a_memory_cap_beats_the_memory_blind_dp(zoo):
    """AlexNet on two devices with 150 MiB each: the fastest segment plan (all on one device)
    does not fit; the exact model finds the fastest one that does."""
    net, x, g = zoo("alexnet")
    c = _capped(preset("pi4x2"), 150 * 2 ** 20)
    seg = best.segments(g, c)
    _, free = best.dp(seg)
    assert any(v > 150 * 2 ** 20 for v in best.memory_of(seg, free).values())
    e = best.exact(g, c, model="alexnet", solver="highs", time_limit=60)
    assert e.status == "optimal" and e.report.memory_ok
    assert verify(e.plan, net, x, g, c).ok


def test_best_infeasible_when_nothing_fits(zoo):
    net, x, g = zoo("alexnet")
    c = homogeneous(2, memory_bytes=1024, name="tiny")
    b = best.heuristic(g, c, model="alexnet")
    assert b.status == "infeasible" and "no candidate plan fits memory" in b.reason


def test_cli_best_reports_the_lower_bound_heuristic_and_exact(capsys):
    import json
    from partopt.cli import main
    assert main(["solve", "lenet5", "--cluster", "pi4x2", "--method", "best", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["method"] == "best" and 0 < rec["lower_bound_s"] <= rec["latency_s"]
    assert main(["solve", "lenet5", "--cluster", "pi4x2", "--method", "best", "--exact", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["status"] == "optimal" and rec["mode"] == "exact" and rec["lower_bound_s"] <= rec["latency_s"]


# --- the lower bound ---------------------------------------------------------------------

def test_bound_is_zero_communication_without_latency(zoo):
    net, x, g = zoo("alexnet")
    c = homogeneous(4, latency_s=0.0, bandwidth_bytes_per_s=1e30, link="mesh")
    lb = lower_bound(g, c)
    assert lb.necessary_flops == g.total_flops
    assert lb.seconds == pytest.approx(g.total_flops / (4 * 8e9), rel=1e-9)


def test_earliest_arrivals_shared_medium_gives_slots_to_the_fastest(zoo):
    net, x, g = zoo("lenet5")
    c = heterogeneous([("src", 1e9, GiB), ("slow", 1e9, GiB), ("fast", 9e9, GiB)], 1e6, latency_s=0.01)
    c = type(c)(c.name, c.devices, c.bandwidth, c.latency_s, "shared")
    a = earliest_arrivals(g, c, "src")
    one = 0.01 + 4 / 1e6
    assert a == pytest.approx({"src": 0.0, "fast": one, "slow": 2 * one})


def test_latest_departures_mirror_the_arrivals_toward_the_sink(zoo):
    """Results must reach the sink: on a shared medium the fastest devices get the last slots;
    on a mesh a device leaves the fastest path's time to the sink (here via the fast relay)."""
    net, x, g = zoo("lenet5")
    c = heterogeneous([("src", 1e9, GiB), ("slow", 1e9, GiB), ("fast", 9e9, GiB)], 1e6, latency_s=0.01)
    shared = type(c)(c.name, c.devices, c.bandwidth, c.latency_s, "shared")
    one = 0.01 + 4 / 1e6
    assert latest_departures(g, shared, "src") == pytest.approx({"src": 0.0, "fast": one, "slow": 2 * one})
    bw = dict(c.bandwidth)
    bw[("slow", "src")] = 1.0                     # slow's direct link home is useless; via fast it is 2 hops
    mesh = type(c)(c.name, c.devices, bw, c.latency_s, "mesh")
    assert latest_departures(g, mesh, "src") == pytest.approx({"src": 0.0, "fast": one, "slow": 2 * one})
    lb = lower_bound(g, shared)
    assert lb.ends_s == latest_departures(g, shared, "src")
    # a sink other than the source: the source must now send its results too
    assert lower_bound(g, shared, sink="fast").ends_s["src"] > 0


def test_bound_charges_the_way_home_only_where_results_leave_a_device(zoo):
    """On a fast radio with a long latency nothing is worth splitting: every device but the
    source loses a message in and one out, so the bound is the source alone's time, and a plan
    run wholly on a worker is above it by the two messages."""
    net, x, g = zoo("lenet5")
    c = homogeneous(3, bandwidth_bytes_per_s=1e12, latency_s=1.0, link="shared")
    lb = lower_bound(g, c).seconds
    alone = g.total_flops / 8e9
    assert lb == pytest.approx(alone, rel=1e-9)
    worker = build_plan(g, c, [Stage([o.name for o in g.ops], [Task(c.names[1], Box.full(g.tensor_chw(g.output)))])],
                        model="m", method="single")
    assert evaluate(worker, g, c).latency_s >= lb + 2.0


@pytest.mark.parametrize("solver", ["highs"])
def test_bound_never_above_the_exact_optima_on_tiny_instances(zoo, solver):
    """LeNet-5 on 2 and 3 devices: below the brute-force optimum of IOP (every pairing and channel
    count), of DPFP's blockings, and of best's segment plans."""
    net, x, g = zoo("lenet5")
    two = homogeneous(2, bandwidth_bytes_per_s=1e9, latency_s=1e-6, link="mesh")
    three = heterogeneous([("a", 1e9, GiB), ("b", 3e9, GiB), ("c", 2e9, GiB)], 2e7, latency_s=1e-5)
    shared = type(three)(three.name, three.devices, three.bandwidth, three.latency_s, "shared")
    for c in (two, three, kinded(two, 1e-5), kinded(three, 1e-5), kinded(shared, 1e-5)):
        lb = lower_bound(g, c).seconds
        assert lb <= iop.brute_force(g, c).report.latency_s * (1 + 1e-12)
        assert lb <= dpfp.brute_force(dpfp.problem(g, c))[0] * (1 + 1e-12)
        assert lb <= best.dp(best.segments(g, c))[0] * (1 + 1e-12)
        tiny = _tiny()[2]
        assert lower_bound(tiny, c).seconds <= best.brute_force(best.segments(tiny, c))[0] * (1 + 1e-12)


def _heavy_fc():
    """Conv 1->2 on 6x6, then FC 72->64 and 64->10: 21368 bytes of weights, nearly all in the
    first FC layer, and small activations, so a memory cap forces the FC layers apart."""
    import torch
    import torch.nn as nn
    from partopt.graph import LayerGraph
    from partopt.zoo import randomize
    net = randomize(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(72, 64),
                                  nn.ReLU(), nn.Linear(64, 10)), 0).eval()
    x = torch.randn(1, 1, 6, 6)
    return net, x, LayerGraph.from_module(net, x)


@pytest.mark.parametrize("link", ["mesh", "shared"])
def test_memory_term_never_above_any_plan_that_fits_and_forces_workers(link):
    """Weights no one device can hold: the bound rises to the workers' messages (fact 4), and
    stays below every fitting plan of every DN2PCIoT assignment (brute force, latency) and below
    best's exact union optimum, with memory roomy and tight."""
    import itertools
    import numpy as np
    from partopt.bounds import necessary_weight_bytes
    from partopt.methods import dn2pciot
    net, x, g = _heavy_fc()
    assert necessary_weight_bytes(g) == sum(o.param_bytes for o in g.ops) == 21368
    three = heterogeneous([("a", 1e9, GiB), ("b", 3e9, GiB), ("c", 2e9, GiB)], 2e7, latency_s=1e-5)
    msg = 1e-5 + 4 / 2e7
    for cap, workers in ((64 * 1024, 0), (14 * 1024, 1), (9 * 1024, 2)):
        c = _capped(type(three)(three.name, three.devices, three.bandwidth, three.latency_s, link), cap)
        lb = lower_bound(g, c)
        assert lb.fits and lb.necessary_weight_bytes == 21368
        # mesh: the last device needed has one message in and one out; shared: 2 per worker
        want = 0.0 if workers == 0 else (2 * msg if link == "mesh" else 2 * workers * msg)
        assert lb.memory_s == pytest.approx(want, rel=1e-12)
        ng = dn2pciot.neuron_graph(g, "coarse")
        ev = dn2pciot.Evaluator(ng, c)
        X = np.array(list(itertools.product(range(3), repeat=len(ng.vertices))))
        scores = ev.scores(X, "rate")      # (bytes over memory, bottleneck s, bytes); latency >= bottleneck
        fits = [i for i, s in enumerate(scores) if s[0] == 0]
        assert fits
        # every fitting plan where few fit; else those not already above the bound by their bottleneck
        close = fits if len(fits) <= 500 else [i for i in fits if scores[i][1] < lb.seconds]
        for i in close:
            r = evaluate(dn2pciot.plan_of(ng, c, X[i]), g, c)
            assert not r.memory_ok or lb.seconds <= r.latency_s * (1 + 1e-12)
        e = best.exact(g, c, time_limit=60)
        assert e.status == "optimal" and lb.seconds <= e.report.latency_s * (1 + 1e-12)
    # devices that together lack room for the weights: no plan fits, and the bound says so
    assert not lower_bound(g, _capped(three, 4 * 1024)).fits


def test_memory_term_on_the_dn2pciot_presets(zoo):
    """LeNet-5's 246824 bytes of weights need 3 of dn2pciot-2's 96 KiB devices and 6 of
    dn2pciot-4's 48 KiB ones, so 2 and 5 workers each receive and send on the shared radio."""
    net, x, g = zoo("lenet5")
    for cl, workers in (("dn2pciot-1", 0), ("dn2pciot-2", 2), ("dn2pciot-4", 5)):
        c = preset(cl)
        lb = lower_bound(g, c)
        msg = c.latency_s + 4 / min(c.bandwidth.values())
        assert lb.memory_s == pytest.approx(2 * workers * msg, rel=1e-12), cl
        b = best.heuristic(g, c, model="lenet5")
        assert b.report.memory_ok and lb.seconds <= b.report.latency_s


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case())
def test_every_random_plan_does_the_necessary_work_and_respects_the_bound(cs):
    """Random conv/pool stacks (stride, dilation, padding): random fused and layer-by-layer
    splits never compute fewer FLOPs than necessary_flops, nor finish before the bound."""
    assume(cs is not None)
    net, x, rnd, data = cs
    from partopt.graph import LayerGraph
    g = LayerGraph.from_module(net, x)
    need = necessary_flops(g)
    assert 0 < need <= g.total_flops
    ops = [o.name for o in g.ops]
    fused = Stage(ops, random_tasks(data, g.tensor_chw(g.output), rnd))
    layered = [Stage(s, random_tasks(data, g.tensor_chw(s[-1]), rnd)) for s in layer_stages(g)]
    for cl in (CL, kinded(CL, 1e-4)):
        lb = lower_bound(g, cl).seconds
        for stages in ([fused], layered):
            plan = build_plan(g, cl, stages, model="m", method="random")
            rep = evaluate(plan, g, cl)
            assert sum(rep.flops.values()) >= need
            assert rep.latency_s >= lb * (1 - 1e-12)


def test_necessary_work_skips_what_a_stride_never_reads():
    """A 1x1 stride-2 conv reads every other row and column: the bound counts only those of the
    conv before it; a fused plan computes their hull (rows 0..6 of 8), still fewer FLOPs than
    the model's total, so the total would not be a valid bound."""
    import torch
    import torch.nn as nn
    from partopt.graph import LayerGraph
    from partopt.plan import Task
    from partopt.geometry import Box
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 1, stride=2)).eval()
    x = torch.randn(1, 3, 8, 8)
    g = LayerGraph.from_module(net, x)
    c = homogeneous(1, link="mesh")
    plan = build_plan(g, c, [Stage([o.name for o in g.ops], [Task("pi0", Box.full(g.tensor_chw(g.output)))])],
                      model="m", method="single")
    flops = sum(evaluate(plan, g, c).flops.values())
    first, second = g.ops
    assert necessary_flops(g) == first.flops // 4 + second.flops < flops < g.total_flops
    assert flops == first.flops * 49 // 64 + second.flops


def test_memory_free_segments_price_row_splits_from_tables_equal_to_routing(zoo):
    """The heuristic's segment table (memory=False: one-stage row splits priced from the blocks'
    row tables, layer-by-layer variants of one start in one incremental run) has the same
    variants and times as pricing each variant on its own."""
    for name, clusters in (("alexnet", ("pi4x4", "hetero3")), ("resnet18", ("hetero3",))):
        _, _, g = zoo(name)
        _check_fast_segments(g, [preset(c) for c in clusters])
    _check_fast_segments(zoo("alexnet")[2], [kinded(preset("hetero3"))])


@pytest.mark.parametrize("cl", ["pi4x4", "hetero3", "kinded"])
def test_layers_bound_is_never_above_the_variants_time(zoo, cl):
    """_layers_bound (first and last messages, each device's compute) never exceeds the time
    segment_path.price gives a layers variant, on a shared medium, a mesh, and rates per kind."""
    _, _, g = zoo("alexnet")
    c = kinded(preset("hetero3")) if cl == "kinded" else preset(cl)
    every = best.segments(g, c)
    checked = 0
    for v in every.variants:
        if v.style == "layers":
            b = best._layers_bound(g, c, every.master, every.inputs[v.i], best._unrouted(v.stages))
            assert b <= v.seconds * (1 + 1e-12), v.label
            assert b >= best._messages_bound(c, every.master, v.stages) * (1 - 1e-12)
            checked += 1
    assert checked > 20


def _check_fast_segments(g, clusters):
    for c in clusters:
        fast = best.segments(g, c, memory=False)
        slow = best.segments(g, c)
        key = lambda v: (v.i, v.j, v.style, v.devices)     # noqa: E731
        every = {key(v): v for v in slow.variants}
        assert len(fast.variants) + fast.pruned == len(slow.variants)
        for a in fast.variants:
            assert a.seconds == pytest.approx(every[key(a)].seconds, rel=1e-12, abs=0)
        kept = {key(a) for a in fast.variants}
        fastest = {}
        for a in fast.variants:
            fastest[(a.i, a.j)] = min(fastest.get((a.i, a.j), float("inf")), a.seconds)
        for k, b in every.items():      # every variant left out is no faster than one kept
            if k not in kept:
                assert b.style == "layers" and b.seconds >= fastest[(b.i, b.j)] * (1 - 1e-12)
