"""best: the fastest plan partopt finds over every method and over device subsets.

Every other heuristic uses every device; on small or heterogeneous clusters leaving devices
idle is often faster (a whole model on one fast device beats most splits over a slow shared
radio). ``best`` prices every candidate with :func:`partopt.plan.evaluate` and keeps the
fastest that fits memory:

1. **Every method's heuristic** on the whole cluster (``single``, ``layerwise``, ``coedge``,
   ``fused``, ``dpfp``, ``iop``, ``nptp``, ``ftp``; and the DN2PCIoT family where the model
   is a chain it accepts of at most 10 MFLOP). So ``best`` is never slower than any of them.
   A method that does not apply to the model (:class:`~partopt.errors.NotApplicableError`)
   is left out; any other error is raised.
2. **The same splits on device subsets**: ``coedge``, ``nptp``, ``ftp``, ``iop`` and ``dpfp``
   on the source plus its k-1 fastest peers, k = 2..n-1 (the source holds the input, so it
   stays in the sub-cluster), priced on the whole cluster. The heuristic grows one method's
   subset until its latency has risen for :data:`SUBSET_PATIENCE` sizes in a row (on a slow
   shared radio more devices then only add messages); ``exact`` tries every k.
3. **Segment plans** (:class:`Segments`): the op order is cut at *cut points* (where exactly
   one tensor crosses, :func:`partopt.methods.dpfp.cut_points`) into units, and every run of
   consecutive units (a *segment*) picks one *variant*:

   - ``one``: the whole segment on one device;
   - ``fused``: one receptive-field block, output rows by speed over a device subset
     (RFS/DPFP; spatial segments only);
   - ``layers``: layer by layer, rows (or, on 1-row maps and FC layers, channels) by speed over
     a device subset, halos exchanged between the subset's devices (CoEdge);
   - ``rows`` (``--exact`` only): one fused block with DPFP's optimal integer rows (a device
     may get none; in any order of the devices), so DPFP's exact family is inside.

   Subsets: the source with its k-1 fastest peers, or the k fastest peers without the source.
   Every segment starts from its input whole on the *master* (the source) and ends with its
   output gathered there, so a plan's latency is the sum of its segments' times
   (:attr:`Variant.seconds`, priced by ``evaluate``'s own :class:`~partopt.plan.Schedule`) and
   its memory is each device's weights summed over its segments plus the largest activation
   set of one segment (:func:`partopt.plan.memory_terms`). :func:`dp` finds the fastest
   segment plan ignoring memory; :func:`exact` solves the same choice with memory as a MILP
   (CBC, HiGHS) or CP-SAT model (``formulations/best.tex``).

Candidates are tried in the order above, the segment plans before the subsets; one is skipped
unbuilt when a fitting plan already found is no slower than :func:`partopt.bounds.lower_bound`
over the candidate's devices (the whole cluster, or the subset), since no plan on those devices
can beat it (``plan.meta["skipped_by_bound"]`` counts them). LeNet-5 on a radio stops after
``single``, which meets the bound. Likewise the memory-free segment DP leaves out a ``layers``
variant that cannot beat the fastest variant of the same units priced so far
(:func:`_layers_bound`: its first and last messages and each device's compute;
``Segments.pruned``); the exact model keeps every variant.

The union ``best --exact`` is optimal over: the segment plans of item 3, and every plan of
items 1 and 2. It does not contain: IOP pairs or NPTP/FTP tiles *inside* a segment plan
(they enter only as whole plans of items 1-2), tilings other than those heuristics' own,
layer-by-layer row splits other than by speed, on a shared medium integer rows in another
order than the source's first, other device subsets than the prefixes above, holders other than the source between segments, nor
DN2PCIoT neuron groups beyond its heuristics' plans.

Example:
    >>> from partopt.cluster import preset
    >>> from partopt.graph import LayerGraph
    >>> from partopt.zoo import example_input, load_model
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> s = heuristic(g, preset("pi4x4"), model="lenet5")
    >>> s.status, s.plan.meta["origin"]     # LeNet-5 is too small to split over a 2 ms radio
    ('heuristic', 'single')
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional

from ..bounds import lower_bound, necessary_flops_by_kind, necessary_weight_bytes
from ..cluster import Cluster
from ..cost import transfer_time
from ..errors import NotApplicableError, PartoptError, SolverError
from ..geometry import Box
from ..graph import LayerGraph
from ..plan import (FLOAT_BYTES, Plan, Schedule, Stage, Task, build_plan, cone, evaluate, gathered, route_stage,
                    stage_compute_s, validate)
from ..solvers import Solution
from . import baselines, dn2pciot, dpfp, iop, nptp, segment_path
from .baselines import layer_stages, split_tasks
from .rfs_rows import all_block_tables, row_segments, table_span, table_spans

WHOLE_CLUSTER: dict[str, Callable] = {
    "single": baselines.single, "layerwise": baselines.layerwise, "coedge": baselines.coedge,
    "fused": dpfp.fused, "dpfp": dpfp.heuristic, "iop": iop.heuristic, "nptp": nptp.heuristic, "ftp": nptp.ftp,
}
SMALL_CHAIN: dict[str, Callable] = {
    "dn2pciot": dn2pciot.heuristic, "dn2pciot-metis": dn2pciot.metis, "dn2pciot-per-layer": dn2pciot.per_layer,
    "dn2pciot-greedy": dn2pciot.greedy,
}
SMALL_CHAIN_MAX_FLOPS = 1e7     # the DN2PCIoT family is for LeNet-sized chains (0.8 MFLOP)
ON_SUBSETS: dict[str, Callable] = {
    "coedge": baselines.coedge, "nptp": nptp.heuristic, "ftp": nptp.ftp, "iop": iop.heuristic, "dpfp": dpfp.heuristic,
}


def peers_by_speed(cluster: Cluster, source: str) -> list[str]:
    """Every device but the source, fastest first (cluster order among equals)."""
    rank = {n: i for i, n in enumerate(cluster.names)}
    return sorted((d.name for d in cluster.devices if d.name != source),
                  key=lambda n: (-cluster.device(n).flops_per_s, rank[n]))


def device_subsets(cluster: Cluster, master: str) -> list[tuple[str, ...]]:
    """The master with its k-1 fastest peers, and the k fastest peers without it (no repeats)."""
    peers = peers_by_speed(cluster, master)
    out = [tuple([master] + peers[:k]) for k in range(len(peers) + 1)]
    out += [tuple(peers[:k]) for k in range(1, len(peers) + 1)]
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------
# Segment plans: the problem statement
# ---------------------------------------------------------------------------------------
@dataclass
class Variant:
    """Units ``i..j-1`` run as ``style`` on ``devices``: its stages (the last gathers at the
    master), its time from input-at-master to output-at-master (seconds), the weight bytes
    each device holds for it, and each device's largest activation bytes while it runs."""

    i: int
    j: int
    style: str                      # one | fused | layers
    devices: tuple[str, ...]
    stages: list[Stage]
    seconds: float
    weights: dict[str, int]
    act: dict[str, int]

    @property
    def label(self) -> str:
        return f"{self.style} {self.i}..{self.j} on {','.join(self.devices)}"


