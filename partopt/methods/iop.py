"""IOP: interleaved operator partitioning, a greedy and an exact model, against CoEdge.

After Liu, Xu, Liu, Huang, Wei, Li, "Cooperative Inference with Interleaved Operator
Partitioning for CNNs" (ICIC 2024, arXiv 2409.07693). Only the abstract is available to
partopt; what follows is the algebra the abstract names, with partopt's readings stated.

**The pair.** Two convolutions A then B form an *IOP pair* when

- A is a groups=1 conv; device d computes output channels C_d of A from the whole input;
- between A and B stand only channel-local ops: batch norm, element-wise activations,
  dropout, max/avg/adaptive pooling, and depthwise convs (groups = in = out channels), each
  applied by device d to its channels C_d alone; no add or concat (they read other tensors);
- every tensor from A up to B's input is read only by the next op of the chain;
- B is a groups=1 conv; device d computes the partial sum of *all* of B's outputs over its
  input channels C_d (the weight columns W_B[:, C_d]), so nothing is concatenated between A
  and B;
- B is followed, inside its layer, by at least one channel-local op (batch norm,
  activation): those ops run as a row-split stage that reads every device's partial sum of
  its rows, i.e. a reduce-scatter, and adds B's bias. (A B whose output goes straight to
  another layer or to the model output is not a legal pair; in the zoo this excludes only
  yolov2_tiny's final 1x1 conv.)

A pair therefore becomes three stages of a plan: A..(the ops before B) split by output
channels, B alone as partial sums over the same channel ranges, and B's following ops split
by rows in proportion to speed. Every op not in a pair runs as in the CoEdge baseline
(:func:`partopt.methods.baselines.coedge` with speed shares): its layer split by output rows
in proportion to device speed, halos fetched from the neighbours. So the tensor a pair reads
is always held by rows, and the pair's A stage fetches the rows it lacks (an all-gather);
what a pair hands on is again held by rows. Grouped convs other than depthwise are never a
pair's A or B; a depthwise conv may stand between them.

**Channel counts.** Every device gets at least one channel of every pair (so a pair needs at
least as many channels as devices). Then every transfer of every stage is fixed by the
pairing alone, and a device's FLOPs and memory in a pair's stages are affine in its channel
count: the structure the exact model relies on.

**Greedy** (:func:`heuristic`, the paper's segmentation algorithm as its abstract describes
it): start with no pair; repeatedly add the legal pair, compatible with those chosen, that
improves the plan most, until none improves; channel shares in proportion to device speed.
"Improves" compares (bytes by which the plan overflows device memory, then latency), so a
pair that lets the plan fit is taken first. Ties go to the pair whose A comes first.

**Exact** (:func:`exact`): binary ``x_p`` per legal pair, ``s_k`` per layer (1 when layer k is
in no pair; ``s_k + sum of x_p over pairs containing k = 1``), integer channel counts
``n_{p,d} >= 1`` summing to the pair's channels, the schedule of :func:`partopt.plan.evaluate`
stated over variables (:class:`partopt.maxplus.SymSchedule`, each stage under its literal),
per-device memory (weights held + each stage's activation bytes <= capacity), objective the
latency. CBC or HiGHS through PuLP, or CP-SAT (times in 0.1 microsecond ticks). Its optimum
is the latency ``evaluate`` gives its plan; :func:`brute_force` enumerates pairings and counts
on tiny instances to check it. See formulations/iop.tex.

Example:
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> [(p.a, p.b, p.channels) for p in legal_pairs(g)]       # conv1 -> tanh -> pool -> conv2
    [('_0', '_3', 6)]
    >>> sol = heuristic(g, preset("pi4x4"), model="lenet5", pairs=[("_0", "_3")])
    >>> sol.status, sol.plan.meta["counts"]
    ('heuristic', {'_0/_3': [2, 2, 1, 1]})
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ..cluster import Cluster
from ..errors import PlanError, SolverError
from ..geometry import Box, ranges_from_counts, split_proportional
from ..graph import LayerGraph
from ..maxplus import Lin, SymSchedule, SymStage, builder
from ..plan import Plan, Stage, Task, build_plan, cone, evaluate, memory_terms, stage_compute_s
from ..solvers import HIGHS_TIGHT, Solution
from .baselines import layer_stages, split_channels, split_tasks

GREEDY_BEATS_REL = 1e-9     # the greedy's plan beats the exact model's by more than this: never "optimal"
BETWEEN_KINDS = {"bn", "act", "dropout", "maxpool", "avgpool", "adaptive_avgpool"}
POOL_KINDS = {"maxpool", "avgpool", "adaptive_avgpool"}


class IllegalPairError(PlanError):
    """A pair of ops forced by the user that cannot be interleaved (the message says why)."""


@dataclass(frozen=True)
class Pair:
    """An IOP pair: conv ``a`` (split by output channels) and conv ``b`` (by input channels).
    ``groups``: indices of the layers (see :func:`partopt.methods.baselines.layer_stages`) that
    the A stage runs, A's layer first; ``b_group``: B's layer; ``channels``: A's output
    channels = B's input channels."""

    a: str
    b: str
    groups: tuple[int, ...]
    b_group: int
    channels: int

    @property
    def layers(self) -> set[int]:
        return set(self.groups) | {self.b_group}


