"""Run a plan for real: one process per device, torch.distributed (gloo), paced to the plan's network.

Rank ``r`` plays the ``r``-th device of the plan's cluster. Every rank rebuilds the model from
the plan (zoo name, input shape and seed, so the weights are the same everywhere), the source
rank holds the input, and the ranks then carry out the plan stage by stage:

- a *phase* is a stage's input transfers, its gather, or the final send to the sink. In each
  phase, all of the plan's transfers from one device to another travel as **one message**
  (the cost model's unit: ``latency_s + bytes / bandwidth``): the sliced boxes, flattened and
  concatenated in plan order, sent with ``isend``/``irecv``; a 16-byte header carries the time
  the data was ready. Partial sums travel the same way and the reader adds them up, as the plan
  says (see "Left out" below).
- each rank computes its own tasks with the same region executor as :func:`partopt.verify.verify`
  (exact input windows, channel slices, partial sums) and keeps only what it computed or received.
- the sink assembles the output and compares it with the unsplit ``module(x)`` (for a model
  read from an ONNX file, with ``onnxruntime``'s output of the file).

**Network emulation** (on by default): on one machine loopback is far faster than a Wi-Fi link,
so the receiver of a message holds it until the time the modelled network would deliver it:
``start = max(ready, link free)`` and ``arrival = start + latency_s + bytes / (bandwidth x
scale)``. On a ``mesh`` each ordered pair is its own link (tracked by its receiver); on a
``shared`` medium one message at a time, reserved through the process group's key-value store.
Real overheads longer than the modelled time are not hidden: nothing waits less than it took.
With ``pace_compute`` a rank also sleeps after a stage's compute until the modelled compute
time has passed, which emulates devices slower than this machine.

**Measurement.** Per rank: compute seconds (its tasks, wall clock), seconds waiting for
messages, payload bytes and messages sent and received; end to end: from a barrier to the sink
holding the output, ``warmup`` runs discarded, the median of ``repeat`` runs reported beside
:func:`partopt.plan.evaluate`'s prediction on the same cluster (bandwidths times the scale).

**Faults.** :func:`run` validates the plan and the options before any process starts
(:class:`~partopt.errors.PlanError`). Each rank writes a one-line status (``computing stage 3``,
``waiting for rank 2 in stage 3``) to a folder the launcher watches. A rank that exits with an
error, or a run in which no rank makes progress for ``timeout_s``, stops every process and raises
:class:`~partopt.errors.RunError` naming the rank at fault (the one the others were waiting
for). No process is left behind: the launcher kills and reaps every child before it returns.

**Several machines.** The worker is ``python -m partopt.runtime PLAN --out RESULT.json`` and
rendezvous through the usual ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE``
variables, so ``torchrun --nproc-per-node N -m partopt.runtime plan.json --out r.json`` (or one
``torchrun`` per machine with ``--nnodes``) runs the same code; pass ``--no-emulate`` on a real
network. Rank 0 writes the result.

**Reductions.** By default partial sums travel as the plan's point-to-point messages and the
reader adds them up, so every byte is the plan's and is paced. ``reduce="collective"`` carries
them out as ``dist.reduce`` calls instead (one per reader and box, on the group of the holders
and the reader; the reader contributes zeros and adds its own partial): the output is the same,
but gloo moves the bytes by its own algorithm, unmeasured and unpaced (bytes are counted as the
plan's, what each holder hands to the collective).

Example (two processes, a few seconds):
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> from partopt.methods.baselines import coedge
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> plan = coedge(g, preset("pi4x2"), model="lenet5").plan
    >>> res = run(plan, RunOptions(repeat=1, warmup=0, emulate=False))
    >>> res.ok, res.bytes_moved == plan.comm_bytes
    (True, True)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Optional

import torch

from .cluster import Cluster
from .cost import transfer_time
from .errors import PartoptError, PlanError, RunError
from .geometry import Box
from .graph import LayerGraph
from .plan import Plan, Transfer, cone, evaluate, stage_compute_s, validate
from .verify import REL_TOL, _Missing, _slice, assemble_region, reference_of, run_block

HEADER = 2                 # float64 header: [time the data was ready (s, wall clock), payload elements]
FAULTS = ("die", "hang")


@dataclass(frozen=True)
class RunOptions:
    """How to run a plan. Seconds; ``bandwidth_scale`` multiplies every link's bytes/s."""

    bandwidth_scale: float = 1.0
    emulate: bool = True          # pace messages to the cluster's links (one machine)
    pace_compute: bool = False    # also stretch compute to the cluster's FLOP/s
    repeat: int = 3               # timed runs (the median is reported)
    warmup: int = 1               # untimed runs before them
    threads: int = 1              # torch threads per rank
    timeout_s: float = 60.0       # no rank making progress this long = hung
    fault: Optional[str] = None   # "RANK:die" or "RANK:hang": inject a fault (to test the handling)
    reduce: str = "p2p"           # partial sums: "p2p" (the plan's messages) or "collective" (dist.reduce)

    def check(self, world: int) -> None:
        """Raise :class:`PartoptError` for options that cannot run."""
        if not (self.bandwidth_scale > 0 and self.bandwidth_scale < float("inf")):
            raise PartoptError(f"bandwidth scale must be a positive number, got {self.bandwidth_scale!r}")
        if self.repeat < 1 or self.warmup < 0:
            raise PartoptError(f"repeat must be >= 1 and warmup >= 0, got {self.repeat} and {self.warmup}")
        if self.threads < 1:
            raise PartoptError(f"threads must be >= 1, got {self.threads}")
        if not self.timeout_s > 0:
            raise PartoptError(f"timeout must be > 0 seconds, got {self.timeout_s!r}")
        if self.fault is not None:
            parse_fault(self.fault, world)
        if self.reduce not in REDUCE_MODES:
            raise PartoptError(f"reduce must be one of {', '.join(REDUCE_MODES)}, got {self.reduce!r}")

    def args(self) -> list[str]:
        """The worker's command-line flags for these options."""
        a = ["--bandwidth-scale", repr(self.bandwidth_scale), "--repeat", str(self.repeat),
             "--warmup", str(self.warmup), "--threads", str(self.threads), "--timeout", repr(self.timeout_s)]
        a += [] if self.emulate else ["--no-emulate"]
        a += ["--pace-compute"] if self.pace_compute else []
        a += ["--fault", self.fault] if self.fault else []
        a += ["--reduce", self.reduce]
        return a