@dataclass
class Segments:
    """Units between cut points, the tensor entering each, and every priced variant."""

    graph: LayerGraph
    cluster: Cluster
    master: str
    units: list[list[str]]
    inputs: list[str]
    variants: list[Variant]
    rows_proven: bool = True        # every ``rows`` variant's integer rows proven optimal
    pruned: int = 0                 # memory-free only: ``layers`` variants left out, never the fastest of their units
    lower: Optional[dict[int, float]] = None    # variant index -> proven lower bound (s), where not proven

    @property
    def n(self) -> int:
        return len(self.units)


def _unrouted(stages) -> list[Stage]:
    """Copies of ``stages`` without transfers, for :func:`partopt.plan.build_plan` to route anew."""
    return [Stage(list(s.ops), list(s.tasks), gather_to=s.gather_to) for s in stages]


def segments(graph: LayerGraph, cluster: Cluster, source: Optional[str] = None,
             max_units: Optional[int] = None, rows: str = "speed", row_solver: str = "dp",
             block_time_limit: Optional[float] = 30.0, memory: bool = True) -> Segments:
    """Every variant of every segment (module doc, item 3), priced. ``max_units``: segments of
    at most that many units (default: all when the model has at most 24 units, else 8).

    ``rows="optimal"`` adds, for every spatial segment, the ``rows`` variant: one fused block
    with DPFP's optimal integer rows (:func:`partopt.methods.dpfp.problem` with
    ``rows="optimal"``: the row DP, or a block model per segment on ``row_solver`` with
    ``block_time_limit`` seconds), so DPFP's exact family is inside the union. ``memory=False`` leaves every variant's bytes empty (for the memory-free DP) and
    prices one-stage row splits from the blocks' row tables."""
    master = source or cluster.devices[0].name
    cluster.device(master)
    units, inputs = dpfp.all_units(graph)
    n_spatial = len(dpfp.spatial_units(graph)[0])     # DPFP's spatial part: fused blocks only there
    longest = max_units or (len(units) if len(units) <= 24 else 8)
    layers = layer_stages(graph)
    speed = {d.name: d.flops_per_s for d in cluster.devices}
    subsets = device_subsets(cluster, master)
    # spatial blocks' row tables: without the memory bytes a one-stage row split is priced from
    # them (equal to stage_span, see rfs_rows.all_block_tables), not by routing it
    tables = {} if memory else all_block_tables(graph, units[:n_spatial], inputs[:n_spatial], longest)
    splits: dict = {}           # (op, subset) -> its tasks by speed over the subset
    cheapest: dict = defaultdict(lambda: float("inf"))     # (i, j) -> the fastest variant priced so far (s)
    later: list = []            # memory-free: the layers variants, priced after all others (see below)
    out: list[Variant] = []

    def split_over(op: str, devs: tuple[str, ...]) -> list[Task]:
        if (op, devs) not in splits:
            splits[(op, devs)] = split_tasks(graph, op, {d: (speed[d] if d in devs else 0.0) for d in speed})
        return splits[(op, devs)]

    # memory-free: every one-stage row split (one device, or fused rows by speed) of the blocks
    # ending at unit j over one subset has the same rows, so they are priced together
    together: dict = {}         # (i, j, subset) -> seconds
    ends = range(1, n_spatial + 1) if not memory else range(0)
    for j in ends:
        last = units[j - 1][-1]
        for devs in subsets:
            tasks = [Task(devs[0], Box.full(graph.tensor_chw(last)))] if len(devs) == 1 else split_over(last, devs)
            probe = Stage([last], tasks)
            blocks = [(i, tables[(i, j)]) for i in range(j) if (i, j) in tables
                      and row_segments(graph, tables[(i, j)], probe) is not None]
            if blocks:
                spans = table_spans([t for _, t in blocks], cluster, master, row_segments(graph, blocks[0][1], probe))
                together.update({(i, j, devs): v for (i, _), v in zip(blocks, spans)})
    for i in range(len(units)):
        for j in range(i + 1, min(len(units), i + longest) + 1):
            ops = [n for u in units[i:j] for n in u]
            inside = set(ops)
            full = Box.full(graph.tensor_chw(ops[-1]))
            spatial = j <= n_spatial
            groups = [gr for gr in ([n for n in layer if n in inside] for layer in layers) if gr]
            for devs in subsets:
                if len(devs) == 1:
                    options = [("one", [Stage(ops, [Task(devs[0], full)], gather_to=master)])]
                else:
                    options = []
                    if spatial:
                        options.append(("fused", [Stage(ops, split_over(ops[-1], devs), gather_to=master)]))
                    st = [Stage(gr, split_over(gr[-1], devs)) for gr in groups]
                    st[-1].gather_to = master
                    options.append(("layers", st))
                for style, stages in options:
                    if style == "layers" and not memory:
                        later.append((i, devs, j, stages))
                        continue
                    row_segs = row_segments(graph, tables.get((i, j)), stages[0]) if len(stages) == 1 else None
                    if row_segs is not None:
                        seconds = together.get((i, j, devs))
                        if seconds is None:
                            seconds = table_span(tables[(i, j)], cluster, master, row_segs)
                        weights, act = {}, {}
                    else:
                        seconds, weights, act = segment_path.price(graph, cluster, master, inputs[i], stages, memory)
                    out.append(Variant(i, j, style, tuple(devs), stages, seconds, weights, act))
                    cheapest[(i, j)] = min(cheapest[(i, j)], seconds)
    # Memory-free, the DP needs only the fastest variant of each i..j-1, so a layers variant that
    # cannot beat the fastest priced so far is left out (every one- and fused-variant is priced by
    # now, so the bound prunes against them all). The rest are priced start by start, one
    # incremental run per (start, subset) for growing j.
    pruned = 0
    run, bound, key = None, None, None
    rank = {devs: k for k, devs in enumerate(subsets)}
    fastest_in = _fastest_in(cluster)
    for i, devs, j, stages in sorted(later, key=lambda v: (v[0], rank[v[1]], v[2])):
        if key != (i, devs):
            key, run, bound = (i, devs), None, None
        if _messages_bound(cluster, master, stages) >= cheapest[(i, j)]:
            pruned += 1
            continue
        if bound is None:
            bound = _LayersBound(graph, cluster, master, inputs[i], fastest_in)
        if bound.seconds(stages) >= cheapest[(i, j)]:
            pruned += 1
            continue
        if run is None:
            run = _LayerRun(graph, cluster, master, units, inputs[i], i, layers,
                            {d: (speed[d] if d in devs else 0.0) for d in speed})
        seconds = run.seconds(j)
        out.append(Variant(i, j, "layers", tuple(devs), stages, seconds, {}, {}))
        cheapest[(i, j)] = min(cheapest[(i, j)], seconds)
    seg = Segments(graph, cluster, master, units, inputs, out, pruned=pruned)
    if rows == "optimal":
        _add_row_variants(seg, row_solver, block_time_limit)
    elif rows != "speed":
        raise PartoptError(f"rows must be 'speed' or 'optimal', not {rows!r}")
    return seg