def _depthwise(op) -> bool:
    return op.kind == "conv" and op.groups > 1 and op.groups == op.in_chw[0] == op.out_chw[0]


def _pair_at(graph: LayerGraph, groups: list[list[str]], gi: int) -> tuple[Optional[Pair], str]:
    """The pair whose A is the first op of layer ``gi``, or None and the reason there is none."""
    a = graph.op[groups[gi][0]]
    if a.kind != "conv":
        return None, f"{a.name} is a {a.kind}, not a conv"
    if a.groups != 1:
        return None, (f"{a.name} is a grouped conv (groups={a.groups}); IOP's A computes its output channels "
                      f"from the whole input, so it must have groups=1")
    span = [gi]
    k = gi
    while True:
        body = groups[k][1:] if k == gi else groups[k]
        for name in body:
            op = graph.op[name]
            if not (op.kind in BETWEEN_KINDS or (k > gi and name == groups[k][0] and _depthwise(op))):
                return None, (f"{name} ({op.kind}) stands after {a.name} and is not channel-local "
                              f"(batch norm, activation, dropout, pooling, depthwise conv)")
        out = groups[k][-1]
        if k + 1 >= len(groups):
            return None, f"no conv follows {a.name}"
        nxt = groups[k + 1][0]
        readers = sorted(graph.consumers[out])
        if readers != [nxt]:
            return None, f"{out}'s output is read by {', '.join(readers)}, not only by {nxt}"
        op = graph.op[nxt]
        if op.kind == "conv" and op.groups == 1:
            break
        if _depthwise(op) or op.kind in POOL_KINDS:
            k += 1
            span.append(k)
            continue
        return None, (f"{nxt} ({op.kind}{', groups=' + str(op.groups) if op.kind == 'conv' else ''}) follows "
                      f"{a.name} and is neither a groups=1 conv (a B) nor channel-local")
    bg = k + 1
    b = graph.op[groups[bg][0]]
    if len(groups[bg]) < 2:
        return None, (f"{b.name}'s output goes straight to {', '.join(sorted(graph.consumers[b.name])) or 'the output'}"
                      f"; IOP needs a batch norm or activation after B to carry the reduction")
    c = a.out_chw[0]
    if b.in_chw[0] != c:
        return None, f"{a.name} has {c} output channels but {b.name} reads {b.in_chw[0]}"
    return Pair(a.name, b.name, tuple(span), bg, c), ""


def legal_pairs(graph: LayerGraph, n_devices: int = 1) -> list[Pair]:
    """Every IOP pair of ``graph`` with at least ``n_devices`` channels, in op order."""
    groups = layer_stages(graph)
    out = []
    for gi in range(len(groups)):
        p, _ = _pair_at(graph, groups, gi)
        if p is not None and p.channels >= n_devices:
            out.append(p)
    return out


def check_pairs(graph: LayerGraph, names: Iterable[tuple[str, str]], n_devices: int) -> list[Pair]:
    """The pairs named by (A, B) op names; :class:`IllegalPairError` says why one is not legal."""
    groups = layer_stages(graph)
    first = {g[0]: i for i, g in enumerate(groups)}
    out: list[Pair] = []
    for a, b in names:
        for n in (a, b):
            if n not in graph.op:
                raise IllegalPairError(f"pair ({a}, {b}): the model has no op {n!r}")
        if a not in first:
            raise IllegalPairError(f"pair ({a}, {b}): {a} ({graph.op[a].kind}) does not start a layer; "
                                   f"A must be a conv")
        p, why = _pair_at(graph, groups, first[a])
        if p is None:
            raise IllegalPairError(f"pair ({a}, {b}) is not legal: {why}")
        if p.b != b:
            raise IllegalPairError(f"pair ({a}, {b}) is not legal: the conv that {a} can pair with is {p.b}")
        if p.channels < n_devices:
            raise IllegalPairError(f"pair ({a}, {b}): {p.channels} channels cannot give each of the "
                                   f"{n_devices} devices one")
        for q in out:
            if q.layers & p.layers:
                raise IllegalPairError(f"pairs ({q.a}, {q.b}) and ({a}, {b}) share a layer; an op is in one pair at most")
        out.append(p)
    return out


