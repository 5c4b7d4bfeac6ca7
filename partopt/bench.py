"""Sweeps: models x clusters x methods x {heuristic, exact} x solvers, one CSV row an instance.

A sweep is stated in a TOML file (see ``benchmarks/default.toml``)::

    name = "default"
    out = "results/default.csv"     # relative to the config file
    time_limit_s = 60               # per exact instance, seconds
    threads = 1                     # solver threads per instance
    verify = true                   # execute every plan in torch against the unsplit model
    models = ["alexnet", "resnet18"] # zoo names
    clusters = ["pi4x2", "pi4x4"]   # presets or .json/.toml files (relative to the config)
    solvers = ["highs", "cbc", "cpsat"]

    [[method]]
    name = "iop"                    # every key below is optional
    modes = ["heuristic", "exact"]
    models = ["alexnet"]            # overrides the sweep's lists for this method
    solvers = ["highs", "cpsat"]
    options = { grid = [4, 4] }     # keyword options of the method (nptp: grid; dn2pciot: grouping, objective)

:func:`load_config` validates the file (:class:`~partopt.errors.ConfigError` names the key at
fault); :func:`instances` expands it; :func:`run_instance` solves one instance, verifies the plan
in torch and returns its row (:data:`FIELDS`); :func:`run_bench` runs the instances not already
in the CSV (resumable: rows are appended as they finish, and a rerun skips every key it finds),
``jobs`` at a time in separate processes, with a progress bar and ETA.

Row meaning (units: seconds, bytes):

- ``objective``, ``bound``, ``gap``: the method's own objective (:class:`~partopt.solvers.Solution`).
  For an exact row the bound and gap are the solver's proven ones.
- ``twin_objective`` (exact rows): the method's heuristic priced by the exact model's objective
  (NPTP: the grid heuristic in the tile model; DN2PCIoT: the same objective, rate or bytes), and
  ``heuristic_gap`` = (twin - optimum) / optimum when the exact row is ``optimal``: how far the
  heuristic is from the proven optimum, in the exact model's own terms.
- ``latency_s``, ``throughput_per_s``, ``peak_memory_bytes`` (the largest device's),
  ``comm_bytes``: :func:`partopt.plan.evaluate`'s report of the plan.
- ``size``: the instance size for solve-time plots, ops x devices (NPTP exact: grid cells x
  devices, the size of its model).
- ``verified``, ``max_rel_err``: :func:`partopt.verify.verify`, when the config asks for it.

Example:
    >>> cfg = BenchConfig(name="t", out="/tmp/partopt-doctest.csv", models=["lenet5"], clusters=["pi4x2"],
    ...                   methods=[MethodSpec("coedge", modes=("heuristic",))])
    >>> [i.key for i in instances(cfg)]
    ['lenet5|pi4x2|coedge|heuristic|-|{}']
    >>> row = run_instance(instances(cfg)[0])
    >>> row["status"], row["verified"]
    ('heuristic', True)
"""
from __future__ import annotations

import csv
import inspect
import json
import os
import socket
import time
import tomllib
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .errors import ConfigError, PartoptError

MODES = ("heuristic", "exact")
SOLVERS = ("cbc", "highs", "cpsat")
FIELDS = ["key", "model", "cluster", "n_devices", "n_ops", "size", "method", "mode", "solver", "options",
          "time_limit_s", "status", "reason", "objective", "bound", "gap", "twin_objective", "heuristic_gap",
          "latency_s", "throughput_per_s", "peak_memory_bytes", "comm_bytes", "solve_s", "verified",
          "max_rel_err", "lower_bound_s", "host", "plan_file"]


@dataclass(frozen=True)
class MethodSpec:
    """One method of a sweep; ``None`` lists fall back to the sweep's own."""

    name: str
    modes: tuple[str, ...] = MODES
    models: Optional[tuple[str, ...]] = None
    clusters: Optional[tuple[str, ...]] = None
    solvers: Optional[tuple[str, ...]] = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    """A sweep as stated in its TOML file (paths already resolved against the file's folder)."""

    name: str
    out: str
    models: list[str]
    clusters: list[str]
    methods: list[MethodSpec]
    solvers: list[str] = field(default_factory=lambda: ["highs"])
    time_limit_s: float = 60.0
    threads: int = 1
    verify: bool = True
    save_plans: bool = True
    base: str = "."             # the config file's folder: cluster files are relative to it