def _messages_bound(cluster: Cluster, master: str, stages: list[Stage]) -> float:
    """A quick, weaker bound, tried before :func:`_layers_bound`: one message in for every worker
    of the first stage and one back from every worker of the last, each at least
    ``latency_s``; on a shared medium one at a time, on a mesh a worker's in and back follow
    one another."""
    first = {t.device for t in stages[0].tasks} - {master}
    last = {t.device for t in stages[-1].tasks} - {master}
    if cluster.link == "shared":
        return (len(first) + len(last)) * cluster.latency_s
    return 2 * cluster.latency_s if first else 0.0


def _layers_bound(graph: LayerGraph, cluster: Cluster, master: str, tensor: str, stages: list[Stage]) -> float:
    """Seconds no run of ``stages`` (a ``layers`` variant, unrouted: its input ``tensor`` whole
    at ``master``, its last stage gathered there) can beat, as :class:`~partopt.plan.Schedule`
    runs it (:class:`_LayersBound`, for one variant)."""
    return _LayersBound(graph, cluster, master, tensor).seconds(stages)


def _fastest_in(cluster: Cluster) -> dict[str, float]:
    """Each device's fastest incoming link (bytes/s)."""
    return {d: max([cluster.bw(s, d) for s in cluster.names if s != d], default=1.0) for d in cluster.names}