def speed_counts(channels: int, cluster: Cluster) -> list[int]:
    """Channels per device (cluster order) in proportion to speed, at least one each."""
    n = len(cluster.devices)
    if channels < n:
        raise PlanError(f"{channels} channels cannot give each of {n} devices one")
    counts = split_proportional(channels - n, [d.flops_per_s for d in cluster.devices])
    return [c + 1 for c in counts]


# ---------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------
OUTSIDE = {"rows": split_tasks, "channels": split_channels}


def stages_of(graph: LayerGraph, cluster: Cluster, chosen: dict[Pair, Sequence[int]], outside: str = "rows"
              ) -> tuple[list[Stage], list[tuple[str, object]]]:
    """The stages of the plan with the pairs ``chosen`` (pair -> channels per device, cluster
    order) and a label per stage: ("S", layer) or ("A" | "B" | "R", pair). ``outside``: how the
    layers outside the pairs (and each pair's R stage) are split, ``"rows"`` as
    :func:`~partopt.methods.baselines.coedge` or ``"channels"`` as
    :func:`~partopt.methods.baselines.coedge_concat`."""
    if outside not in OUTSIDE:
        raise PlanError(f"outside must be one of {', '.join(OUTSIDE)}, not {outside!r}")
    split = OUTSIDE[outside]
    groups = layer_stages(graph)
    shares = {d.name: d.flops_per_s for d in cluster.devices}
    names = cluster.names
    start = {p.groups[0]: p for p in chosen}
    stages: list[Stage] = []
    labels: list[tuple[str, object]] = []
    k = 0
    while k < len(groups):
        p = start.get(k)
        if p is None:
            stages.append(Stage(groups[k], split(graph, groups[k][-1], shares)))
            labels.append(("S", k))
            k += 1
            continue
        counts = list(chosen[p])
        if len(counts) != len(names) or sum(counts) != p.channels or min(counts) < 1:
            raise PlanError(f"pair ({p.a}, {p.b}): counts {counts} must give each of the {len(names)} devices "
                            f"at least one of its {p.channels} channels")
        rngs = ranges_from_counts(counts)
        a_ops = [n for gi in p.groups for n in groups[gi]]
        _, h, w = graph.tensor_chw(a_ops[-1])
        stages.append(Stage(a_ops, [Task(d, Box(c0, c1, 0, h, 0, w)) for d, (c0, c1) in zip(names, rngs)]))
        labels.append(("A", p))
        full = Box.full(graph.tensor_chw(p.b))
        stages.append(Stage([p.b], [Task(d, full, (c0, c1)) for d, (c0, c1) in zip(names, rngs)]))
        labels.append(("B", p))
        rest = groups[p.b_group][1:]
        stages.append(Stage(rest, split(graph, rest[-1], shares)))
        labels.append(("R", p))
        k = p.b_group + 1
    return stages, labels


def plan_of(graph: LayerGraph, cluster: Cluster, chosen: dict[Pair, Sequence[int]], *, model: str = "model",
            source: Optional[str] = None, check: bool = True, outside: str = "rows") -> Plan:
    """The routed, validated IOP plan for the pairs ``chosen`` with their channel counts
    (``check=False``: not validated, see :func:`partopt.plan.build_plan`; ``outside``: see
    :func:`stages_of`)."""
    stages, _ = stages_of(graph, cluster, chosen, outside)
    meta = {"pairs": [[p.a, p.b] for p in chosen], "counts": {f"{p.a}/{p.b}": list(c) for p, c in chosen.items()},
            "outside": outside}
    return build_plan(graph, cluster, stages, model=model, method="iop", source=source, meta=meta, check=check)


def _conflict(p: Pair, chosen: Iterable[Pair]) -> bool:
    return any(p.layers & q.layers for q in chosen)


