"""Plans as data, the routing of their messages, and ``evaluate`` (the one cost model).

A :class:`Plan` is a list of :class:`Stage`. A stage is a run of ops (a *block*, in
topological order) whose output is the output of its last op. Each :class:`Task` says that a
device computes one box of that output; it computes every op of the block on the region its
box needs (receptive-field arithmetic, :meth:`partopt.graph.Op.input_windows`), so inside a
block nothing is exchanged and overlapping cones are computed redundantly. A task with
``in_channels`` computes a *partial sum* of a groups=1 conv over that input-channel range;
whoever later reads that tensor sums the partials and adds the bias.

Before a stage runs, each device receives what its tasks need of earlier tensors and does not
hold itself: those are the stage's :class:`Transfer` s (from the devices holding the pieces).
A stage may end with a *gather* of its output to one device (``gather_to``): that device
then holds the whole tensor and the others drop their pieces, so later stages read it from
there (this makes a gathered stage's cost independent of how the stage before it was split). After the last stage the output is sent to the ``sink``.
The model input starts on the ``source`` device.

Rules (checked by :func:`validate`): every op in exactly one stage; stages in dependency
order; an op whose output leaves its stage is the stage's last op; the tasks of a stage tile
its output exactly (disjoint, full cover), or, for a partial-sum stage (a single groups=1
conv), all cover the same box with input-channel ranges that partition the conv's inputs;
every transfer's source holds what it sends, and every device receives all it lacks.

:func:`evaluate` scores a plan:

- latency_s: a list schedule in stage order. A device computes its tasks one after another
  (compute time = each op kind's FLOPs / the device's FLOP/s for that kind, plus the cluster's
  ``task_overhead_s`` per task and ``stage_overhead_s`` once per stage it computes in:
  :func:`partopt.cost.compute_time`); it starts a stage when it is free and all its messages of
  the stage have arrived. All transfers from one device to another in one phase (stage input,
  gather, final) form one message: latency_s + bytes / bandwidth. On a ``mesh`` each ordered
  pair is its own link; on a ``shared`` medium one message at a time. Messages are served
  phase by phase, and within a phase by sender, then receiver, in the cluster's device order;
  each starts when its data is ready and its link (or the medium) is free. Communication
  overlaps computation wherever the dependencies allow. With this fixed order every start
  time is a max of sums, so an exact model can state the schedule with linear constraints.
- throughput_per_s: the rate of a pipelined stream of inferences, 1 / the busiest resource's
  time per inference (a device's compute, a link's messages, or the shared medium's messages).
- peak_memory_bytes per device: weights it holds (union of its slices, once) + the largest
  activation set alive at once: pieces of earlier tensors still to be read, the bytes
  received for the current stage, the outputs of its tasks, and the largest working set of one
  task's block (intermediate regions alive at once).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .cluster import Cluster
from .cost import compute_time, rate_kind, region_flops, transfer_time, weight_bytes
from .errors import PlanError
from .geometry import Box, disjoint, subtract_all, union_volume
from .graph import LayerGraph

FLOAT_BYTES = 4


@dataclass(frozen=True)
class Task:
    """Device ``device`` computes ``box`` of its stage's output (partial over ``in_channels`` if set)."""

    device: str
    box: Box
    in_channels: Optional[tuple[int, int]] = None


@dataclass(frozen=True)
class Transfer:
    """``nbytes`` bytes of ``box`` of tensor ``tensor`` sent from ``src`` to ``dst`` (partial sums if ``partial``)."""

    src: str
    dst: str
    tensor: str
    box: Box
    nbytes: int
    partial: bool = False


@dataclass
class Stage:
    ops: list[str]
    tasks: list[Task]
    transfers: list[Transfer] = field(default_factory=list)
    gather_to: Optional[str] = None
    gather: list[Transfer] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.ops[-1]

    @property
    def partial(self) -> bool:
        return any(t.in_channels is not None for t in self.tasks)

    @property
    def devices(self) -> list[str]:
        return sorted({t.device for t in self.tasks})