class _LayersBound:
    """:func:`_layers_bound` of the ``layers`` variants of one start and device subset, for
    growing segments: every stage but the last is a whole layer, the same for every longer
    segment, so each is taken in once.

    The bound: a device computes its tasks one after another (``C_d``: the sum of its
    :func:`~partopt.plan.stage_compute_s`); a worker computes nothing before its first message,
    which, if it has a task in the first stage, carries every byte of ``tensor`` those tasks
    read (all from the master); its share of the last stage's output reaches the master in one
    more message after its last task. So every device with a task in the last stage finishes
    no sooner than (first message) + ``C_d`` (+ its gather message). On a shared medium the
    messages go one at a time, so their sum bounds too: in every stage, a device whose tasks
    read elements it does not hold itself (received pieces are not kept between stages) gets
    at least one message with at least those bytes, and every worker's gather message."""

    def __init__(self, graph: LayerGraph, cluster: Cluster, master: str, tensor: str,
                 fastest_in: Optional[dict[str, float]] = None):
        self.graph, self.cluster, self.master, self.tensor = graph, cluster, master, tensor
        self.compute: dict[str, float] = defaultdict(float)    # seconds per device, whole layers taken in
        self.busy = 0.0                                        # the medium's seconds for them
        self.held: dict[str, dict[str, list[Box]]] = {tensor: {master: [Box.full(graph.tensor_chw(tensor))]}}
        self.arrive: dict[str, float] = {}                     # a worker's first message (s)
        self.taken = 0                                         # stages taken in
        self._fastest_in = fastest_in or _fastest_in(cluster)

    def _take(self, st: Stage, k: int, compute: dict, held: dict, arrive: dict) -> float:
        """Adds stage ``st`` (index k) to ``compute``, ``held`` and ``arrive``; returns the medium's seconds."""
        graph, cluster = self.graph, self.cluster
        for d, sec in stage_compute_s(graph, cluster, st).items():
            compute[d] += sec
        lacks: dict[str, int] = defaultdict(int)
        for t in st.tasks:
            for x, need in cone(graph, st.ops, t).needs.items():
                own = held.get(x, {}).get(t.device, [])
                lacks[t.device] = max(lacks[t.device], need.volume - sum(need.intersect(o).volume for o in own))
        busy = 0.0
        for d, n in lacks.items():
            if n > 0:
                busy += transfer_time(n * graph.batch * FLOAT_BYTES, self._fastest_in[d], cluster.latency_s)
        for d in {t.device for t in st.tasks} - {self.master} - set(arrive):
            first = k == 0 and lacks.get(d, 0) > 0       # in the first stage all comes from the master
            arrive[d] = transfer_time(lacks[d] * graph.batch * FLOAT_BYTES, cluster.bw(self.master, d),
                                      cluster.latency_s) if first else cluster.latency_s
        mine: dict[str, list[Box]] = defaultdict(list)
        for t in st.tasks:
            mine[t.device].append(t.box)
        held[st.output] = dict(mine)
        return busy

    def seconds(self, stages: list[Stage]) -> float:
        """The bound for the variant ``stages``, whose stages before the last extend those of
        the variants asked for before."""
        for k in range(self.taken, len(stages) - 1):
            self.busy += self._take(stages[k], k, self.compute, self.held, self.arrive)
        self.taken = max(self.taken, len(stages) - 1)
        compute, held, arrive = defaultdict(float, self.compute), dict(self.held), dict(self.arrive)
        last = stages[-1]
        busy = self.busy + self._take(last, len(stages) - 1, compute, held, arrive)
        at_master = [t.box for t in last.tasks if t.device == self.master]
        back: dict[str, float] = {}
        for t in last.tasks:
            if t.device != self.master:         # what the master lacks of its output
                lacks = max(0, t.box.volume - sum(t.box.intersect(m).volume for m in at_master))
                back[t.device] = max(back.get(t.device, 0.0),
                                     transfer_time(lacks * self.graph.batch * FLOAT_BYTES,
                                                   self.cluster.bw(t.device, self.master), self.cluster.latency_s))
        done = max(arrive.get(d, 0.0) + compute[d] + back.get(d, 0.0) for d in {t.device for t in last.tasks})
        if self.cluster.link == "shared":
            return max(done, busy + sum(back.values()))
        return done