def _solution(plan: Plan, graph: LayerGraph, cluster: Cluster, t0: float, **kw) -> Solution:
    rep = evaluate(plan, graph, cluster)
    if rep.memory_ok:
        return Solution(plan, kw.pop("status", "heuristic"), "iop", objective=rep.latency_s,
                        solve_s=time.perf_counter() - t0, report=rep, **kw)
    kw.pop("status", None)
    return Solution(plan, "infeasible", "iop", solve_s=time.perf_counter() - t0, report=rep,
                    reason=rep.infeasible_reason(), **kw)


# ---------------------------------------------------------------------------------------
# Greedy
# ---------------------------------------------------------------------------------------
def heuristic(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
              pairs: Optional[Iterable[tuple[str, str]]] = None, outside: str = "rows") -> Solution:
    """The greedy pairing (module doc); ``pairs`` forces (A, B) pairs into every plan it tries;
    ``outside="channels"`` splits the layers outside the pairs by output channels, as
    :func:`~partopt.methods.baselines.coedge_concat` does (the IOP paper's own baseline), so
    that against it the pairing alone makes the difference."""
    t0 = time.perf_counter()
    n = len(cluster.devices)
    forced = check_pairs(graph, pairs or [], n)
    cands = [p for p in legal_pairs(graph, n) if not _conflict(p, forced)]
    chosen = {p: speed_counts(p.channels, cluster) for p in forced}

    def key(sel):       # candidates unvalidated; the plan returned is validated by _solution
        rep = evaluate(plan_of(graph, cluster, sel, model=model, source=source, check=False, outside=outside),
                       graph, cluster, check=False)
        return (sum(rep.over_memory.values()), rep.latency_s)

    cur = key(chosen)
    while True:
        best, best_key = None, cur
        for p in cands:
            if p in chosen or _conflict(p, chosen):
                continue
            k = key({**chosen, p: speed_counts(p.channels, cluster)})
            if k < best_key:
                best, best_key = p, k
        if best is None:
            break
        chosen[best] = speed_counts(best.channels, cluster)
        cur = best_key
    chosen = dict(sorted(chosen.items(), key=lambda kv: kv[0].groups[0]))
    return _solution(plan_of(graph, cluster, chosen, model=model, source=source, outside=outside), graph, cluster, t0)


# ---------------------------------------------------------------------------------------
# Brute force (tiny instances)
# ---------------------------------------------------------------------------------------
def _compositions(total: int, parts: int):
    """Every way to write ``total`` as ``parts`` positive integers, in order."""
    for cuts in itertools.combinations(range(1, total), parts - 1):
        yield [b - a for a, b in zip((0,) + cuts, cuts + (total,))]


def brute_force(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
                limit: int = 20000) -> Solution:
    """The best plan over every compatible set of legal pairs and every channel count per
    device (each >= 1), by evaluating each; refuses instances with more than ``limit`` plans."""
    t0 = time.perf_counter()
    n = len(cluster.devices)
    cands = legal_pairs(graph, n)
    sets = [s for r in range(len(cands) + 1) for s in itertools.combinations(cands, r)
            if all(not (p.layers & q.layers) for p, q in itertools.combinations(s, 2))]
    total = 0
    for s in sets:
        m = 1
        for p in s:
            m *= sum(1 for _ in _compositions(p.channels, n))
        total += m
    if total > limit:
        raise SolverError(f"brute force would evaluate {total} plans (limit {limit})")
    best, best_key = None, None
    for s in sets:
        for counts in itertools.product(*[list(_compositions(p.channels, n)) for p in s]):
            plan = plan_of(graph, cluster, dict(zip(s, counts)), model=model, source=source)
            rep = evaluate(plan, graph, cluster, check=False)     # validated by plan_of
            k = (not rep.memory_ok, rep.latency_s)
            if best_key is None or k < best_key:
                best, best_key = plan, k
    best.meta["plans_evaluated"] = total
    return _solution(best, graph, cluster, t0, status="optimal", mode="exact", solver="brute-force")


# ---------------------------------------------------------------------------------------
# Exact model
# ---------------------------------------------------------------------------------------
@dataclass
class StageData:
    """A stage as the exact model sees it: constant transfers, and per device its compute
    seconds (:func:`partopt.plan.stage_compute_s`) and activation bytes as affine functions of
    its channel count in the stage's pair."""

    label: tuple[str, object]
    transfers: list
    output: str
    needs: dict[str, list[str]]
    seconds: dict[str, tuple[float, float]]   # device -> (constant s, s per channel)
    act: dict[str, tuple[float, float]]       # device -> (constant bytes, bytes per channel)