@dataclass
class Plan:
    """What every device computes at each stage and which bytes go from whom to whom."""

    model: str
    input_shape: tuple[int, ...]
    cluster: dict[str, Any]
    method: str
    source: str
    sink: str
    stages: list[Stage]
    final: list[Transfer] = field(default_factory=list)
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stages[-1].output

    @property
    def comm_bytes(self) -> int:
        return sum(t.nbytes for t in self.all_transfers())

    def all_transfers(self) -> list[Transfer]:
        out = [t for s in self.stages for t in (*s.transfers, *s.gather)]
        return out + list(self.final)

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def tr(t: Transfer):
            return {"src": t.src, "dst": t.dst, "tensor": t.tensor, "box": t.box.to_list(),
                    "nbytes": t.nbytes, "partial": t.partial}
        return {
            "format": "partopt-plan/1", "model": self.model, "input_shape": list(self.input_shape),
            "cluster": self.cluster, "method": self.method, "source": self.source, "sink": self.sink,
            "seed": self.seed, "meta": self.meta,
            "stages": [{"ops": s.ops,
                        "tasks": [{"device": t.device, "box": t.box.to_list(),
                                   **({"in_channels": list(t.in_channels)} if t.in_channels else {})}
                                  for t in s.tasks],
                        "transfers": [tr(t) for t in s.transfers],
                        "gather_to": s.gather_to, "gather": [tr(t) for t in s.gather]} for s in self.stages],
            "final": [tr(t) for t in self.final],
        }

    @staticmethod
    def from_dict(d: Any) -> "Plan":
        try:
            if d.get("format") != "partopt-plan/1":
                raise PlanError(f"not a partopt plan (format {d.get('format')!r})")

            def tr(x):
                return Transfer(str(x["src"]), str(x["dst"]), str(x["tensor"]), Box.from_list(x["box"]),
                                int(x["nbytes"]), bool(x.get("partial", False)))
            stages = [Stage(list(s["ops"]),
                            [Task(str(t["device"]), Box.from_list(t["box"]),
                                  tuple(t["in_channels"]) if t.get("in_channels") else None) for t in s["tasks"]],
                            [tr(x) for x in s.get("transfers", [])], s.get("gather_to"),
                            [tr(x) for x in s.get("gather", [])]) for s in d["stages"]]
            return Plan(str(d["model"]), tuple(int(v) for v in d["input_shape"]), dict(d["cluster"]),
                        str(d["method"]), str(d["source"]), str(d["sink"]), stages,
                        [tr(x) for x in d.get("final", [])], int(d.get("seed", 0)), dict(d.get("meta", {})))
        except PlanError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PlanError(f"malformed plan: {type(e).__name__}: {e}") from None

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @staticmethod
    def load(path: str) -> "Plan":
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise PlanError(f"plan file {path!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlanError(f"{path}: not valid JSON: {e}") from None
        return Plan.from_dict(data)


# ---------------------------------------------------------------------------------------
# Regions of one task (receptive-field cone through a block)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cone:
    """What one task touches: the output region of every op of its block (clipped to the
    tensor), the region needed of every tensor from outside the block, its FLOPs, and those
    FLOPs per rate kind (sorted (kind, FLOPs) pairs, :func:`partopt.cost.rate_kind`)."""

    regions: dict[str, Box]
    needs: dict[str, Box]
    flops: int
    work_peak_bytes: int
    flops_by_kind: tuple[tuple[str, int], ...] = ()


def cone(graph: LayerGraph, ops: tuple[str, ...] | list[str], task: Task) -> Cone:
    """Receptive-field cone of ``task`` through the block ``ops`` (cached per graph)."""
    key = (tuple(ops), task.box, task.in_channels)
    cache = graph.__dict__.setdefault("_cone_cache", {})
    if key in cache:
        return cache[key]
    ops = list(ops)
    inside = set(ops)
    last = ops[-1]
    empty = Box(0, 0, 0, 0, 0, 0)
    need: dict[str, Box] = {last: task.box}
    ext: dict[str, Box] = {}
    for name in reversed(ops):
        box = need.get(name, empty)
        if box.empty:
            continue
        op = graph.op[name]
        wins = op.input_windows(box, task.in_channels if name == last else None)
        for inp, win in zip(op.inputs, wins):
            clipped = win.intersect(Box.full(graph.tensor_chw(inp)))
            target = need if inp in inside else ext
            target[inp] = target.get(inp, empty).hull(clipped)
    by_kind: dict[str, int] = {}
    for n in ops:
        f = region_flops(graph.op[n], need.get(n, empty), task.in_channels if n == last else None)
        if f:
            k = rate_kind(graph.op[n])
            by_kind[k] = by_kind.get(k, 0) + f
    flops = sum(by_kind.values())
    # working set: regions alive at once while the block runs in op order
    last_use = {n: len(ops) for n in ops}          # the last op of the block that reads n
    for i, m in enumerate(ops):
        for inp in graph.op[m].inputs:
            if inp in inside:
                last_use[inp] = i
    freed: dict[int, list[str]] = defaultdict(list)
    for n, i in last_use.items():
        freed[i].append(n)
    alive, peak = 0, 0
    batch = graph.batch
    for i, n in enumerate(ops):
        alive += need.get(n, empty).volume * batch * FLOAT_BYTES
        peak = max(peak, alive)
        for m in freed.get(i, ()):
            alive -= need.get(m, empty).volume * batch * FLOAT_BYTES
    result = Cone({n: need.get(n, empty) for n in ops}, ext, flops, peak, tuple(sorted(by_kind.items())))
    cache[key] = result
    return result


# ---------------------------------------------------------------------------------------
# Holdings and routing
# ---------------------------------------------------------------------------------------
@dataclass
class Holding:
    """Who holds which boxes of one tensor (partial sums if ``partial``). After a gather the
    gathering device is the sole holder of the whole tensor; the others drop their pieces."""

    pieces: list[tuple[str, Box]]
    partial: bool = False

    def held_by(self, device: str) -> list[Box]:
        return [b for d, b in self.pieces if d == device]


def route(graph: LayerGraph, tensor: str, holding: Holding, dst: str, boxes: list[Box]) -> list[Transfer]:
    """The transfers that bring ``boxes`` of ``tensor`` to ``dst`` from whoever holds them.

    Ordinary tensors: what ``dst`` does not hold itself, from the holder of each piece.
    Partial sums: every other holder's partial over the boxes (``dst`` adds them up).
    """
    full = Box.full(graph.tensor_chw(tensor))
    boxes = disjoint(b.intersect(full) for b in boxes)
    if not boxes:
        return []
    out: list[Transfer] = []
    rest = boxes if holding.partial else subtract_all(boxes, holding.held_by(dst))
    got = 0
    for dev, pb in holding.pieces:
        if dev == dst:
            continue
        for b in rest:
            x = b.intersect(pb)
            if not x.empty:
                out.append(Transfer(dev, dst, tensor, x, nbytes_of(graph, x), holding.partial))
                got += x.volume
    if not holding.partial and got != sum(b.volume for b in rest):
        raise PlanError(f"{dst} needs {sum(b.volume for b in rest) - got} elements of {tensor} that no device holds")
    return out


def gathered(graph: LayerGraph, tensor: str, device: str) -> Holding:
    """The holding after a gather of ``tensor`` at ``device``."""
    return Holding([(device, Box.full(graph.tensor_chw(tensor)))])


def stage_holding(s: Stage) -> Holding:
    """Who holds the stage's output right after it ran. A device's partial sums over the same
    box are added up locally first, so it holds (and sends) one partial."""
    if s.partial:
        seen: dict[str, Box] = {}
        for t in s.tasks:
            seen.setdefault(t.device, t.box)
        return Holding(list(seen.items()), partial=True)
    return Holding([(t.device, t.box) for t in s.tasks])


def nbytes_of(graph: LayerGraph, box: Box) -> int:
    return box.volume * graph.batch * FLOAT_BYTES


def task_needs(graph: LayerGraph, stage: Stage) -> dict[str, dict[str, list[Box]]]:
    """device -> tensor -> boxes its tasks need from outside the stage's block."""
    needs: dict[str, dict[str, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for t in stage.tasks:
        for tensor, box in cone(graph, stage.ops, t).needs.items():
            if not box.empty:
                needs[t.device][tensor].append(box)
    return needs


def route_stage(graph: LayerGraph, s: Stage, holdings: dict[str, Holding]) -> Stage:
    """``s`` with its transfers (and gather) routed from ``holdings``, which it then updates.

    Routing is a pure function of the stage (ops, tasks, gather) and the holdings of the
    tensors it reads, so it is cached per graph on exactly that key (searches that price many
    plans route the same stage from the same holdings again and again)."""
    inside = set(s.ops)
    reads = sorted({i for n in s.ops for i in graph.op[n].inputs if i not in inside})
    if all(t in holdings for t in reads):
        key = (tuple(s.ops), tuple(s.tasks), s.gather_to,
               tuple((t, tuple(holdings[t].pieces), holdings[t].partial) for t in reads))
        cache = graph.__dict__.setdefault("_route_cache", {})
        if key not in cache:
            read = {t: holdings[t] for t in reads}
            routed = _route_stage(graph, s, read)     # adds the output's holding to ``read``
            cache[key] = (routed.transfers, routed.gather, read[s.output])
        transfers, gather, h = cache[key]
        holdings[s.output] = h
        return Stage(list(s.ops), list(s.tasks), list(transfers), s.gather_to, list(gather))
    return _route_stage(graph, s, holdings)     # raises: it reads a tensor nobody holds


def _route_stage(graph: LayerGraph, s: Stage, holdings: dict[str, Holding]) -> Stage:
    """:func:`route_stage` without the cache."""
    transfers = []
    for dev, tensors in sorted(task_needs(graph, s).items()):
        for tensor, boxes in tensors.items():
            if tensor not in holdings:
                raise PlanError(f"stage {s.ops[0]}..{s.ops[-1]} reads {tensor} before any stage computes it")
            transfers += route(graph, tensor, holdings[tensor], dev, boxes)
    h = stage_holding(s)
    gather = []
    if s.gather_to:
        gather = route(graph, s.output, h, s.gather_to, [Box.full(graph.tensor_chw(s.output))])
        h = gathered(graph, s.output, s.gather_to)
    holdings[s.output] = h
    return Stage(list(s.ops), list(s.tasks), transfers, s.gather_to, gather)


def build_plan(graph: LayerGraph, cluster: Cluster, stages: list[Stage], *, model: str, method: str,
               source: Optional[str] = None, sink: Optional[str] = None, seed: int = 0,
               meta: Optional[dict[str, Any]] = None, check: bool = True) -> Plan:
    """Fill in every stage's transfers (and gathers, and the final gather to ``sink``) by routing
    each task's needs from the current holders, then validate the plan (``check=False``: not
    validated, for a search that prices many candidates and validates the one it returns)."""
    source = source or cluster.devices[0].name
    sink = sink or source
    holdings: dict[str, Holding] = {graph.input_name: gathered(graph, graph.input_name, source)}
    out_stages = [route_stage(graph, s, holdings) for s in stages]
    out = out_stages[-1].output if out_stages else graph.output
    final = route(graph, out, holdings[out], sink, [Box.full(graph.tensor_chw(out))]) if out in holdings else []
    plan = Plan(model, tuple(graph.input_shape), cluster.to_dict(), method, source, sink, out_stages, final,
                seed, dict(meta or {}))
    if check:
        validate(plan, graph, cluster)
    return plan


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------
def validate(plan: Plan, graph: LayerGraph, cluster: Cluster) -> None:
    """Raise PlanError unless the plan is complete and consistent (rules in the module doc)."""
    names = set(cluster.names)
    for role, dev in (("source", plan.source), ("sink", plan.sink)):
        if dev not in names:
            raise PlanError(f"plan {role} {dev!r} is not a device of cluster {cluster.name!r}")
    if not plan.stages:
        raise PlanError("plan has no stages")
    stage_of: dict[str, int] = {}
    for i, s in enumerate(plan.stages):
        if not s.ops or not s.tasks:
            raise PlanError(f"stage {i} has no ops or no tasks")
        for n in s.ops:
            if n not in graph.op:
                raise PlanError(f"stage {i} names op {n!r}, which the model does not have")
            if n in stage_of:
                raise PlanError(f"op {n} is in stages {stage_of[n]} and {i}")
            stage_of[n] = i
    missing = [o.name for o in graph.ops if o.name not in stage_of]
    if missing:
        raise PlanError(f"ops in no stage: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if plan.output != graph.output:
        raise PlanError(f"the last stage must end with the model output {graph.output}, not {plan.output}")
    for i, s in enumerate(plan.stages):
        pos = {n: j for j, n in enumerate(s.ops)}
        for j, n in enumerate(s.ops):
            for inp in graph.op[n].inputs:
                if inp == graph.input_name:
                    continue
                if stage_of[inp] > i or (stage_of[inp] == i and pos[inp] >= j):
                    raise PlanError(f"op {n} (stage {i}) reads {inp} before it is computed")
                if stage_of[inp] < i and plan.stages[stage_of[inp]].output != inp:
                    raise PlanError(f"op {inp} is read by stage {i} but is not the last op of its stage "
                                    f"{stage_of[inp]}")
        _validate_tasks(i, s, graph, names)
        if s.gather_to is not None and s.gather_to not in names:
            raise PlanError(f"stage {i} gathers to unknown device {s.gather_to!r}")
    _validate_transfers(plan, graph, names)


def _validate_tasks(i: int, s: Stage, graph: LayerGraph, names: set[str]) -> None:
    out = graph.op[s.output]
    full = Box.full(out.out_chw)
    for t in s.tasks:
        if t.device not in names:
            raise PlanError(f"stage {i}: task on unknown device {t.device!r}")
        if t.box.empty or not full.contains(t.box):
            raise PlanError(f"stage {i}: task box {t.box.to_list()} is empty or outside {s.output}'s "
                            f"output {full.to_list()}")
    if not s.partial:
        vol = sum(t.box.volume for t in s.tasks)
        if vol != full.volume or union_volume(t.box for t in s.tasks) != full.volume:
            raise PlanError(f"stage {i}: task boxes must tile {s.output}'s output exactly "
                            f"(sum {vol}, union {union_volume(t.box for t in s.tasks)}, size {full.volume})")
        return
    if any(t.in_channels is None for t in s.tasks):
        raise PlanError(f"stage {i}: mixes partial-sum and ordinary tasks")
    if len(s.ops) != 1 or out.kind != "conv" or out.groups != 1:
        raise PlanError(f"stage {i}: a partial-sum stage must be a single groups=1 conv")
    if len({t.box for t in s.tasks}) != 1:
        raise PlanError(f"stage {i}: partial-sum tasks must all cover the same output box")
    cin = out.in_chw[0]
    rngs = sorted(t.in_channels for t in s.tasks)  # type: ignore[type-var]
    a = 0
    for lo, hi in rngs:
        if lo != a or hi <= lo:
            raise PlanError(f"stage {i}: input-channel ranges {rngs} must partition [0, {cin})")
        a = hi
    if a != cin:
        raise PlanError(f"stage {i}: input-channel ranges {rngs} must partition [0, {cin})")


def _validate_transfers(plan: Plan, graph: LayerGraph, names: set[str]) -> None:
    holdings: dict[str, Holding] = {graph.input_name: gathered(graph, graph.input_name, plan.source)}

    def check_sent(phase: str, ts: list[Transfer]):
        for t in ts:
            if t.src not in names or t.dst not in names or t.src == t.dst:
                raise PlanError(f"{phase}: transfer {t.src}->{t.dst} names an unknown device or itself")
            if t.tensor not in holdings:
                raise PlanError(f"{phase}: transfer of {t.tensor}, which is not computed yet")
            h = holdings[t.tensor]
            if t.partial != h.partial:
                raise PlanError(f"{phase}: transfer of {t.tensor} from {t.src} marks partial={t.partial} wrongly")
            if subtract_all([t.box], h.held_by(t.src)) or t.box.empty:
                raise PlanError(f"{phase}: {t.src} sends box {t.box.to_list()} of {t.tensor} it does not hold")
            if t.nbytes != nbytes_of(graph, t.box):
                raise PlanError(f"{phase}: transfer {t.src}->{t.dst} of {t.tensor} declares {t.nbytes} bytes, "
                                f"its box holds {nbytes_of(graph, t.box)}")

    def check_covered(phase: str, dst: str, tensor: str, boxes: list[Box], ts: list[Transfer]):
        h = holdings[tensor]
        got = [t.box for t in ts if t.dst == dst and t.tensor == tensor]
        if h.partial:
            holders = {d for d, _ in h.pieces} - {dst}
            senders = {t.src for t in ts if t.dst == dst and t.tensor == tensor}
            if holders - senders:
                raise PlanError(f"{phase}: {dst} never receives the partial sums of {tensor} held by "
                                f"{', '.join(sorted(holders - senders))}")
            return
        left = subtract_all(boxes, h.held_by(dst) + got)
        if left:
            raise PlanError(f"{phase}: {dst} lacks {sum(b.volume for b in left)} elements of {tensor}")

    for i, s in enumerate(plan.stages):
        phase = f"stage {i}"
        check_sent(phase, s.transfers)
        for dev, tensors in task_needs(graph, s).items():
            for tensor, boxes in tensors.items():
                check_covered(phase, dev, tensor, boxes, s.transfers)
        h = stage_holding(s)
        holdings[s.output] = h
        if s.gather_to:
            check_sent(f"{phase} gather", s.gather)
            check_covered(f"{phase} gather", s.gather_to, s.output, [Box.full(graph.tensor_chw(s.output))], s.gather)
            holdings[s.output] = gathered(graph, s.output, s.gather_to)
        elif s.gather:
            raise PlanError(f"{phase}: gather transfers without gather_to")
    check_sent("final", plan.final)
    check_covered("final", plan.sink, plan.output, [Box.full(graph.tensor_chw(plan.output))], plan.final)


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------
@dataclass
class Event:
    """One interval of a schedule: ``resource`` is a device name, ``a->b`` or ``medium``."""

    kind: str      # compute | send
    resource: str
    start_s: float
    end_s: float
    label: str


@dataclass
class Report:
    """Cost-model figures of one plan. Seconds, bytes, FLOPs, per second."""

    latency_s: float
    throughput_per_s: float
    compute_s: dict[str, float]
    flops: dict[str, int]
    peak_memory_bytes: dict[str, int]
    weight_bytes: dict[str, int]
    link_bytes: dict[str, int]
    comm_bytes: int
    messages: int
    over_memory: dict[str, int]          # device -> bytes it lacks (empty when the plan fits)
    events: list[Event] = field(default_factory=list, repr=False)

    @property
    def memory_ok(self) -> bool:
        return not self.over_memory

    @property
    def max_peak_memory_bytes(self) -> int:
        return max(self.peak_memory_bytes.values()) if self.peak_memory_bytes else 0

    def infeasible_reason(self) -> str:
        return "; ".join(f"device {d} needs {self.peak_memory_bytes[d]} bytes, lacks {b} bytes"
                         for d, b in sorted(self.over_memory.items()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("events")
        return d


def stage_flops(graph: LayerGraph, stage: Stage) -> dict[str, int]:
    """FLOPs each computing device of ``stage`` runs (its tasks' cones)."""
    out: dict[str, int] = defaultdict(int)
    for t in stage.tasks:
        out[t.device] += cone(graph, stage.ops, t).flops
    return dict(out)


def stage_compute_s(graph: LayerGraph, cluster: Cluster, stage: Stage) -> dict[str, float]:
    """Seconds each computing device of ``stage`` is busy with its tasks: the cost model's
    compute rule (:func:`partopt.cost.compute_time`: FLOPs per rate kind over the device's rate
    for that kind, plus ``cluster.task_overhead_s`` per task and ``cluster.stage_overhead_s``
    once). :class:`Schedule` prices every stage with this, and every exact model reads its
    compute seconds from it."""
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    n_tasks: dict[str, int] = defaultdict(int)
    for t in stage.tasks:
        n_tasks[t.device] += 1
        for k, f in cone(graph, stage.ops, t).flops_by_kind:
            kinds[t.device][k] += f
    return {d: compute_time(cluster.device(d), kinds[d], n, cluster.task_overhead_s, cluster.stage_overhead_s)
            for d, n in n_tasks.items()}


class Schedule:
    """The list schedule behind :func:`evaluate` (rules in the module doc), one stage at a time.

    ``evaluate`` runs every stage of a plan through one Schedule; a method may run a single
    routed stage through a fresh one to price it with exactly the same rules
    (see :func:`stage_span`).
    """

    def __init__(self, graph: LayerGraph, cluster: Cluster):
        self.graph, self.cluster = graph, cluster
        self.speed = {d.name: d.flops_per_s for d in cluster.devices}
        self.rank = {d.name: i for i, d in enumerate(cluster.devices)}
        self.events: list[Event] = []
        self.dev_free = {d: 0.0 for d in self.speed}
        self.link_free: dict[str, float] = defaultdict(float)
        self.busy: dict[str, float] = defaultdict(float)
        self.ready: dict[tuple[str, str], float] = {}     # (tensor, device) -> when it holds its piece
        self.link_bytes: dict[str, int] = defaultdict(int)
        self.flops = {d: 0 for d in self.speed}
        self.compute_s = {d: 0.0 for d in self.speed}
        self.messages = 0

    def copy(self) -> "Schedule":
        """An independent copy of the state, to price several continuations of one run of
        stages (each on its own copy) without running the shared prefix again."""
        c = Schedule.__new__(Schedule)
        c.graph, c.cluster, c.speed, c.rank = self.graph, self.cluster, self.speed, self.rank
        c.events = list(self.events)
        c.dev_free = dict(self.dev_free)
        c.link_free = defaultdict(float, self.link_free)
        c.busy = defaultdict(float, self.busy)
        c.ready = dict(self.ready)
        c.link_bytes = defaultdict(int, self.link_bytes)
        c.flops = dict(self.flops)
        c.compute_s = dict(self.compute_s)
        c.messages = self.messages
        return c

    def send(self, phase: str, ts: list[Transfer]) -> dict[str, float]:
        """Serve one phase's messages; returns the last arrival time per receiver."""
        msgs: dict[tuple[str, str], list[Transfer]] = defaultdict(list)
        for t in ts:
            msgs[(t.src, t.dst)].append(t)
        # a fixed service order (sender, then receiver, in the cluster's device order) rather than
        # order of readiness: the schedule stays a set of max-plus recurrences that an exact
        # model can state as linear constraints and reproduce to the last digit
        arrival: dict[str, float] = defaultdict(float)
        for src, dst in sorted(msgs, key=lambda k: (self.rank[k[0]], self.rank[k[1]])):
            group = msgs[(src, dst)]
            nb = sum(t.nbytes for t in group)
            res = "medium" if self.cluster.link == "shared" else f"{src}->{dst}"
            start = max(max(self.ready[(t.tensor, src)] for t in group), self.link_free[res])
            dur = transfer_time(nb, self.cluster.bw(src, dst), self.cluster.latency_s)
            self.link_free[res] = start + dur
            self.busy[res] += dur
            arrival[dst] = max(arrival[dst], start + dur)
            self.link_bytes[f"{src}->{dst}"] += nb
            self.messages += 1
            self.events.append(Event("send", res, start, start + dur, f"{phase}: {src}->{dst} {nb} B"))
        return arrival

    def run_stage(self, i: int, s: Stage) -> None:
        """Receive the stage's inputs, compute its tasks, and gather its output if it says so."""
        arrival = self.send(f"stage {i}", s.transfers)
        per_dev = stage_flops(self.graph, s)
        secs = stage_compute_s(self.graph, self.cluster, s)
        needs = task_needs(self.graph, s)
        for dev in sorted(per_dev, key=self.rank.__getitem__):
            own_ready = [self.ready[(tensor, dev)] for tensor in needs.get(dev, {}) if (tensor, dev) in self.ready]
            start = max([self.dev_free[dev], arrival.get(dev, 0.0)] + own_ready)
            dur = secs[dev]
            self.dev_free[dev] = start + dur
            self.busy[dev] += dur
            self.compute_s[dev] += dur
            self.flops[dev] += per_dev[dev]
            self.ready[(s.output, dev)] = start + dur
            self.events.append(Event("compute", dev, start, start + dur, f"stage {i}: {s.ops[0]}..{s.ops[-1]}"))
        if s.gather_to:
            arr = self.send(f"stage {i} gather", s.gather)
            g = s.gather_to
            done = max(arr.get(g, 0.0), self.ready.get((s.output, g), 0.0))
            for dev in per_dev:
                self.ready.pop((s.output, dev), None)
            self.ready[(s.output, g)] = done

    def finish(self, sink: str, output: str, final: list[Transfer]) -> float:
        """Send the output to ``sink``; returns the latency (s)."""
        arr = self.send("final", final)
        return max(arr.get(sink, 0.0), self.ready.get((output, sink), 0.0))


def stages_span(graph: LayerGraph, cluster: Cluster, stages: list[Stage], holder: str) -> float:
    """Seconds from the moment ``holder`` alone holds every tensor the run of ``stages`` reads
    from outside it (everything idle) until the run is done: the last stage's output gathered at
    its ``gather_to`` if set, else its last task finished. ``stages`` must be routed, in order
    (see :func:`route_stage`)."""
    sch = Schedule(graph, cluster)
    made = {s.output for s in stages}
    for s in stages:
        for tensor in {t.tensor for t in s.transfers} | {t for d in task_needs(graph, s).values() for t in d}:
            if tensor not in made:
                sch.ready[(tensor, holder)] = 0.0
    for k, s in enumerate(stages):
        sch.run_stage(k, s)
    last = stages[-1]
    if last.gather_to:
        return sch.ready[(last.output, last.gather_to)]
    return max(sch.dev_free.values())


def stage_span(graph: LayerGraph, cluster: Cluster, stage: Stage, holder: str) -> float:
    """:func:`stages_span` of one routed stage."""
    return stages_span(graph, cluster, [stage], holder)


def evaluate(plan: Plan, graph: LayerGraph, cluster: Cluster, check: bool = True) -> Report:
    """Latency, throughput, per-device compute and peak memory, bytes per link (see module doc).
    The plan is validated first unless ``check=False`` (the caller built it with
    :func:`build_plan` and validates the plan it keeps)."""
    if check:
        validate(plan, graph, cluster)
    sch = Schedule(graph, cluster)
    sch.ready[(graph.input_name, plan.source)] = 0.0
    for i, s in enumerate(plan.stages):
        sch.run_stage(i, s)
    latency = sch.finish(plan.sink, plan.output, plan.final)
    bottleneck = max(sch.busy.values()) if sch.busy else latency
    peak, wbytes = _memory(plan, graph)
    over = {d: peak[d] - cluster.device(d).memory_bytes for d in peak if peak[d] > cluster.device(d).memory_bytes}
    return Report(latency, 1.0 / bottleneck if bottleneck > 0 else float("inf"), dict(sch.compute_s), dict(sch.flops), peak,
                  wbytes, dict(sch.link_bytes), plan.comm_bytes, sch.messages, over, sch.events)


@dataclass
class MemoryTerms:
    """The parts of :func:`evaluate`'s peak memory, in bytes, so that an exact model can state
    them: ``stage_act[i][d]`` is device d's activation bytes while stage i runs (pieces of
    earlier tensors still to be read + bytes received for the stage + its task outputs + the
    largest extra working set of one task), ``final_act[sink]`` the sink's while the output
    is gathered to it, and ``weights[(d, op)]`` the bytes of ``op``'s parameters d holds.
    A device's peak = max(stage_act, final_act) + the sum of its weights."""

    stage_act: list[dict[str, int]]
    final_act: dict[str, int]
    weights: dict[tuple[str, str], int]


def memory_terms(plan: Plan, graph: LayerGraph, start_tensor: Optional[str] = None) -> MemoryTerms:
    """Per-stage activation bytes and per-op weight bytes of every device (see :class:`MemoryTerms`).

    ``start_tensor``: the tensor the source holds (whole) before the first stage; the model's
    input by default. A method that prices a run of stages starting at a cut point passes the
    tensor crossing it."""
    devices = [d["name"] for d in plan.cluster["devices"]]
    # weights: union of slices per (device, op)
    rects: dict[tuple[str, str], list[tuple[int, int, int, int]]] = defaultdict(list)
    for s in plan.stages:
        for key, rect in _stage_memory(graph, s)[0]:
            rects[key].append(rect)
    known = graph.__dict__.setdefault("_weight_bytes_cache", {})     # (op, its slices) -> bytes
    weights = {}
    for key, rs in rects.items():
        k = (key[1], tuple(rs))
        if k not in known:
            known[k] = weight_bytes(graph.op[key[1]], rs)
        weights[key] = known[k]

    # activations
    last_use: dict[str, int] = {}
    for i, s in enumerate(plan.stages):
        for t in s.transfers:
            last_use[t.tensor] = i
        for n in s.ops:
            for inp in graph.op[n].inputs:
                if inp not in s.ops:
                    last_use[inp] = i
    last_use[plan.output] = len(plan.stages)
    held: dict[str, list[tuple[str, int, int]]] = defaultdict(list)   # device -> (tensor, bytes, until)
    start = start_tensor or graph.input_name
    held[plan.source].append((start, graph.tensor_bytes(start), last_use.get(start, 0)))
    stage_act: list[dict[str, int]] = []

    def live(dev: str, i: int) -> int:
        return sum(b for _, b, until in held[dev] if until >= i)

    for i, s in enumerate(plan.stages):
        recv: dict[str, int] = defaultdict(int)
        for t in s.transfers:
            recv[t.dst] += t.nbytes
        for d in devices:      # what no later stage reads again is dropped for good
            held[d] = [h for h in held[d] if h[2] >= i]
        _, outs, work = _stage_memory(graph, s)
        act = {d: live(d, i) + recv[d] + outs.get(d, 0) + work.get(d, 0) for d in devices}
        until = last_use.get(s.output, i)
        if s.gather_to:
            g = s.gather_to
            full = graph.tensor_bytes(s.output)
            got = sum(t.nbytes for t in s.gather)
            act[g] = max(act[g], live(g, i) + outs.get(g, 0) + got)
            held[g].append((s.output, full, until))      # the others drop their pieces
        else:
            for d in devices:
                if outs.get(d):
                    held[d].append((s.output, outs[d], until))
        stage_act.append(act)
    n = len(plan.stages)
    final = {plan.sink: live(plan.sink, n) + sum(t.nbytes for t in plan.final)}
    return MemoryTerms(stage_act, final, weights)


def _stage_memory(graph: LayerGraph, s: Stage) -> tuple[list, dict[str, int], dict[str, int]]:
    """What stage ``s``'s tasks alone add to :func:`memory_terms` (cached per graph on the ops and
    tasks): the weight slices ``((device, op), (c0, c1, in0, in1))``, each device's output bytes
    (one partial per device when the stage sums partials) and its largest working set beyond a
    task's own output, in bytes."""
    key = (tuple(s.ops), tuple(s.tasks), s.partial)
    cache = graph.__dict__.setdefault("_stage_memory_cache", {})
    if key in cache:
        return cache[key]
    rects: list = []
    outs: dict[str, int] = defaultdict(int)
    work: dict[str, int] = defaultdict(int)
    for t in s.tasks:
        c = cone(graph, s.ops, t)
        for name in s.ops:
            op = graph.op[name]
            r = c.regions[name]
            if r.empty:
                continue
            if op.kind == "conv":
                ci = t.in_channels if (name == s.output and t.in_channels) else op.conv_in_channels(r.c0, r.c1)
                rects.append(((t.device, name), (r.c0, r.c1, ci[0], ci[1])))
            elif op.kind == "deconv":
                rects.append(((t.device, name), (r.c0, r.c1, 0, op.in_chw[0])))
            elif op.kind in ("linear", "bn"):
                rects.append(((t.device, name), (r.c0, r.c1, 0, 1)))
        if not (s.partial and outs[t.device]):
            outs[t.device] += nbytes_of(graph, t.box)
        # the working set beyond the task's own output, which ``outs`` already counts
        work[t.device] = max(work[t.device], c.work_peak_bytes - nbytes_of(graph, t.box))
    cache[key] = (rects, dict(outs), dict(work))
    return cache[key]


def _memory(plan: Plan, graph: LayerGraph) -> tuple[dict[str, int], dict[str, int]]:
    """Peak bytes per device (weights + largest live activation set) and weight bytes per device."""
    terms = memory_terms(plan, graph)
    devices = [d["name"] for d in plan.cluster["devices"]]
    wb = {d: 0 for d in devices}
    for (dev, _), b in terms.weights.items():
        wb[dev] += b
    peak = {d: max([0, terms.final_act.get(d, 0)] + [a[d] for a in terms.stage_act]) for d in devices}
    return {d: peak[d] + wb[d] for d in devices}, wb