class _LayerRun:
    """Seconds of the ``layers`` variant of segments i..j-1 over one device subset, for growing j,
    as :func:`partopt.methods.segment_path.price` gives them, in one pass: the layers of segment
    i..j are those of i..j-1 and more, so each layer is routed and scheduled once, when a
    segment first reaches past it (:meth:`partopt.plan.Schedule.copy` for each segment's own
    last layer and gather). ``seconds(j)`` must be asked for non-decreasing j."""

    def __init__(self, graph: LayerGraph, cluster: Cluster, master: str, units: list[list[str]], tensor: str,
                 i: int, layers: list[list[str]], shares: dict[str, float]):
        self.graph, self.master, self.units, self.i, self.layers, self.shares = graph, master, units, i, layers, shares
        self.sch = Schedule(graph, cluster)
        self.sch.ready[(tensor, master)] = 0.0
        self.holdings = {tensor: gathered(graph, tensor, master)}
        self.done = 0                               # complete layers routed and run so far

    def seconds(self, j: int) -> float:
        graph, shares = self.graph, self.shares
        inside = {n for u in self.units[self.i:j] for n in u}
        groups = [g for g in ([n for n in layer if n in inside] for layer in self.layers) if g]
        for g in groups[self.done:-1]:              # only the last layer can be cut short at unit j
            self.sch.run_stage(self.done, route_stage(graph, Stage(g, split_tasks(graph, g[-1], shares)),
                                                      self.holdings))
            self.done += 1
        g = groups[-1]
        tail = route_stage(graph, Stage(g, split_tasks(graph, g[-1], shares), gather_to=self.master),
                           dict(self.holdings))
        trial = self.sch.copy()
        trial.run_stage(self.done, tail)
        return trial.ready[(tail.output, self.master)]


def _add_row_variants(seg: Segments, solver: str, block_time_limit: Optional[float]) -> None:
    """DPFP's blocks with optimal integer rows as ``rows`` variants (its spatial units are the
    first units of ``seg``: both cut at the same cut points)."""
    try:
        p = dpfp.problem(seg.graph, seg.cluster, seg.master, rows="optimal", block_time_limit=block_time_limit,
                         row_solver=solver)
    except NotApplicableError:
        return          # no spatial part
    assert p.units == seg.units[:p.n]
    seg.lower = {}
    for (i, j), rows_of in p.segments.items():
        stage = dpfp.block_stage(p, i, j)
        seconds, weights, act = segment_path.price(seg.graph, seg.cluster, seg.master, seg.inputs[i], [stage])
        devs = tuple(d for d in seg.cluster.names if d in rows_of and rows_of[d][1] > rows_of[d][0])
        seg.variants.append(Variant(i, j, "rows", devs, [stage], seconds, weights, act))
        seg.lower[len(seg.variants) - 1] = min(seconds, p.lower[(i, j)])
    seg.rows_proven = p.rows_proven