@dataclass
class ModelData:
    """Everything the exact model states, read off concrete plans built by :func:`plan_of`."""

    pairs: list[Pair]
    layers: int
    single: list[StageData]                          # layer k alone (CoEdge-style)
    paired: dict[Pair, list[StageData]]              # the pair's A, B and R stages
    w_single: list[dict[str, int]]                   # layer k: device -> weight bytes
    w_paired: dict[Pair, dict[str, tuple[float, float]]]   # device -> (bytes, bytes per channel)
    final: list
    final_act: dict[str, int]
    output: str
    source: str
    sink: str


def _concrete(graph: LayerGraph, cluster: Cluster, plan: Plan):
    """Per stage: (transfers, output, needs, compute seconds per device, activation per device);
    and weight bytes per (device, op)."""
    mt = memory_terms(plan, graph)
    out = []
    for i, s in enumerate(plan.stages):
        needs: dict[str, set] = {}
        for t in s.tasks:
            c = cone(graph, s.ops, t)
            needs.setdefault(t.device, set()).update(x for x, b in c.needs.items() if not b.empty)
        out.append((s.transfers, s.output, {d: sorted(v) for d, v in needs.items()},
                    stage_compute_s(graph, cluster, s), mt.stage_act[i]))
    return out, mt.weights, mt.final_act


def _classes(pairs: list[Pair]) -> list[list[Pair]]:
    """The pairs split into classes of mutually compatible pairs (first fit)."""
    classes: list[list[Pair]] = []
    for p in pairs:
        for c in classes:
            if not _conflict(p, c):
                c.append(p)
                break
        else:
            classes.append([p])
    return classes


def model_data(graph: LayerGraph, cluster: Cluster, pairs: list[Pair], source: Optional[str] = None) -> ModelData:
    """Read the exact model's constants off concrete plans: the plan with no pair gives every
    layer's single stage; for each class of compatible pairs, the plan with speed counts and
    one plan per device with that device's count moved by one give the affine terms."""
    names = cluster.names
    groups = layer_stages(graph)
    base = plan_of(graph, cluster, {}, source=source)
    stages0, w0, final_act = _concrete(graph, cluster, base)
    single = [StageData(("S", k), *stages0[k][:3], {d: (f, 0.0) for d, f in stages0[k][3].items()},
                        {d: (a, 0.0) for d, a in stages0[k][4].items()}) for k in range(len(groups))]
    w_single = [{d: sum(w0.get((d, op), 0) for op in groups[k]) for d in names} for k in range(len(groups))]
    paired: dict[Pair, list[StageData]] = {}
    w_paired: dict[Pair, dict[str, tuple[float, float]]] = {}
    for cls in _classes(pairs):
        v = {p: speed_counts(p.channels, cluster) for p in cls}
        ref = _read(graph, cluster, v, groups, source)
        moved: dict[str, tuple] = {}
        for di, d in enumerate(names):
            w = {}
            for p, c in v.items():
                c = list(c)
                if c[di] >= 2:
                    e = max((j for j in range(len(c)) if j != di), key=lambda j: (-c[j], j))
                    c[di] -= 1
                    c[e] += 1
                else:
                    others = [j for j in range(len(c)) if j != di and c[j] >= 2]
                    if others:
                        c[others[0]] -= 1
                        c[di] += 1
                w[p] = c
            moved[d] = (w, _read(graph, cluster, w, groups, source))
        for p in cls:
            rs, rw = ref[p]
            sds = []
            for j, (tr, out, needs, fl, act) in enumerate(rs):
                fa, aa = {}, {}
                for di, d in enumerate(names):
                    w, got = moved[d]
                    dn = w[p][di] - v[p][di]
                    f1, a1 = got[p][0][j][3].get(d, 0), got[p][0][j][4][d]
                    sf = (f1 - fl.get(d, 0)) / dn if dn else 0.0
                    sa = (a1 - act[d]) / dn if dn else 0.0
                    fa[d] = (fl.get(d, 0) - sf * v[p][di], sf)
                    aa[d] = (act[d] - sa * v[p][di], sa)
                sds.append(StageData(("ABR"[j], p), tr, out, needs, fa, aa))
            paired[p] = sds
            wp = {}
            for di, d in enumerate(names):
                w, got = moved[d]
                dn = w[p][di] - v[p][di]
                s = (got[p][1][d] - rw[d]) / dn if dn else 0.0
                wp[d] = (rw[d] - s * v[p][di], s)
            w_paired[p] = wp
    return ModelData(pairs, len(groups), single, paired, w_single, w_paired, base.final, final_act, base.output,
                     base.source, base.sink)