@dataclass(frozen=True)
class Instance:
    """One row to compute: a method in one mode (and one solver, if exact) on one model and cluster."""

    model: str
    cluster: str
    method: str
    mode: str
    solver: Optional[str]
    options: tuple[tuple[str, Any], ...]
    time_limit_s: float = 60.0
    threads: int = 1
    verify: bool = True
    plan_dir: Optional[str] = None
    base: str = "."

    @property
    def key(self) -> str:
        opts = json.dumps(dict(self.options), sort_keys=True)
        return f"{self.model}|{self.cluster}|{self.method}|{self.mode}|{self.solver or '-'}|{opts}"


def _list(raw: dict, key: str, where: str, allowed: Optional[Iterable[str]] = None) -> Optional[tuple[str, ...]]:
    if key not in raw:
        return None
    val = raw[key]
    if not isinstance(val, list) or not val or not all(isinstance(v, str) for v in val):
        raise ConfigError(f"{where}: {key} must be a non-empty list of strings, got {val!r}")
    if allowed is not None:
        bad = [v for v in val if v not in allowed]
        if bad:
            raise ConfigError(f"{where}: {key} has {bad}; allowed: {', '.join(allowed)}")
    return tuple(val)


def load_config(path: str) -> BenchConfig:
    """Read and validate a sweep file; cluster files and ``out`` are resolved against its folder."""
    from .cluster import PRESETS
    from .methods import METHODS
    from .zoo import ZOO
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no such sweep file: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    here = os.path.dirname(os.path.abspath(path))
    known = {"name", "out", "models", "clusters", "solvers", "time_limit_s", "threads", "verify", "save_plans",
             "method"}
    extra = set(raw) - known
    if extra:
        raise ConfigError(f"{path}: unknown keys {sorted(extra)}; known: {', '.join(sorted(known))}")
    for key in ("models", "clusters", "method"):
        if key not in raw:
            raise ConfigError(f"{path}: missing {key!r}")

    def cluster_ref(c: str) -> str:
        if c in PRESETS:
            return c
        p = c if os.path.isabs(c) else os.path.join(here, c)
        if not os.path.exists(p):
            raise ConfigError(f"{path}: cluster {c!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        return c      # kept as written, so a row's key does not depend on where the repo lives

    def model_ref(m: str) -> str:
        if m not in ZOO and ":" not in m:
            raise ConfigError(f"{path}: model {m!r} is not in the zoo ({', '.join(ZOO)})")
        return m

    models = [model_ref(m) for m in _list(raw, "models", path)]
    clusters = [cluster_ref(c) for c in _list(raw, "clusters", path)]
    solvers = list(_list(raw, "solvers", path, SOLVERS) or ("highs",))
    if not isinstance(raw["method"], list) or not raw["method"]:
        raise ConfigError(f"{path}: [[method]] must be a non-empty array of tables")
    specs = []
    for i, m in enumerate(raw["method"]):
        where = f"{path}: method #{i + 1}"
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise ConfigError(f"{where}: needs name = \"...\"")
        bad = set(m) - {"name", "modes", "models", "clusters", "solvers", "options"}
        if bad:
            raise ConfigError(f"{where}: unknown keys {sorted(bad)}")
        if m["name"] not in METHODS:
            raise ConfigError(f"{where}: unknown method {m['name']!r}; methods: {', '.join(METHODS)}")
        meth = METHODS[m["name"]]
        modes = _list(m, "modes", where, MODES) or (MODES if meth.exact else ("heuristic",))
        if "exact" in modes and meth.exact is None:
            raise ConfigError(f"{where}: method {m['name']!r} has no exact model")
        opts = m.get("options", {})
        if not isinstance(opts, dict):
            raise ConfigError(f"{where}: options must be a table")
        bad = set(opts) - set(meth.options)
        if bad:
            raise ConfigError(f"{where}: options {sorted(bad)} do not apply to {m['name']!r} "
                              f"(it takes: {', '.join(meth.options) or 'none'})")
        if "grid" in opts:
            g = opts["grid"]
            if not (isinstance(g, list) and len(g) == 2 and all(isinstance(v, int) and v > 0 for v in g)):
                raise ConfigError(f"{where}: grid must be [rows, cols] of positive integers, got {g!r}")
        ms = _list(m, "models", where)
        cs = _list(m, "clusters", where)
        specs.append(MethodSpec(m["name"], modes, tuple(model_ref(x) for x in ms) if ms else None,
                                tuple(cluster_ref(x) for x in cs) if cs else None,
                                _list(m, "solvers", where, SOLVERS), dict(opts)))
    tl = raw.get("time_limit_s", 60.0)
    th = raw.get("threads", 1)
    if not isinstance(tl, (int, float)) or tl <= 0:
        raise ConfigError(f"{path}: time_limit_s must be a positive number of seconds, got {tl!r}")
    if not isinstance(th, int) or th < 1:
        raise ConfigError(f"{path}: threads must be a positive integer, got {th!r}")
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    out = raw.get("out", os.path.join("results", f"{name}.csv"))
    return BenchConfig(name=name, out=out if os.path.isabs(out) else os.path.join(here, out), models=models,
                       clusters=clusters, methods=specs, solvers=solvers, time_limit_s=float(tl), threads=th,
                       verify=bool(raw.get("verify", True)), save_plans=bool(raw.get("save_plans", True)),
                       base=here)


def instances(cfg: BenchConfig) -> list[Instance]:
    """Every instance of the sweep, in a fixed order (methods, models, clusters, modes, solvers)."""
    plan_dir = os.path.splitext(cfg.out)[0] + "_plans" if cfg.save_plans else None
    out = []
    for spec in cfg.methods:
        for model in spec.models or cfg.models:
            for cluster in spec.clusters or cfg.clusters:
                for mode in spec.modes:
                    for solver in (spec.solvers or cfg.solvers) if mode == "exact" else (None,):
                        out.append(Instance(model, cluster, spec.name, mode, solver,
                                            tuple(sorted(spec.options.items())), cfg.time_limit_s, cfg.threads,
                                            cfg.verify, plan_dir, cfg.base))
    seen = set()
    for i in out:
        if i.key in seen:
            raise ConfigError(f"instance {i.key} appears twice in the sweep")
        seen.add(i.key)
    return out


def _num(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.9g}"


def _accepted(fn, opts: dict[str, Any]) -> dict[str, Any]:
    """The options ``fn`` takes (NPTP's ``grid`` is the exact model's only, for example)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in opts.items() if k in params}


def _default(fn, name: str) -> Any:
    """The default value of ``fn``'s keyword ``name``."""
    return inspect.signature(fn).parameters[name].default


def run_instance(inst: Instance, save_plan: bool = True) -> dict[str, Any]:
    """Solve one instance (and verify its plan); return its CSV row. Bad input raises; an
    infeasible instance or a solver time-out is a row with that status. ``save_plan=False``
    (a remote worker, whose disk is not the client's): the plan's JSON travels in the row's
    ``_plan`` and the caller writes it to ``plan_file``."""
    import torch
    from .cluster import PRESETS, load_cluster
    from .graph import LayerGraph
    from .methods import METHODS
    from .bounds import lower_bound
    from .solvers import heuristic_gap
    from .verify import verify
    from .zoo import example_input, load_model
    torch.set_num_threads(1)
    ref = inst.cluster
    cluster = load_cluster(ref if ref in PRESETS or os.path.isabs(ref) else os.path.join(inst.base, ref))
    module, shape, name = load_model(inst.model)
    x = example_input(shape)
    graph = LayerGraph.from_module(module, x)
    meth = METHODS[inst.method]
    opts = dict(inst.options)
    if "grid" in opts:
        opts["grid"] = tuple(opts["grid"])
    twin = None
    if inst.mode == "exact":
        sol = meth.exact(graph, cluster, model=name, solver=inst.solver, time_limit=inst.time_limit_s,
                         threads=inst.threads, **opts)
        if sol.plan is not None and "heuristic_tile_latency_s" in sol.plan.meta:
            twin = sol.plan.meta["heuristic_tile_latency_s"]
        else:
            twin = meth.heuristic(graph, cluster, model=name, **_accepted(meth.heuristic, opts)).objective
    else:
        sol = meth.heuristic(graph, cluster, model=name, **_accepted(meth.heuristic, opts))
    hgap = None
    if inst.mode == "exact" and sol.status == "optimal" and twin is not None and sol.objective:
        hgap = heuristic_gap(twin, sol.objective)
    ver = verify(sol.plan, module, x, graph, cluster) if (inst.verify and sol.plan is not None
                                                          and sol.status != "infeasible") else None
    plan_file = ""
    if inst.plan_dir and sol.plan is not None and sol.status != "infeasible":
        if save_plan:
            os.makedirs(inst.plan_dir, exist_ok=True)
        stem = f"{inst.model}_{inst.cluster}_{inst.method}_{inst.mode}_{inst.solver or '-'}"
        if inst.options:               # instances that differ only in options keep their own files
            import hashlib
            stem += "_" + hashlib.sha1(json.dumps(dict(inst.options), sort_keys=True).encode()).hexdigest()[:8]
        plan_file = os.path.join(inst.plan_dir, stem.replace("/", "_").replace(os.sep, "_") + ".json")
        if save_plan:
            sol.plan.save(plan_file)
    grid = None
    if inst.mode == "exact" and "grid" in meth.options:      # the tile model's size: its grid, or the default
        grid = opts.get("grid") or _default(meth.exact, "grid")
    n = len(cluster.devices)
    r = sol.report
    return {
        "key": inst.key, "model": name, "cluster": cluster.name, "n_devices": n, "n_ops": len(graph.ops),
        "size": (grid[0] * grid[1] if grid else len(graph.ops)) * n, "method": inst.method, "mode": inst.mode,
        "solver": inst.solver or "", "options": json.dumps(dict(inst.options), sort_keys=True),
        "time_limit_s": inst.time_limit_s if inst.mode == "exact" else "", "status": sol.status,
        "reason": sol.reason, "objective": _num(sol.objective), "bound": _num(sol.bound), "gap": _num(sol.gap),
        "twin_objective": _num(twin), "heuristic_gap": _num(hgap),
        "latency_s": _num(r.latency_s if r else None), "throughput_per_s": _num(r.throughput_per_s if r else None),
        "peak_memory_bytes": max(r.peak_memory_bytes.values()) if r else "",
        "comm_bytes": r.comm_bytes if r else "", "solve_s": f"{sol.solve_s:.4f}",
        "verified": "" if ver is None else ver.ok, "max_rel_err": "" if ver is None else f"{ver.max_rel_err:.3g}",
        "lower_bound_s": _num(lower_bound(graph, cluster, source=sol.plan.source if sol.plan else None,
                                              sink=sol.plan.sink if sol.plan else None).seconds),
        "host": socket.gethostname(),
        "plan_file": os.path.relpath(plan_file, os.path.dirname(inst.plan_dir)) if plan_file else "",
        **({} if save_plan or not plan_file else {"_plan": sol.plan.to_dict()}),
    }


def _safe_run(inst: Instance, save_plan: bool = True) -> dict[str, Any]:
    """:func:`run_instance` in a worker: an unexpected failure becomes an ``error`` row, so one
    broken instance does not stop a long sweep (the row says what went wrong; a rerun retries it)."""
    try:
        return run_instance(inst, save_plan)
    except Exception as e:   # noqa: BLE001 - reported in the row, never swallowed silently
        return _error_row(inst, e)


def _error_row(inst: Instance, e: BaseException, where: str = "") -> dict[str, Any]:
    """The ``error`` row of an instance that raised (``where``: a prefix for the reason)."""
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    return {"key": inst.key, "model": inst.model, "cluster": inst.cluster, "method": inst.method,
            "mode": inst.mode, "solver": inst.solver or "", "status": "error", "reason": where + last}


def read_rows(path: str) -> list[dict[str, str]]:
    """The rows of a results CSV; a last line cut short by an interruption is dropped."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r.get("status") and None not in r.values() and r["status"] != "error"]


def _write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@dataclass
class BenchResult:
    """What a sweep did: rows computed now, rows found from earlier runs, and failed instances."""

    path: str
    computed: int
    skipped: int
    errors: list[dict[str, Any]]
    wall_s: float


def _dask_client(address: str, timeout_s: float = 10.0):
    """A distributed.Client on the scheduler at ``address`` (tcp://HOST:PORT)."""
    try:
        from distributed import Client
    except ImportError:
        raise PartoptError("--scheduler needs dask.distributed: pip install 'partopt[dask]'") from None
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise PartoptError(f"cannot reach the dask scheduler at {address!r}: {e}") from None


def run_bench(cfg: BenchConfig, jobs: int = 1, resume: bool = True, progress: bool = True,
              limit: Optional[int] = None, scheduler: Optional[str] = None,
              scheduler_timeout_s: float = 10.0) -> BenchResult:
    """Run every instance of ``cfg`` not yet in its CSV; append rows as they finish.

    ``jobs`` processes solve instances side by side (each solver with ``cfg.threads`` threads;
    solve times measured with jobs > cores are inflated). ``scheduler`` (``tcp://HOST:PORT``)
    sends every instance as a task to that Dask distributed cluster instead; this process only
    writes the rows as results return (``jobs`` is then ignored), and a task the cluster loses
    (its worker died more often than the scheduler retries) is an error, retried by the next
    run (``scheduler_timeout_s``: how long to try to reach the scheduler). ``resume=False``
    starts the CSV anew. ``limit`` stops after that many new instances
    (for trying a config). Instances that raise are reported in ``errors`` (not written), so a
    rerun retries them.
    """
    if jobs < 1:
        raise PartoptError(f"--jobs must be >= 1, got {jobs}")
    client = _dask_client(scheduler, scheduler_timeout_s) if scheduler else None
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    todo = instances(cfg)
    kept = read_rows(cfg.out) if resume else []
    known = {i.key for i in todo}
    kept = [r for r in kept if r["key"] in known] + [r for r in kept if r["key"] not in known]
    done = {r["key"] for r in kept}
    _write_rows(cfg.out, kept)       # rewrite: drops a cut-short last line, keeps every finished row
    pending = [i for i in todo if i.key not in done]
    if limit is not None:
        pending = pending[:limit]
    t0 = time.perf_counter()
    errors: list[dict[str, Any]] = []
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[last]}")]
    with open(cfg.out, "a", newline="") as f, Progress(*cols, disable=not progress) as bar:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        task = bar.add_task(cfg.name, total=len(pending), last="")

        def take(row: dict[str, Any]) -> None:
            plan = row.pop("_plan", None)
            if plan is not None:        # from a remote worker: the plan file is written here
                path = os.path.join(os.path.dirname(os.path.abspath(cfg.out)), row["plan_file"])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as pf:
                    json.dump(plan, pf, indent=1)
            if row["status"] == "error":
                errors.append(row)
            else:
                w.writerow(row)
                f.flush()
            bar.update(task, advance=1, last=f"{row['method']} {row['mode']} {row.get('solver', '')} "
                                             f"{row['model']}: {row['status']}")

        if client is not None:
            from distributed import as_completed as dask_completed
            futs = client.map(_safe_run, pending, save_plan=False, pure=False,
                              key=[f"partopt-{i.key}" for i in pending])
            by_key = {f.key: inst for f, inst in zip(futs, pending)}
            try:
                for fut in dask_completed(futs, loop=client.loop):
                    try:
                        take(fut.result())
                    except Exception as e:   # noqa: BLE001 - the cluster lost the task: an error row
                        take(_error_row(by_key[fut.key], e, "dask: "))
            finally:
                client.cancel(futs)
                client.close()
        elif jobs == 1:
            for inst in pending:
                take(_safe_run(inst))
        else:
            import multiprocessing
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
                futs = [ex.submit(_safe_run, inst) for inst in pending]
                for fut in as_completed(futs):
                    take(fut.result())
    return BenchResult(cfg.out, len(pending) - len(errors), len(done), errors, time.perf_counter() - t0)