def dp(seg: Segments) -> tuple[float, list[int]]:
    """The fastest segment plan, memory ignored: (seconds, indices of its variants in order)."""
    return segment_path.shortest(seg.variants, seg.n)


def plan_of(seg: Segments, chosen: list[int], *, model: str = "model", meta: Optional[dict] = None,
            check: bool = True) -> Plan:
    """The plan of variants ``chosen`` (indices, covering the units in order; ``check=False``:
    not validated, see :func:`partopt.plan.build_plan`)."""
    vs = [seg.variants[k] for k in chosen]
    stages = _unrouted(s for v in vs for s in v.stages)
    m = {"segments": [v.label for v in vs], "master": seg.master, **(meta or {})}
    return build_plan(seg.graph, seg.cluster, stages, model=model, method="best", source=seg.master,
                      sink=seg.master, meta=m, check=check)


def memory_of(seg: Segments, chosen: list[int]) -> dict[str, int]:
    """Each device's peak bytes for variants ``chosen``: weights summed, activations maxed."""
    return segment_path.memory_of(seg.variants, chosen, seg.cluster.names)


def brute_force(seg: Segments, limit: int = 200000) -> tuple[float, list[int]]:
    """Every memory-feasible segment plan (for tests on tiny instances): (seconds, variants)."""
    return segment_path.brute_force(seg.variants, seg.n, seg.cluster, limit)


# ---------------------------------------------------------------------------------------
# The exact model over segment plans (formulations/best.tex)
# ---------------------------------------------------------------------------------------
def build_model(seg: Segments, solver: str = "highs"):
    """The segment plans with memory as a MILP or CP-SAT model
    (:func:`partopt.methods.segment_path.build_model`): returns (model, x)."""
    return segment_path.build_model(seg.variants, seg.n, seg.cluster, solver)


def model(graph: LayerGraph, cluster: Cluster, *, solver: str = "highs", source: Optional[str] = None):
    """The exact model over segment plans itself (PuLP or CP-SAT), for export."""
    return build_model(segments(graph, cluster, source), solver)[0]


# ---------------------------------------------------------------------------------------
# The heuristic and the exact method
# ---------------------------------------------------------------------------------------
SUBSET_PATIENCE = 2    # the heuristic stops growing one method's subset after this many slower sizes in a row


def _candidates(graph: LayerGraph, cluster: Cluster, model: str, source: Optional[str],
                seg: Callable[[], Optional[Segments]], seen: Optional[dict[str, float]] = None):
    """(origin, devices, make) for items 1-2 of the module doc and the segment DP's plan, in the
    order they are tried: ``devices`` are the only devices the plan of ``make()`` (a Solution
    or an unvalidated Plan) can use (None: any), for :func:`_pick`'s lower-bound pruning.
    ``seg()`` gives the segment plans (None: the model has none), built only when reached.

    Item 2 goes method by method, k = 2, 3, ...; with ``seen`` (origin -> latency in seconds of
    each candidate that fits memory, filled by :func:`_pick` as it prices them) a method's
    subsets stop growing once its latency rose :data:`SUBSET_PATIENCE` times in a row, where
    more devices only add messages (the heuristic); without ``seen`` every subset is tried
    (``exact``'s union)."""
    master = source or cluster.devices[0].name
    for name, fn in WHOLE_CLUSTER.items():
        yield name, None, lambda fn=fn: _applied(fn, graph, cluster, model, source)
    if graph.total_flops <= SMALL_CHAIN_MAX_FLOPS:
        for name, fn in SMALL_CHAIN.items():
            yield name, None, lambda fn=fn: _applied(fn, graph, cluster, model, source)
    yield "segments", None, lambda: None if seg() is None else plan_of(seg(), dp(seg())[1], model=model, check=False)
    peers = peers_by_speed(cluster, master)
    subsets = []                            # proper subsets: the source and its k-1 fastest peers
    for k in range(2, len(cluster)):
        names = tuple([master] + peers[:k - 1])
        subsets.append((names, cluster.subset([n for n in cluster.names if n in names])))
    for name, fn in ON_SUBSETS.items():
        last, rises = None, 0
        for names, sub in subsets:
            origin = f"{name} on {','.join(names)}"
            yield origin, names, lambda fn=fn, sub=sub: _on_subset(fn, graph, sub, cluster, model, master)
            latency = None if seen is None else seen.get(origin)
            if latency is None:             # skipped by the bound, not applicable, or over memory
                continue
            rises = rises + 1 if last is not None and latency > last else 0
            last = latency
            if rises >= SUBSET_PATIENCE:
                break