def _read(graph, cluster, chosen, groups, source):
    """pair -> (its three stages' concrete data, device -> weight bytes of its ops)."""
    plan = plan_of(graph, cluster, chosen, source=source)
    _, labels = stages_of(graph, cluster, chosen)
    stages, w, _ = _concrete(graph, cluster, plan)
    out = {}
    for p in chosen:
        idx = [i for i, (kind, q) in enumerate(labels) if q == p and kind in "ABR"]
        ops = [n for gi in sorted(p.layers) for n in groups[gi]]
        out[p] = ([stages[i] for i in idx], {d: sum(w.get((d, op), 0) for op in ops) for d in cluster.names})
    return out


def _messages_s(cluster: Cluster, transfers, on=lambda t: True) -> float:
    """Seconds the transfers of one phase (those ``on`` selects) hold their links or the shared
    medium, as evaluate prices them: the transfers of one sender to one receiver travel as one
    message (one latency, their bytes summed, :meth:`partopt.plan.Schedule.send`)."""
    pairs = {(t.src, t.dst) for t in transfers if on(t)}
    return len(pairs) * cluster.latency_s + sum(t.nbytes / cluster.bw(t.src, t.dst) for t in transfers if on(t))


def _load_cuts(b, data: "ModelData", cluster: Cluster, x: dict, s: list, n: dict, latency: str, affine) -> None:
    """Per-resource load cuts (valid for every schedule, formulations/iop.tex): the latency is at
    least each device's compute seconds summed over the stages that run (a device runs one task
    at a time), and at least the seconds of every message on the shared medium (or on each link
    of a mesh) summed over the stages that run. The pairing binaries choose which stages run,
    so at a fractional point these rows still count the cheaper of each layer's two ways."""
    for di, d in enumerate(cluster.names):
        load = Lin()
        for k, sd in enumerate(data.single):
            f0, _ = sd.seconds.get(d, (0.0, 0.0))
            load = load + Lin.var(s[k], f0)
        for i, p in enumerate(data.pairs):
            for j, sd in enumerate(data.paired[p]):
                f0, f1 = sd.seconds.get(d, (0.0, 0.0))
                if f0 or f1:
                    y = b.time(f"load_{i}_{j}_{di}")
                    b.at_least(y, affine(p, d, f0, f1), when=x[p])
                    load = load + Lin.var(y)
        b.at_least(latency, load)
    links = [None] if cluster.link == "shared" else [(a, c) for a in cluster.names for c in cluster.names if a != c]
    for link in links:
        def on(t) -> bool:
            return link is None or (t.src, t.dst) == link
        load = Lin.of(_messages_s(cluster, data.final, on))
        for k, sd in enumerate(data.single):
            load = load + Lin.var(s[k], _messages_s(cluster, sd.transfers, on))
        for p in data.pairs:
            load = load + Lin.var(x[p], sum(_messages_s(cluster, sd.transfers, on) for sd in data.paired[p]))
        b.at_least(latency, load)