REDUCE_MODES = ("p2p", "collective")


def reductions(transfers: list[Transfer]) -> list[tuple[tuple[str, str, tuple[int, ...]], list[Transfer]]]:
    """The partial-sum transfers of one phase grouped into reductions: one per (tensor, reader,
    box), with the transfers of every holder that sends that box; in a fixed order (every rank
    walks the same list, so their collective calls match)."""
    groups: dict[tuple[str, str, tuple[int, ...]], list[Transfer]] = defaultdict(list)
    for t in transfers:
        if t.partial:
            groups[(t.tensor, t.dst, tuple(t.box.to_list()))].append(t)
    return sorted(groups.items())


def members(ts: list[Transfer], dst: str, rank: dict[str, int]) -> tuple[int, ...]:
    """The ranks of one reduction: every holder that sends and the reader."""
    return tuple(sorted({rank[t.src] for t in ts} | {rank[dst]}))


def parse_fault(text: str, world: int) -> tuple[int, str]:
    """'2:hang' -> (2, 'hang'); raises PartoptError when malformed or out of range."""
    parts = text.split(":")
    if len(parts) != 2 or parts[1] not in FAULTS or not parts[0].isdigit() or int(parts[0]) >= world:
        raise PartoptError(f"fault must be RANK:die or RANK:hang with RANK < {world}, got {text!r}")
    return int(parts[0]), parts[1]


@dataclass
class RankRecord:
    """One rank's measurements (median over the timed runs) beside the cost model's prediction."""

    rank: int
    device: str
    compute_s: float
    predicted_compute_s: float
    wait_s: float
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    planned_bytes_sent: int
    planned_bytes_received: int