def _applied(fn: Callable, graph: LayerGraph, cluster: Cluster, model: str, source: Optional[str]):
    """Heuristic ``fn``'s Solution, or None when the method does not apply to the model
    (:class:`~partopt.errors.NotApplicableError`; any other error is raised)."""
    try:
        return fn(graph, cluster, model=model, source=source)
    except NotApplicableError:
        return None


def _on_subset(fn: Callable, graph: LayerGraph, sub: Cluster, cluster: Cluster, model: str, master: str):
    """Heuristic ``fn`` on sub-cluster ``sub``, its plan re-routed on the whole ``cluster``
    (unvalidated; None when ``fn`` does not apply to the model)."""
    sol = _applied(fn, graph, sub, model, master)
    if sol is None or sol.plan is None:
        return None
    return build_plan(graph, cluster, _unrouted(sol.plan.stages), model=sol.plan.model, method="best",
                      source=sol.plan.source, sink=sol.plan.sink, meta=dict(sol.plan.meta), check=False)


def _pick(graph, cluster, cands, source: Optional[str] = None, seen: Optional[dict[str, float]] = None):
    """The fastest candidate that fits memory (else the smallest shortfall): (origin, plan, report, n, skipped).
    ``seen``, when given, gets each fitting candidate's latency (seconds) by origin.

    A candidate is skipped, not built, when a fitting incumbent is already no slower than the
    lower bound of every plan on the candidate's devices (:func:`partopt.bounds.lower_bound`),
    so it could not have been kept (devices that together lack room for the weights fit no plan:
    their bound is infinite); ``skipped`` counts them. The plan returned is validated."""
    master = source or cluster.devices[0].name
    work, weights = necessary_flops_by_kind(graph), necessary_weight_bytes(graph)
    bounds: dict = {}

    def bound(devices) -> float:
        if devices not in bounds:
            cl = cluster if devices is None else cluster.subset([n for n in cluster.names if n in devices])
            lb = lower_bound(graph, cl, master, work=work, weights=weights)
            bounds[devices] = lb.seconds if lb.fits else float("inf")
        return bounds[devices]

    best, n, skipped = None, 0, 0
    for origin, devices, make in cands:
        if best is not None and best[0][:2] == (False, 0) and bound(devices) >= best[0][2] * (1 - 1e-9):
            skipped += 1
            continue
        cand = make()
        plan = cand.plan if isinstance(cand, Solution) else cand
        if plan is None:
            continue
        n += 1
        rep = cand.report if isinstance(cand, Solution) and cand.report is not None else \
            evaluate(plan, graph, cluster, check=False)
        key = (not rep.memory_ok, sum(rep.over_memory.values()), rep.latency_s)
        if seen is not None and rep.memory_ok:
            seen[origin] = rep.latency_s
        # a later candidate must be faster beyond rounding, so ties keep the simpler, earlier plan
        if best is None or key[:2] < best[0][:2] or (key[:2] == best[0][:2] and key[2] < best[0][2] * (1 - 1e-9)):
            best = (key, origin, plan, rep)
    validate(best[2], graph, cluster)
    return best[1], best[2], best[3], n, skipped


def _segments_or_none(graph, cluster, source, **kw):
    """:func:`segments`, or None when the model has no spatial part to cut into units."""
    try:
        return segments(graph, cluster, source, **kw)
    except NotApplicableError:
        return None