def build_model(data: ModelData, cluster: Cluster, solver: str = "highs", forced: Sequence[Pair] = (),
                cuts: bool = False):
    """The exact model (module doc) on ``solver``'s back-end; returns (builder, variable names).
    ``cuts``: add the per-resource load cuts (:func:`_load_cuts`; when: see :func:`exact`)."""
    names = cluster.names

    def dur_max(sd: StageData, counts_hi: int) -> float:
        comm = sum(cluster.latency_s + t.nbytes / cluster.bw(t.src, t.dst) for t in sd.transfers)
        return comm + max([max(f0 + f1 * counts_hi, f0) for d, (f0, f1) in sd.seconds.items()] + [0.0])

    horizon = sum(dur_max(sd, 0) for sd in data.single)
    horizon += sum(dur_max(sd, p.channels) for p, sds in data.paired.items() for sd in sds)
    horizon += sum(cluster.latency_s + t.nbytes / cluster.bw(t.src, t.dst) for t in data.final)
    horizon = 1.01 * horizon + 1.0
    b = builder(solver, horizon)
    x = {p: b.boolean(f"x_{i}") for i, p in enumerate(data.pairs)}
    s = [b.boolean(f"s_{k}") for k in range(data.layers)]
    for k in range(data.layers):
        e = Lin.var(s[k])
        for p in data.pairs:
            if k in p.layers:
                e = e + Lin.var(x[p])
        b.equal(e, 1)
    for p in forced:
        b.equal(Lin.var(x[p]), 1)
    n = {}
    for i, p in enumerate(data.pairs):
        for di, d in enumerate(names):
            n[(p, d)] = b.integer(f"n_{i}_{di}", 1, p.channels - len(names) + 1)
        e = Lin()
        for d in names:
            e = e + Lin.var(n[(p, d)])
        b.equal(e, p.channels)

    def affine(p: Optional[Pair], d: str, c0: float, c1: float) -> Lin:
        return Lin.of(c0) + (Lin.var(n[(p, d)], c1) if p is not None and c1 else Lin())

    sch = SymSchedule(b, names, link=cluster.link, latency_s=cluster.latency_s, bw=cluster.bw)
    ends = {}
    for p in data.pairs:
        ends.setdefault(p.b_group, []).append(p)

    def sym(sd: StageData, p: Optional[Pair]) -> SymStage:
        return SymStage(str(sd.label[0]), sd.transfers, sd.output, sd.needs,
                        {d: affine(p, d, *fc) for d, fc in sd.seconds.items()})

    for k in range(data.layers):
        sch.stage(sym(data.single[k], None), s[k])
        for p in ends.get(k, []):
            for sd in data.paired[p]:
                sch.stage(sym(sd, p), x[p])
    latency = sch.finish(data.sink, data.output, data.final)
    b.minimize(latency)
    if cuts:
        _load_cuts(b, data, cluster, x, s, n, latency, affine)

    # memory: weights held + the activation bytes of every stage that runs <= capacity
    for di, d in enumerate(names):
        cap = cluster.device(d).memory_bytes
        wsum = Lin()
        big = 0.0
        for k in range(data.layers):
            wsum = wsum + Lin.var(s[k], data.w_single[k][d])
            big += data.w_single[k][d]
        for i, p in enumerate(data.pairs):
            c0, c1 = data.w_paired[p][d]
            hi = c0 + c1 * p.channels
            wv = b.quantity(f"w_{i}_{di}", hi)
            b.at_most(affine(p, d, c0, c1) + Lin.var(wv, -1.0), 0, when=x[p], big_m=hi)
            wsum = wsum + Lin.var(wv)
            big += hi
        acts = [(sd, None, s[k]) for k, sd in enumerate(data.single)]
        acts += [(sd, p, x[p]) for p, sds in data.paired.items() for sd in sds]
        for sd, p, lit in acts:
            a0, a1 = sd.act[d]
            e = wsum + affine(p, d, a0, a1)
            b.at_most(e, cap, when=lit, big_m=big + a0 + max(a1, 0) * (p.channels if p else 0))
        if d in data.final_act:
            b.at_most(wsum + Lin.of(data.final_act[d]), cap)
    return b, {"x": x, "s": s, "n": n, "latency": latency}


def model(graph: LayerGraph, cluster: Cluster, *, solver: str = "highs", source: Optional[str] = None,
          cuts: Optional[bool] = None):
    """The exact model itself (a PuLP ``LpProblem`` or a CP-SAT ``CpModel``), for export
    (:func:`partopt.solvers.export_model`): the one :func:`exact` solves on ``solver``, its load
    cuts included where it adds them."""
    cands = legal_pairs(graph, len(cluster.devices))
    cuts = (solver == "highs") if cuts is None else bool(cuts)
    b, _ = build_model(model_data(graph, cluster, cands, source), cluster, solver, cuts=cuts)
    return b.prob if hasattr(b, "prob") else b.model