@dataclass
class RunResult:
    """What a distributed run measured. Seconds and bytes; ``ratio`` = measured / predicted latency."""

    model: str
    method: str
    world: int
    cluster: str
    emulate: bool
    bandwidth_scale: float
    ok: bool
    reason: str
    max_abs_err: float
    max_rel_err: float
    latency_s: float
    latencies_s: list[float]
    predicted_latency_s: float
    ratio: float
    bytes_moved: int
    bytes_planned: int
    link_bytes: dict[str, int]
    planned_link_bytes: dict[str, int]
    ranks: list[RankRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields, with ``ok`` under ``verified``: the same key names as ``solve --json``
        for the same facts (``verified``, ``latency_s``, ``max_rel_err``), plus
        ``predicted_latency_s`` and ``ratio``."""
        d = asdict(self)
        d["verified"] = d.pop("ok")
        return d


# ---------------------------------------------------------------------------------------
# The launcher
# ---------------------------------------------------------------------------------------
def prepare(plan: Plan) -> tuple[torch.nn.Module, torch.Tensor, LayerGraph, Cluster]:
    """Rebuild the plan's model, input, graph and cluster and check the plan against them
    (raises :class:`PlanError` / :class:`PartoptError` for a plan that cannot run)."""
    from .zoo import example_input, load_model
    cluster = Cluster.from_dict(plan.cluster, where="plan's cluster")
    module, shape, _ = load_model(plan.model, tuple(plan.input_shape), plan.seed)
    x = example_input(shape, plan.seed)
    graph = LayerGraph.from_module(module, x)
    validate(plan, graph, cluster)
    return module, x, graph, cluster


def run(plan: Plan | str, options: RunOptions = RunOptions(), world: Optional[int] = None) -> RunResult:
    """Run ``plan`` (a Plan or a plan file) with one local process per device; see the module doc.

    Raises PlanError/PartoptError before any process starts when the plan, ``world`` or the
    options are wrong, and RunError when a rank dies or hangs.
    """
    if isinstance(plan, str):
        plan = Plan.load(plan)
    _, _, graph, cluster = prepare(plan)
    n = len(cluster)
    if world is not None and world != n:
        raise PlanError(f"the plan's cluster {cluster.name!r} has {n} devices ({', '.join(cluster.names)}); "
                        f"it runs on exactly {n} ranks, not {world}")
    options.check(n)
    predicted = evaluate(plan, graph, cluster.scaled(options.bandwidth_scale))
    with tempfile.TemporaryDirectory(prefix="partopt-run-") as d:
        path, out = os.path.join(d, "plan.json"), os.path.join(d, "result.json")
        plan.save(path)
        data = _launch(path, out, d, n, options, cluster)
    return _result(plan, cluster, options, data, predicted)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(path: str, out: str, d: str, world: int, options: RunOptions, cluster: Cluster) -> dict[str, Any]:
    port = _free_port()
    procs: list[subprocess.Popen] = []
    errs = []
    try:
        for r in range(world):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
                   "LOCAL_RANK": str(r), "WORLD_SIZE": str(world), "OMP_NUM_THREADS": str(options.threads)}
            err = open(os.path.join(d, f"rank{r}.err"), "w")
            errs.append(err)
            procs.append(subprocess.Popen([sys.executable, "-m", "partopt.runtime", path, "--out", out,
                                           "--status-dir", d, *options.args()],
                                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err))
        _watch(procs, d, options.timeout_s, cluster)
    finally:
        for p in procs:            # nothing is left behind, whatever happened
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        for e in errs:
            e.close()
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"the ranks finished but rank 0 wrote no result ({e})") from None


def _status(d: str, r: int) -> tuple[str, float]:
    p = os.path.join(d, f"rank{r}.status")
    try:
        with open(p) as f:
            return f.read().strip(), os.path.getmtime(p)
    except OSError:
        return "starting", 0.0


def _waited_for(status: str) -> Optional[int]:
    """The rank a status line says this rank waits for, if any."""
    if "waiting for rank " in status:
        return int(status.split("waiting for rank ", 1)[1].split()[0])
    return None


def _culprits(statuses: dict[int, str], among: list[int]) -> list[int]:
    """The ranks at fault: those of ``among`` that were not waiting for anyone, else the ranks
    the waiting ones waited for, else ``among`` itself."""
    busy = [r for r in among if not statuses.get(r, "").startswith("waiting")]
    named = sorted({_waited_for(statuses.get(r, "")) for r in among} - {None})
    return busy or named or among


def _stderr_tail(d: str, r: int) -> str:
    try:
        with open(os.path.join(d, f"rank{r}.err")) as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


#: Seconds a rank may take to write its first status (start Python, import torch) before the
#: no-progress rule applies to it; a short ``timeout_s`` otherwise blamed a rank still starting
#: on a slow or loaded machine.
STARTUP_S = 120.0


def _watch(procs: list[subprocess.Popen], d: str, timeout_s: float, cluster: Cluster) -> None:
    """Poll the ranks until all exit 0; raise RunError naming the rank at fault otherwise. Until
    every rank has written a status the limit is the larger of ``timeout_s`` and
    :data:`STARTUP_S` seconds, then ``timeout_s`` without progress."""
    names = cluster.names
    last_change = time.time()
    seen: dict[int, float] = {}
    while True:
        codes = [p.poll() for p in procs]
        if all(c == 0 for c in codes):
            return
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            time.sleep(0.3)                         # let the peers' errors land too
            codes = [p.poll() for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            statuses = {r: _status(d, r)[0] for r in range(len(procs))}
            r = _culprits(statuses, failed)[0]
            code = codes[r]
            how = (f"was killed by signal {-code}" if code is not None and code < 0 else
                   f"exited with code {code}" if code is not None else "stopped")
            others = sorted(set(failed) - {r})
            tail = _stderr_tail(d, r)
            raise RunError(f"rank {r} ({names[r]}) {how} ({statuses[r]})"
                           + (f"; ranks {', '.join(map(str, others))} stopped too" if others else "")
                           + (f"; its last error line: {tail}" if tail else ""))
        for r in range(len(procs)):
            _, mtime = _status(d, r)
            if mtime and mtime != seen.get(r):
                seen[r] = mtime
                last_change = time.time()
        limit = timeout_s if len(seen) == len(procs) else max(timeout_s, STARTUP_S)
        if time.time() - last_change > limit:
            statuses = {r: _status(d, r)[0] for r in range(len(procs)) if codes[r] is None}
            r = _culprits(statuses, sorted(statuses))[0]
            waiting = sorted(q for q, s in statuses.items() if q != r and s.startswith("waiting"))
            raise RunError(f"rank {r} ({names[r]}) hung: no rank made progress for {limit:g} s "
                           f"(rank {r}: {statuses.get(r, 'exited')})"
                           + (f"; ranks {', '.join(map(str, waiting))} were waiting" if waiting else ""))
        time.sleep(0.05)


def _result(plan: Plan, cluster: Cluster, options: RunOptions, data: dict[str, Any], predicted) -> RunResult:
    ranks = data["ranks"]
    planned_sent: dict[str, int] = defaultdict(int)
    planned_recv: dict[str, int] = defaultdict(int)
    for t in plan.all_transfers():
        planned_sent[t.src] += t.nbytes
        planned_recv[t.dst] += t.nbytes
    link: dict[str, int] = defaultdict(int)
    for rk in ranks:
        for k, v in rk["link_bytes"].items():
            link[k] += v
    moved = sum(link.values())
    sink = next(rk for rk in ranks if rk["device"] == plan.sink)
    lat = sink["latencies_s"]
    med = statistics.median(lat)
    reasons = list(sink["problems"]) + [p for rk in ranks if rk is not sink for p in rk["problems"]]
    if not sink["max_rel_err"] <= REL_TOL:
        reasons.append(f"relative error {sink['max_rel_err']:.3g} > {REL_TOL:g}")
    if moved != plan.comm_bytes:
        reasons.append(f"moved {moved} bytes, plan says {plan.comm_bytes}")
    if dict(link) != {k: v for k, v in predicted.link_bytes.items() if v}:
        reasons.append("bytes per link differ from the plan's")
    recs = [RankRecord(rk["rank"], rk["device"], rk["compute_s"], predicted.compute_s.get(rk["device"], 0.0),
                       rk["wait_s"], rk["bytes_sent"], rk["bytes_received"], rk["messages_sent"],
                       planned_sent[rk["device"]], planned_recv[rk["device"]]) for rk in ranks]
    return RunResult(plan.model, plan.method, len(ranks), cluster.name, options.emulate, options.bandwidth_scale,
                     not reasons, "; ".join(reasons), sink["max_abs_err"], sink["max_rel_err"], med, lat,
                     predicted.latency_s, med / predicted.latency_s if predicted.latency_s > 0 else float("nan"),
                     moved, plan.comm_bytes, dict(link), dict(predicted.link_bytes), recs)


# ---------------------------------------------------------------------------------------
# One rank
# ---------------------------------------------------------------------------------------
class _Network:
    """When the emulated network delivers a message to this rank (wall-clock seconds)."""

    def __init__(self, cluster: Cluster, me: str, scale: float, store, key: str):
        self.cluster, self.me, self.scale, self.store, self.key = cluster, me, scale, store, key
        self.link_free: dict[str, float] = defaultdict(float)

    def arrival(self, src: str, ready: float, nbytes: int) -> float:
        dur = transfer_time(nbytes, self.cluster.bw(src, self.me) * self.scale, self.cluster.latency_s)
        if self.cluster.link == "shared":
            while True:                                  # reserve the medium: compare-and-set its free time
                cur = self.store.get(self.key)
                start = max(ready, float(cur))
                new = repr(start + dur).encode()
                if self.store.compare_set(self.key, cur, new) == new:
                    return start + dur
        start = max(ready, self.link_free[src])
        self.link_free[src] = start + dur
        return start + dur


class _Rank:
    """Executes one run of a plan as device ``me``; keeps only its own pieces."""

    def __init__(self, plan: Plan, graph: LayerGraph, mods: dict, x: torch.Tensor, cluster: Cluster, me: str,
                 options: RunOptions, net: Optional[_Network], status, tag0: int, groups: Optional[dict] = None):
        import torch.distributed as dist
        self.dist = dist
        self.plan, self.graph, self.mods, self.x, self.cluster, self.me = plan, graph, mods, x, cluster, me
        self.options, self.net, self.status, self.tag = options, net, status, tag0
        self.groups = groups or {}     # reduce="collective": member ranks -> process group
        self.rank = {d: i for i, d in enumerate(cluster.names)}
        self.store: dict[str, list[tuple[Box, torch.Tensor, bool]]] = defaultdict(list)
        self.holders: dict[str, Optional[set[str]]] = {}
        if plan.source == me:
            self.store[graph.input_name] = [(Box.full(graph.tensor_chw(graph.input_name)), x, False)]
        self.compute_s = self.wait_s = 0.0
        self.bytes_sent = self.bytes_received = self.messages_sent = 0
        self.link_bytes: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []
        self.waiting = True

    # -- messages ------------------------------------------------------------------------
    def _piece(self, t: Transfer) -> torch.Tensor:
        for box, data, partial in self.store.get(t.tensor, []):
            if partial == t.partial and box.contains(t.box):
                return _slice(data, box, t.box)
        raise _Missing(f"{self.me} does not hold box {t.box.to_list()} of {t.tensor} it must send")

    def phase(self, label: str, transfers: list[Transfer]) -> dict[str, list[tuple[str, Box, torch.Tensor]]]:
        """Send and receive one phase's messages; returns tensor -> [(sender, box, data)] for this rank.

        With ``reduce="collective"`` the partial-sum transfers are carried out as ``dist.reduce``
        calls instead (:meth:`reduce`); a reduced piece's sender is the frozenset of its holders."""
        collective = self.options.reduce == "collective"
        msgs: dict[tuple[str, str], list[Transfer]] = defaultdict(list)
        for t in transfers:
            if not (collective and t.partial):
                msgs[(t.src, t.dst)].append(t)
        self.tag += 2
        sends, recvs = [], []
        for (src, dst), ts in msgs.items():
            if src == self.me:
                payload = torch.cat([self._piece(t).reshape(-1) for t in ts]).contiguous()
                header = torch.tensor([time.time(), float(payload.numel())], dtype=torch.float64)
                sends.append((dst, header, payload, self.dist.isend(header, self.rank[dst], tag=self.tag),
                              self.dist.isend(payload, self.rank[dst], tag=self.tag + 1)))
                nb = payload.numel() * payload.element_size()
                self.bytes_sent += nb
                self.messages_sent += 1
                self.link_bytes[f"{src}->{dst}"] += nb
        for (src, dst), ts in msgs.items():
            if dst == self.me:
                n = sum(t.box.volume for t in ts) * self.x.shape[0]
                header, payload = torch.empty(HEADER, dtype=torch.float64), torch.empty(n, dtype=self.x.dtype)
                recvs.append((src, ts, header, payload, self.dist.irecv(header, self.rank[src], tag=self.tag),
                              self.dist.irecv(payload, self.rank[src], tag=self.tag + 1)))
        inbox: dict[str, list[tuple[str, Box, torch.Tensor]]] = defaultdict(list)
        t0 = time.perf_counter()
        for src, ts, header, payload, wh, wp in recvs:
            if not (wh.is_completed() and wp.is_completed()):   # a status line only when it blocks
                self.status(f"waiting for rank {self.rank[src]} ({src}) in {label}")
                self.waiting = True
            wh.wait()
            wp.wait()
            if int(header[1]) != payload.numel():
                self.problems.append(f"{label}: {src}->{self.me} sent {int(header[1])} elements, planned {payload.numel()}")
            self.bytes_received += payload.numel() * payload.element_size()
            if self.net is not None:
                due = self.net.arrival(src, float(header[0]), payload.numel() * payload.element_size())
                time.sleep(max(0.0, due - time.time()))
            off = 0
            for t in ts:
                k = t.box.volume * self.x.shape[0]
                inbox[t.tensor].append((src, t.box, payload[off:off + k].view(self.x.shape[0], *t.box.shape)))
                off += k
        for dst, _, _, wh, wp in sends:        # a send completes once its receiver has taken it
            if not (wh.is_completed() and wp.is_completed()):
                self.status(f"waiting for rank {self.rank[dst]} ({dst}) to take its message in {label}")
                self.waiting = True
            wh.wait()
            wp.wait()
        if collective:
            self.reduce(label, transfers, inbox)
        self.wait_s += time.perf_counter() - t0
        return inbox

    def reduce(self, label: str, transfers: list[Transfer], inbox) -> None:
        """Partial sums by collectives: for each reduction (:func:`reductions`), every holder that
        sends the box contributes its partial and the reader contributes zeros (it adds its own
        partial when it assembles), through ``dist.reduce`` on the group of those ranks. Bytes
        are counted as the plan's (what each holder hands to the collective); gloo moves them by
        its own algorithm, which is neither measured nor paced."""
        for (tensor, dst, _), ts in reductions(transfers):
            group = members(ts, dst, self.rank)
            if self.rank[self.me] not in group:
                continue
            box = ts[0].box
            mine = [t for t in ts if t.src == self.me]
            if mine:
                data = self._piece(mine[0]).contiguous().clone()
                self.bytes_sent += mine[0].nbytes
                self.messages_sent += 1
                self.link_bytes[f"{self.me}->{dst}"] += mine[0].nbytes
            else:
                data = torch.zeros((self.x.shape[0], *box.shape), dtype=self.x.dtype)
            self.status(f"in a reduce of {tensor} to rank {self.rank[dst]} ({dst}) in {label}")
            self.waiting = True
            self.dist.reduce(data, dst=self.rank[dst], op=self.dist.ReduceOp.SUM, group=self.groups[group])
            if self.me == dst:
                self.bytes_received += sum(t.nbytes for t in ts)
                inbox[tensor].append((frozenset(t.src for t in ts), box, data))

    def assemble(self, tensor: str, need: Box, inbox) -> torch.Tensor:
        own = [(b, d) for b, d, _ in self.store.get(tensor, [])]
        holders = self.holders.get(tensor)
        bias = None
        if holders is not None:
            b = self.mods[self.graph.op[tensor].target].bias
            bias = None if b is None else b[need.c0:need.c1]
        return assemble_region(tensor, self.me, need, own, inbox.get(tensor, []), self.x, holders, bias)

    # -- the plan ------------------------------------------------------------------------
    def execute(self) -> Optional[torch.Tensor]:
        g = self.graph
        for i, s in enumerate(self.plan.stages):
            inbox = self.phase(f"stage {i}", s.transfers)
            if self.waiting:          # the last status said "waiting": say it no longer is
                self.status(f"computing stage {i}")
                self.waiting = False
            t0 = time.perf_counter()
            mine = []
            for task in s.tasks:
                if task.device != self.me:
                    continue
                c = cone(g, s.ops, task)
                ext = {t: (self.assemble(t, b, inbox), b) for t, b in c.needs.items() if not b.empty}
                mine.append((task.box, run_block(g, self.mods, s.ops, task, ext)))
            if s.partial and len(mine) > 1:   # one partial per device, added up before anything is sent
                total = mine[0][1]
                for _, d in mine[1:]:
                    total = total + d
                mine = [(mine[0][0], total)]
            if self.options.pace_compute and mine:
                time.sleep(max(0.0, stage_compute_s(g, self.cluster, s).get(self.me, 0.0)
                               - (time.perf_counter() - t0)))
            self.compute_s += time.perf_counter() - t0
            self.store[s.output] = [(b, d, s.partial) for b, d in mine]
            self.holders[s.output] = {t.device for t in s.tasks} if s.partial else None
            if s.gather_to:
                gin = self.phase(f"stage {i} gather", s.gather)
                if self.me == s.gather_to:
                    full = Box.full(g.tensor_chw(s.output))
                    data = self.assemble(s.output, full, gin)
                    self.store[s.output] = [(full, data, False)]
                else:
                    self.store[s.output] = []
                self.holders[s.output] = None
        fin = self.phase("final", self.plan.final)
        if self.me != self.plan.sink:
            return None
        return self.assemble(self.plan.output, Box.full(g.tensor_chw(self.plan.output)), fin)


def _worker(args) -> int:
    """Entry point of one rank (``python -m partopt.runtime``); returns the exit code."""
    import torch.distributed as dist
    from .zoo import example_input, load_model
    status_dir = args.status_dir

    def status(text: str) -> None:
        if status_dir:
            p = os.path.join(status_dir, f"rank{rank}.status")
            with open(p + ".tmp", "w") as f:
                f.write(text)
            os.replace(p + ".tmp", p)

    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if v not in os.environ]
    if missing:
        print(f"partopt.runtime: error: set {', '.join(missing)} (or start through `partopt run` or torchrun)",
              file=sys.stderr)
        return 2
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    status("loading the model")
    torch.set_num_threads(args.threads)
    options = RunOptions(args.bandwidth_scale, not args.no_emulate, args.pace_compute, args.repeat, args.warmup,
                         args.threads, args.timeout, args.fault, args.reduce)
    plan = Plan.load(args.plan)
    cluster = Cluster.from_dict(plan.cluster, where="plan's cluster")
    if world != len(cluster):
        print(f"partopt.runtime: error: the plan has {len(cluster)} devices, WORLD_SIZE is {world}", file=sys.stderr)
        return 2
    module, shape, _ = load_model(plan.model, tuple(plan.input_shape), plan.seed)
    module.eval()
    x = example_input(shape, plan.seed)
    graph = LayerGraph.from_module(module, x)
    mods = dict(module.named_modules())
    me = cluster.names[rank]
    fault = parse_fault(options.fault, world) if options.fault else None
    status("joining the process group")
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=options.timeout_s + 15))
    try:
        store = dist.distributed_c10d._get_default_store() if cluster.link == "shared" else None
        groups = {}
        if options.reduce == "collective":      # every rank creates every group, in the same order
            names = {d: i for i, d in enumerate(cluster.names)}
            phases = [p for s in plan.stages for p in (s.transfers, s.gather)] + [plan.final]
            for ts in phases:
                for (_, dst, _), group in reductions(ts):
                    ranks = members(group, dst, names)
                    if ranks not in groups:
                        groups[ranks] = dist.new_group(ranks=list(ranks))
        lat, outs = [], None
        recs = []
        ntags = 2 * (3 * len(plan.stages) + 2)
        for k in range(options.warmup + options.repeat):
            key = f"partopt/medium/{k}"
            if store is not None and rank == 0:
                store.set(key, "0.0")
            status(f"waiting for all ranks at the barrier before run {k}")
            dist.barrier()
            if fault is not None and fault[0] == rank and k == options.warmup:
                status(f"injected fault: {fault[1]}")
                if fault[1] == "die":
                    os._exit(3)
                while True:
                    time.sleep(3600)
            net = _Network(cluster, me, options.bandwidth_scale, store, key) if options.emulate else None
            ex = _Rank(plan, graph, mods, x, cluster, me, options, net, status, k * ntags, groups)
            t0 = time.time()
            with torch.no_grad():
                outs = ex.execute()
            t1 = time.time()
            if k >= options.warmup:
                lat.append(t1 - t0)
                recs.append(ex)
        status("checking the output")
        err_abs = err_rel = 0.0
        problems = list(recs[-1].problems)
        if me == plan.sink:
            with torch.no_grad():
                ref = reference_of(module, x)      # onnxruntime's output for a model read from ONNX
            out = outs.reshape(ref.shape)
            err_abs = float((out - ref).abs().max())
            err_rel = err_abs / max(float(ref.abs().max()), 1e-30)
        last = recs[-1]
        rec = {"rank": rank, "device": me, "latencies_s": lat,
               "compute_s": statistics.median(r.compute_s for r in recs),
               "wait_s": statistics.median(r.wait_s for r in recs),
               "bytes_sent": last.bytes_sent, "bytes_received": last.bytes_received,
               "messages_sent": last.messages_sent, "link_bytes": dict(last.link_bytes),
               "max_abs_err": err_abs, "max_rel_err": err_rel, "problems": problems}
        status("gathering the results")
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(rec, gathered, dst=0)
        if rank == 0:
            text = json.dumps({"ranks": gathered})
            if args.out:
                with open(args.out + ".tmp", "w") as f:
                    f.write(text)
                os.replace(args.out + ".tmp", args.out)
            else:
                print(text)
        status("done")
        return 0
    except _Missing as e:
        status(f"failed: {e}")
        print(f"partopt.runtime: rank {rank} ({me}): {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a peer that died or timed out surfaces here as a gloo error
        print(f"partopt.runtime: rank {rank} ({me}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 1
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m partopt.runtime",
                                description="One rank of a partopt plan (started by `partopt run` or torchrun).")
    p.add_argument("plan")
    p.add_argument("--out", help="rank 0 writes the result JSON here (default: stdout)")
    p.add_argument("--status-dir", help="write this rank's status line here (for the launcher)")
    p.add_argument("--bandwidth-scale", type=float, default=1.0)
    p.add_argument("--no-emulate", action="store_true", help="do not pace messages (a real network)")
    p.add_argument("--pace-compute", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--fault")
    p.add_argument("--reduce", choices=REDUCE_MODES, default="p2p")
    return p


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    sys.exit(_worker(_parser().parse_args()))