def _relabel(plan: Plan, origin: str, n: int, extra: Optional[dict] = None) -> Plan:
    return Plan(plan.model, plan.input_shape, plan.cluster, "best", plan.source, plan.sink, plan.stages, plan.final,
                plan.seed, {**plan.meta, "origin": origin, "candidates": n, **(extra or {})})


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector paused for the block, then as it was. Planning fills
    per-graph caches (cones, routes, stage terms) with millions of small objects, and the
    collector's full passes over them took 19-34 % of the heuristic's time on five slow
    instances; reference counting still frees everything outside a cycle meanwhile, and the
    collector runs again after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def heuristic(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None
              ) -> Solution:
    """The fastest plan that fits memory over every candidate (module doc); ``infeasible`` with
    the smallest shortfall when none fits."""
    t0 = time.perf_counter()
    seg = functools.cache(lambda: _segments_or_none(graph, cluster, source, memory=False))  # the DP ignores memory
    seen: dict[str, float] = {}
    with _collector_paused():
        origin, plan, rep, n, skipped = _pick(graph, cluster, _candidates(graph, cluster, model, source, seg, seen),
                                              source, seen)
    plan = _relabel(plan, origin, n, {"skipped_by_bound": skipped})
    if not rep.memory_ok:
        return Solution(plan, "infeasible", "best", solve_s=time.perf_counter() - t0, report=rep,
                        reason="no candidate plan fits memory; the closest: " + rep.infeasible_reason())
    return Solution(plan, "heuristic", "best", objective=rep.latency_s, solve_s=time.perf_counter() - t0, report=rep)


def exact(graph: LayerGraph, cluster: Cluster, *, model: str = "model", source: Optional[str] = None,
          solver: str = "highs", time_limit: Optional[float] = 60.0, threads: Optional[int] = None,
          block_time_limit: Optional[float] = 30.0, row_solver: str = "dp") -> Solution:
    """The optimum over the union of the module doc: the best segment plan with memory (MILP on
    ``cbc``/``highs`` or CP-SAT), DPFP's optimal-row blocks among its variants (one block model
    per spatial segment on the same ``solver``, ``block_time_limit`` seconds each), against
    every heuristic candidate, the faster kept.

    Status ``optimal`` when the solver proved the segment model optimal (relative gap 1e-9;
    MILP times in microseconds, CP-SAT in integer picoseconds rounded per segment) and every
    block's rows were proven; ``feasible`` otherwise, with ``bound`` the smaller of the best
    candidate's latency and the solver's bound (or, with unproven rows, the memory-free DP over
    the blocks' proven lower bounds); ``infeasible`` when no plan of the union fits memory.
    ``objective`` is always ``evaluate``'s latency of the returned plan (seconds)."""
    t0 = time.perf_counter()
    if solver not in ("cbc", "highs", "cpsat"):
        raise SolverError(f"unknown solver {solver!r}; choose cbc, highs or cpsat")
    seg = _segments_or_none(graph, cluster, source, rows="optimal", row_solver=row_solver,
                            block_time_limit=block_time_limit)
    origin, plan, rep, n, skipped = _pick(graph, cluster, _candidates(graph, cluster, model, source, lambda: seg),
                                          source)
    heur_ok = rep.memory_ok
    status, bound, reason = "optimal", None, ""
    if seg is not None:
        res, chosen = segment_path.solve(seg.variants, seg.n, cluster, solver, time_limit, threads)
        if chosen:
            sp = plan_of(seg, chosen, model=model)
            srep = evaluate(sp, graph, cluster, check=False)     # validated by plan_of
            n += 1
            if srep.memory_ok and (not heur_ok or srep.latency_s < rep.latency_s * (1 - 1e-9)):
                origin, plan, rep, heur_ok = "segment model", sp, srep, True
        if res.status in ("optimal", "infeasible") and seg.rows_proven:
            status = "optimal"
        else:
            status = "feasible"
            if not seg.rows_proven:
                reason = "some blocks' integer rows were not proven optimal within block_time_limit"
                low = [dataclasses.replace(v, seconds=seg.lower.get(k, v.seconds)) for k, v in enumerate(seg.variants)]
                seg_bound = dp(dataclasses.replace(seg, variants=low))[0]
            else:
                reason = f"the segment model stopped at the time limit ({res.status})"
                seg_bound = res.bound if res.bound is not None else 0.0
            bound = min(seg_bound, rep.latency_s) if heur_ok else seg_bound
    plan = _relabel(plan, origin, n, {"solver": solver, "skipped_by_bound": skipped})
    if not heur_ok:
        return Solution(plan, "infeasible", "best", "exact", solve_s=time.perf_counter() - t0, solver=solver,
                        report=rep, reason="no plan of the union fits memory; the closest: " + rep.infeasible_reason())
    if status == "optimal":
        bound = rep.latency_s
    gap = None if bound is None else max(0.0, (rep.latency_s - bound) / rep.latency_s)
    return Solution(plan, status, "best", "exact", objective=rep.latency_s, bound=bound, gap=gap,
                    solve_s=time.perf_counter() - t0, solver=solver, report=rep, reason=reason)