def exact(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
          solver: str = "highs", time_limit: Optional[float] = 60.0, threads: Optional[int] = None,
          pairs: Optional[Iterable[tuple[str, str]]] = None, cuts: Optional[bool] = None) -> Solution:
    """The optimal pairing and channel counts (module doc) on ``solver`` (cbc | highs | cpsat).

    ``cuts``: add the per-resource load cuts (:func:`_load_cuts`). By default (None) on HiGHS and
    off on CBC and CP-SAT:
    - On HiGHS, with the feasibility tolerances of :data:`partopt.solvers.HIGHS_TIGHT` (with the
      defaults HiGHS once proved a wrong optimum with them) and the MILP time unit of
      :func:`partopt.solvers.milp_units_per_s`, the gap sweep proves all 210 instances, the same
      optima as without the cuts, in a third of the time
      (``benchmarks/results/iop_gap.csv`` against ``iop_gap_nocuts.csv``).
    - On CP-SAT they slowed a 3-device instance from 0.2 s to past 60 s.
    - CBC is tested with them against brute force only.

    Whatever the back-end reports, a plan slower under ``evaluate`` than the greedy's is never
    returned as ``optimal``, and where the greedy's plan fits memory the answer is never
    ``infeasible``.

    Status ``optimal`` (proven), ``feasible`` (time limit: best plan, ``bound`` and ``gap`` as
    proven), or ``infeasible`` (no plan fits memory; the reason names the greedy plan's
    shortfall). ``objective`` is ``evaluate``'s latency of the returned plan (seconds).
    """
    t0 = time.perf_counter()
    cuts = (solver == "highs") if cuts is None else bool(cuts)
    n_dev = len(cluster.devices)
    forced = check_pairs(graph, pairs or [], n_dev)
    cands = legal_pairs(graph, n_dev)
    data = model_data(graph, cluster, cands, source)
    b, v = build_model(data, cluster, solver, [p for p in cands if (p.a, p.b) in {(f.a, f.b) for f in forced}],
                       bool(cuts))
    t_build = time.perf_counter() - t0
    # the greedy plan: a start for CP-SAT, and the answer if a time limit leaves a worse incumbent
    g = heuristic(graph, cluster, model=model, source=source, pairs=pairs)
    g_counts = {tuple(k.split("/")): c for k, c in g.plan.meta["counts"].items()}
    for p in cands:
        c = g_counts.get((p.a, p.b))
        b.hint(v["x"][p], int(c is not None))
        for di, d in enumerate(cluster.names):
            b.hint(v["n"][(p, d)], c[di] if c else speed_counts(p.channels, cluster)[di])
    for k, sk in enumerate(v["s"]):
        b.hint(sk, int(not any(k in p.layers for p in cands if (p.a, p.b) in g_counts)))
    if cuts and solver == "highs":     # the defaults gave a wrong "optimal" with the cuts (HIGHS_TIGHT)
        r = b.solve(solver, time_limit=time_limit, threads=threads, highs_options=HIGHS_TIGHT)
    else:
        r = b.solve(solver, time_limit=time_limit, threads=threads)
    if r.status in ("infeasible", "no_solution"):
        if r.status == "infeasible" and g.feasible:
            # the greedy's plan fits memory, so the solver's "infeasible" is wrong (numerics):
            # the greedy's plan is returned, not proven
            why = "the solver reported infeasible, but the greedy's plan fits memory; not proven"
        elif r.status == "infeasible":
            why = "no pairing and channel split fits every device's memory; the greedy plan: " + g.reason
        else:
            why = "the solver found no plan within the time limit"
        status = "feasible" if g.feasible else "infeasible"
        sol = Solution(g.plan, status, "iop", mode="exact", objective=g.objective if g.feasible else None,
                       bound=r.bound, solve_s=time.perf_counter() - t0, solver=solver, reason=why, report=g.report)
        return sol
    chosen = {}
    for p in cands:
        if b.value(v["x"][p]) > 0.5:
            chosen[p] = [int(round(b.value(v["n"][(p, d)]))) for d in cluster.names]
    plan = plan_of(graph, cluster, chosen, model=model, source=source)
    plan.meta.update({"solver": solver, "model_latency_s": r.objective, "build_s": t_build})
    status = "optimal" if r.status == "optimal" else "feasible"
    sol = _solution(plan, graph, cluster, t0, status=status, mode="exact", solver=solver, bound=r.bound, gap=r.gap)
    if sol.status == "infeasible":
        sol.reason = "internal: the exact model's plan breaks memory in evaluate: " + sol.reason
    elif g.feasible and g.objective < sol.objective * (1 - GREEDY_BEATS_REL):
        # the solver's plan is slower under evaluate than the greedy's: at a time limit that is
        # its incumbent; when it says "optimal", the solver's proof is wrong (numerics), so the
        # greedy's plan is returned and the status is never "optimal"
        why = ("" if status == "feasible" else
               f"the solver reported optimal at {sol.objective:.6g} s but the greedy's plan is faster; not proven")
        g.plan.meta.update({"solver": solver, "model_latency_s": r.objective, "build_s": t_build,
                            "from": "greedy (faster than the solver's plan)"})
        sol = _solution(g.plan, graph, cluster, t0, status="feasible", mode="exact", solver=solver,
                        bound=r.bound if status == "feasible" else None, reason=why)
    if sol.status == "feasible" and sol.bound is not None and sol.objective:
        sol.gap = max(0.0, (sol.objective - sol.bound) / sol.objective)
    return sol
