"""Command line: ``partopt demo | solve | verify | run | calibrate | bench | report | export | models | clusters``.

Bad input (unknown model, cluster or method; a malformed cluster or plan file; an unsupported
op) prints one line on stderr and exits with code 2. An infeasible instance is a result, not
an error: status ``infeasible`` with the reason, exit code 0.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from typing import Any, Optional

from .errors import PartoptError, RunError

DEFAULT_MODEL = "vgg16"
DEFAULT_CLUSTER = "pi4x4"


def _console():
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=140)


def _load(model: str, input_shape: Optional[str], seed: int = 0):
    from .graph import LayerGraph
    from .zoo import example_input, load_model, parse_shape
    shape = parse_shape(input_shape) if input_shape else None
    module, shape, name = load_model(model, shape, seed)
    x = example_input(shape, seed)
    return module, x, LayerGraph.from_module(module, x), name


def _solve(graph, cluster, method: str, model: str, exact: bool, solver: Optional[str], time_limit: Optional[float],
           pairs: Optional[list[str]] = None, grouping: Optional[str] = None, objective: Optional[str] = None,
           grid: Optional[str] = None, outside: Optional[str] = None):
    from .methods import get_method
    m = get_method(method)
    extra: dict[str, Any] = {}
    if outside is not None:
        if "outside" not in m.options or exact:
            raise PartoptError("--outside applies only to --method iop without --exact")
        extra["outside"] = outside
    if grid is not None:
        if "grid" not in m.options or not exact:
            raise PartoptError("--grid applies only to --method nptp --exact")
        extra["grid"] = _parse_grid(grid)
    for opt, val, flag in (("grouping", grouping, "--grouping"), ("objective", objective, "--objective")):
        if val is not None:
            if opt not in m.options:
                raise PartoptError(f"{flag} applies only to the dn2pciot methods")
            extra[opt] = val
    if pairs:
        if "pairs" not in m.options:
            raise PartoptError("--pair applies only to --method iop")
        extra["pairs"] = []
        for p in pairs:
            parts = p.split(",")
            if len(parts) != 2 or not all(parts):
                raise PartoptError(f"--pair expects A,B (two op names), got {p!r}")
            extra["pairs"].append((parts[0].strip(), parts[1].strip()))
    if exact:
        if m.exact is None:
            raise PartoptError(f"method {method!r} has no exact model; drop --exact")
        kw: dict[str, Any] = {}
        if solver:
            kw["solver"] = solver
        if time_limit:
            kw["time_limit"] = time_limit
        return m.exact(graph, cluster, model=model, **kw, **extra)
    if solver or time_limit:
        raise PartoptError("--solver and --time-limit apply only with --exact")
    return m.heuristic(graph, cluster, model=model, **extra)


def _parse_grid(text: str) -> tuple[int, int]:
    """'8' -> (8, 8); '6x8' -> (6, 8)."""
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise PartoptError(f"--grid expects G or RxC (positive integers), got {text!r}")
    return (vals[0], vals[-1])


def _size(nbytes: int) -> str:
    """Bytes as MiB, or KiB below one MiB (IoT devices)."""
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def _record(sol, model: str, cluster, ver=None, lower_bound_s: Optional[float] = None) -> dict[str, Any]:
    r = sol.report
    return {
        "model": model, "cluster": cluster.name, "method": sol.method, "mode": sol.mode, "status": sol.status,
        "reason": sol.reason,
        "latency_s": r.latency_s if r else None,
        "lower_bound_s": lower_bound_s,
        "throughput_per_s": r.throughput_per_s if r else None,
        "peak_memory_bytes": r.peak_memory_bytes if r else None,
        "comm_bytes": r.comm_bytes if r else None,
        "objective": sol.objective, "objective_kind": sol.objective_kind, "bound": sol.bound, "gap": sol.gap,
        "solve_s": sol.solve_s,
        "solver": sol.solver,
        "verified": None if ver is None else ver.ok,
        "max_abs_err": None if ver is None else ver.max_abs_err,
        "max_rel_err": None if ver is None else ver.max_rel_err,
        "bytes_moved": None if ver is None else ver.bytes_moved,
        "verify_reason": None if ver is None else ver.reason,
    }


def _lower_bound_s(graph, cluster, sol=None) -> float:
    """partopt.bounds.lower_bound for the plan's source and sink (the cluster's first device without a plan)."""
    from .bounds import lower_bound
    plan = sol.plan if sol is not None else None
    return lower_bound(graph, cluster, source=plan.source if plan else None, sink=plan.sink if plan else None).seconds


def cmd_models(args) -> int:
    from rich.table import Table
    from .zoo import ZOO, summary
    rows = [dict(summary(name)) for name in (ZOO if not args.ops else ())]
    if args.ops:
        from .graph import KINDS
        from .onnx_import import SUPPORTED_ONNX_OPS
        if args.json:
            print(json.dumps({"kinds": KINDS, "onnx_ops": SUPPORTED_ONNX_OPS}, indent=1))
            return 0
        t = Table(title="op kinds partopt plans, prices and executes (any model: zoo, file.py:factory, file.onnx)")
        t.add_column("kind")
        t.add_column("what it covers")
        for k, what in KINDS.items():
            t.add_row(k, what)
        _console().print(t)
        _console().print("ONNX ops read from .onnx files: " + ", ".join(SUPPORTED_ONNX_OPS))
        return 0
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    t = Table(title="partopt model zoo (random weights, fixed seed)")
    for c in ("model", "input", "ops", "GFLOPs", "params MB", "activations MB", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["model"], "x".join(map(str, r["input_shape"])), str(r["ops"]), f"{r['flops'] / 1e9:.3f}",
                  f"{r['param_bytes'] / 1e6:.2f}", f"{r['activation_bytes'] / 1e6:.2f}", r["description"])
    _console().print(t)
    return 0


def cmd_clusters(args) -> int:
    from rich.table import Table
    from .cluster import PRESETS, preset
    rows = []
    for name, (desc, _) in PRESETS.items():
        c = preset(name)
        rows.append({**c.to_dict(), "cluster": name, "n_devices": len(c), "description": desc})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    t = Table(title="partopt cluster presets")
    for c in ("cluster", "devices", "link", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["cluster"], str(r["n_devices"]), r["link"], r["description"])
    _console().print(t)
    return 0


def cmd_solve(args) -> int:
    from .cluster import load_cluster
    from .verify import verify
    cluster = load_cluster(args.cluster)
    from .methods import get_method
    get_method(args.method)  # fail fast on a bad name, before loading the model
    module, x, graph, name = _load(args.model, args.input_shape)
    sol = _solve(graph, cluster, args.method, name, args.exact, args.solver, args.time_limit, args.pair,
                 args.grouping, args.objective, args.grid, args.outside)
    ver = verify(sol.plan, module, x, graph, cluster) if (args.verify and sol.plan is not None) else None
    rec = _record(sol, name, cluster, ver, _lower_bound_s(graph, cluster, sol))
    if args.tiles and sol.plan is not None:
        from .report import plot_tiles
        rec["tiles_file"] = plot_tiles(sol.plan, graph, args.tiles)
    if args.out and sol.plan is not None:
        sol.plan.save(args.out)
        rec["plan_file"] = args.out
    if args.json:
        print(json.dumps(rec))
    else:
        _print_record(rec)
    return 0 if ver is None or ver.ok else 1


def _print_record(rec: dict[str, Any]) -> None:
    c = _console()
    c.print(f"[bold]{rec['model']}[/] on [bold]{rec['cluster']}[/] by [bold]{rec['method']}[/] ({rec['mode']}): "
            f"status [bold]{rec['status']}[/]" + (f" - {rec['reason']}" if rec["reason"] else ""))
    if rec["latency_s"] is not None:
        c.print(f"  latency {rec['latency_s']:.4f} s, throughput {rec['throughput_per_s']:.3f} /s, "
                f"sent {rec['comm_bytes'] / 1e6:.3f} MB, solve {rec['solve_s']:.3f} s")
        c.print("  peak memory: " + ", ".join(f"{d} {_size(b)}" for d, b in rec["peak_memory_bytes"].items()))
    if rec["verified"] is not None:
        c.print(f"  verified: {rec['verified']} (max abs err {rec['max_abs_err']:.3g}, max rel err "
                f"{rec['max_rel_err']:.3g}, moved {rec['bytes_moved']} bytes){' - ' + rec['verify_reason'] if rec['verify_reason'] else ''}")
    if rec.get("plan_file"):
        c.print(f"  plan written to {rec['plan_file']}")
    if rec.get("tiles_file"):
        c.print(f"  tile map written to {rec['tiles_file']}")


def cmd_verify(args) -> int:
    from .cluster import Cluster
    from .plan import Plan
    from .verify import verify
    plan = Plan.load(args.plan)
    cluster = Cluster.from_dict(plan.cluster, where=f"{args.plan}: cluster")
    shape = ",".join(map(str, plan.input_shape))
    module, x, graph, name = _load(plan.model, shape, plan.seed)
    ver = verify(plan, module, x, graph, cluster)
    if args.json:
        print(json.dumps({"plan": args.plan, "model": plan.model, "method": plan.method, **ver.to_dict()}))
    else:
        _console().print(f"{args.plan}: {plan.model} by {plan.method}: verified [bold]{ver.ok}[/] "
                         f"(max abs err {ver.max_abs_err:.3g}, max rel err {ver.max_rel_err:.3g}, "
                         f"moved {ver.bytes_moved} of {ver.bytes_planned} planned bytes) {ver.reason}")
    return 0 if ver.ok else 1


def cmd_run(args) -> int:
    from .runtime import RunOptions, run
    opts = RunOptions(bandwidth_scale=args.bandwidth_scale, emulate=not args.no_emulate,
                      pace_compute=args.pace_compute, repeat=args.repeat, warmup=args.warmup, threads=args.threads,
                      timeout_s=args.timeout, fault=args.fault, reduce=args.reduce)
    res = run(args.plan, opts, world=args.world)
    if args.json:
        print(json.dumps({"plan": args.plan, **res.to_dict()}))
        return 0 if res.ok else 1
    from rich.table import Table
    c = _console()
    c.print(f"{args.plan}: {res.model} by {res.method} on {res.world} ranks ({res.cluster}, network "
            f"{'emulated' if res.emulate else 'not emulated'}, bandwidth x{res.bandwidth_scale:g}): "
            f"output equal to the unsplit model [bold]{res.ok}[/] (max rel err {res.max_rel_err:.3g})"
            + (f" - {res.reason}" if res.reason else ""))
    c.print(f"  latency: measured {res.latency_s:.4f} s (median of {len(res.latencies_s)}), predicted "
            f"{res.predicted_latency_s:.4f} s, ratio [bold]{res.ratio:.3f}[/]; bytes moved {res.bytes_moved} "
            f"of {res.bytes_planned} planned")
    t = Table(title="per rank: measured beside the cost model")
    for col in ("rank", "device", "compute s", "predicted s", "ratio", "waiting s", "sent B", "planned",
                "received B", "planned "):
        t.add_column(col)
    for r in res.ranks:
        t.add_row(str(r.rank), r.device, f"{r.compute_s:.4f}", f"{r.predicted_compute_s:.4f}",
                  f"{r.compute_s / r.predicted_compute_s:.3f}" if r.predicted_compute_s > 0 else "-",
                  f"{r.wait_s:.4f}", str(r.bytes_sent), str(r.planned_bytes_sent), str(r.bytes_received),
                  str(r.planned_bytes_received))
    c.print(t)
    return 0 if res.ok else 1


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate
    cal = calibrate(args.model or ["vgg16"], args.like, repeats=args.repeats, threads=args.threads,
                    concurrent=args.concurrent, overhead=not args.no_overhead)
    cal.cluster.save(args.out)
    if args.json:
        print(json.dumps({"flops_per_s": cal.flops_per_s, "flops_per_s_by_kind": cal.rates,
                          "per_op_s": cal.per_op_s, "residual": cal.residual, "task_overhead_s": cal.task_overhead_s,
                          "stage_overhead_s": cal.stage_overhead_s, "probe": cal.probe,
                          "per_kind": cal.per_kind, "models": cal.models,
                          "cluster_file": args.out, "cluster": cal.cluster.to_dict()}))
        return 0
    from rich.table import Table
    t = Table(title=f"this machine, {cal.threads} thread(s), {cal.concurrent} process(es) at once: "
                    f"{', '.join(cal.models)}")
    for col in ("op kind", "ops", "GFLOPs", "seconds", "GFLOP/s", "share of time"):
        t.add_column(col)
    for k, v in cal.per_kind.items():
        t.add_row(k, str(int(v["ops"])), f"{v['flops'] / 1e9:.3f}", f"{v['seconds']:.4f}",
                  f"{v['flops_per_s'] / 1e9:.2f}", f"{100 * v['time_share']:.1f} %")
    c = _console()
    c.print(t)
    f = Table(title="fitted: seconds = FLOPs / rate of the op's kind + a constant per op (least squares)")
    for col in ("rate kind", "ops", "GFLOP/s"):
        f.add_column(col)
    for k, r in sorted(cal.rates.items()):
        f.add_row(k, str(sum(1 for x in cal.timings if x.flops and (x.rate_kind or "eltwise") == k)), f"{r / 1e9:.2f}")
    c.print(f)
    c.print(f"per-op constant {cal.per_op_s * 1e6:.1f} us; residual (RMS of relative error per op) "
            f"{100 * cal.residual:.1f} %")
    c.print(f"overheads: {cal.stage_overhead_s * 1e3:.3f} ms per stage, {cal.task_overhead_s * 1e3:.3f} ms per task"
            + (" (probed with the runtime)" if not args.no_overhead else " (not probed: --no-overhead)"))
    c.print(f"fitted speed {cal.flops_per_s / 1e9:.2f} GFLOP/s (whole models) and the rates above for every "
            f"device of {args.like}; cluster written to {args.out} (plan on it with --cluster {args.out})")
    return 0


def cmd_bench(args) -> int:
    from .bench import instances, load_config, run_bench
    cfg = load_config(args.config)
    if args.out:
        cfg.out = args.out
    if args.list:
        for i in instances(cfg):
            print(i.key)
        return 0
    res = run_bench(cfg, jobs=args.jobs, resume=not args.fresh, progress=not args.quiet, limit=args.limit,
                    scheduler=args.scheduler)
    print(f"{cfg.name}: {res.computed} rows computed, {res.skipped} found from earlier runs, "
          f"{len(res.errors)} failed, {res.wall_s:.1f} s; rows in {res.path}")
    for e in res.errors:
        print(f"  failed: {e['key']}: {e['reason']}", file=sys.stderr)
    if args.report:
        from .report import write_report
        for p in write_report(res.path, args.report):
            print(f"  wrote {p}")
    return 1 if res.errors else 0


def cmd_report(args) -> int:
    from .report import write_report
    out = args.out or os.path.splitext(args.results)[0] + "_report"
    files = write_report(args.results, out)
    for p in files:
        print(f"wrote {p}")
    if not args.quiet:
        table = next(p for p in files if p.endswith(".md"))     # summary.md, or regime.md
        with open(table) as f:
            print(f.read())
    return 0


def cmd_export(args) -> int:
    from .cluster import load_cluster
    from .export import export
    cluster = load_cluster(args.cluster)
    _, _, graph, name = _load(args.model, args.input_shape)
    extra = {"grid": _parse_grid(args.grid)} if args.grid else {}
    path = export(graph, cluster, args.method, args.format, args.out, solver=args.solver, model=name, **extra)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from rich.table import Table
    from .cluster import load_cluster
    from .methods import METHODS
    from .report import plot_timeline
    from .verify import verify
    cluster = load_cluster(args.cluster)
    module, x, graph, name = _load(args.model, args.input_shape)
    c = _console()
    c.print(f"[bold]partopt demo[/]: {name} ({graph.total_flops / 1e9:.2f} GFLOPs, "
            f"{graph.total_param_bytes / 1e6:.1f} MB of weights) on {cluster.name}: "
            + ", ".join(f"{d.name} {d.flops_per_s / 1e9:g} GFLOP/s {d.memory_bytes / 2**30:.2f} GiB" for d in cluster.devices)
            + f"; {cluster.link} links {min(cluster.bandwidth.values()) / 1e6:g} MB/s, latency {cluster.latency_s * 1e3:g} ms")
    recs, sols = [], {}
    for mname, m in METHODS.items():
        if not m.demo:
            continue
        t0 = time.perf_counter()
        sol = m.heuristic(graph, cluster, model=name)
        ver = verify(sol.plan, module, x, graph, cluster) if sol.plan is not None else None
        rec = _record(sol, name, cluster, ver, _lower_bound_s(graph, cluster, sol))
        rec["wall_s"] = time.perf_counter() - t0
        recs.append(rec)
        sols[mname] = sol
    base = next((r["latency_s"] for r in recs if r["method"] == "single" and r["status"] != "infeasible"), None)
    t = Table(title=f"{name} on {cluster.name}: every method, each plan executed in torch")
    cols = ("method", "latency s", "speed-up vs single", "x lower bound", "max peak memory MiB", "bytes sent MB",
            "verified (max rel err)")
    for col in cols:
        t.add_column(col)
    rows = []
    for r in recs:
        lat = r["latency_s"]
        ok = lat is not None and r["status"] != "infeasible"
        rows.append((r["method"] + ("" if r["status"] in ("heuristic", "optimal") else f" ({r['status']})"),
                     f"{lat:.4f}" if lat is not None else "-",
                     f"{base / lat:.2f}x" if (base and ok) else "-",
                     f"{lat / r['lower_bound_s']:.2f}" if ok else "-",
                     f"{max(r['peak_memory_bytes'].values()) / 2**20:.1f}" if r["peak_memory_bytes"] else "-",
                     f"{r['comm_bytes'] / 1e6:.3f}" if r["comm_bytes"] is not None else "-",
                     f"{r['verified']} ({r['max_rel_err']:.1e})" if r["verified"] is not None else "-"))
        t.add_row(*rows[-1])
    c.print(t)
    c.print(f"lower bound (no plan can be faster, partopt/bounds.py): {recs[0]['lower_bound_s']:.4f} s")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "cluster", "lower_bound_s", *cols])
            w.writerows([name, cluster.name, f"{recs[0]['lower_bound_s']:.6g}", *row] for row in rows)
    ok = [r for r in recs if r["status"] != "infeasible" and r["verified"]]
    if ok:
        best = min(ok, key=lambda r: r["latency_s"])
        path = plot_timeline(sols[best["method"]].report, args.figure,
                             f"{name} on {cluster.name}: {best['method']} ({best['latency_s']:.3f} s)")
        c.print(f"best: [bold]{best['method']}[/] at {best['latency_s']:.4f} s; timeline written to {path}")
    if args.json:
        print(json.dumps(recs))
    return 0 if all(r["verified"] for r in recs if r["verified"] is not None) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="partopt", description="Plan cooperative CNN inference across small devices.")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="every method on a default model and cluster, each plan verified in torch")
    d.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name or file.py:factory (default {DEFAULT_MODEL})")
    d.add_argument("--cluster", default=DEFAULT_CLUSTER, help=f"preset or .json/.toml file (default {DEFAULT_CLUSTER})")
    d.add_argument("--input-shape", help="N,C,H,W (required for a user model)")
    d.add_argument("--figure", default="partopt-demo.png", help="where to write the best plan's timeline (PNG)")
    d.add_argument("--json", action="store_true", help="also print the rows as JSON")
    d.add_argument("--csv", help="also write the table to this CSV file")
    d.set_defaults(fn=cmd_demo)

    s = sub.add_parser("solve", help="plan one model on one cluster with one method")
    s.add_argument("model", help="zoo name or path/to/file.py:factory")
    s.add_argument("--cluster", default=DEFAULT_CLUSTER, help="preset name or .json/.toml file")
    s.add_argument("--method", default="coedge", help="method name (see `partopt solve --help`)")
    s.add_argument("--exact", action="store_true", help="use the method's exact model")
    s.add_argument("--solver", choices=["cpsat", "cbc", "highs"], help="exact back-end")
    s.add_argument("--time-limit", type=float, help="exact solver time limit, seconds")
    s.add_argument("--input-shape", help="N,C,H,W (required for a user model)")
    s.add_argument("--pair", action="append", metavar="A,B",
                   help="iop: force conv A and conv B to be an interleaved pair (repeatable)")
    s.add_argument("--outside", choices=["rows", "channels"],
                   help="iop: split the layers outside the pairs by rows as coedge (default) or by output "
                        "channels as coedge-concat, the IOP paper's baseline")
    s.add_argument("--grouping", choices=["coarse", "fine"], help="dn2pciot: neuron grouping (default coarse)")
    s.add_argument("--objective", choices=["rate", "comm"], help="dn2pciot: maximise rate or minimise bytes")
    s.add_argument("--grid", metavar="G|RxC", help="nptp --exact: cells of the tiling grid (default 8x8)")
    s.add_argument("--tiles", metavar="PNG", help="draw the plan's tiles over its first tiled map (one colour a device)")
    s.add_argument("--verify", action="store_true", help="execute the plan in torch and compare")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--out", help="write the plan as JSON here")
    s.set_defaults(fn=cmd_solve)

    v = sub.add_parser("verify", help="execute a saved plan in torch against the unsplit model")
    v.add_argument("plan", help="plan JSON written by `solve --out`")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_verify)

    r = sub.add_parser("run", help="run a saved plan with one process per device (torch.distributed, gloo)")
    r.add_argument("plan", help="plan JSON written by `solve --out`")
    r.add_argument("--world", type=int, help="number of ranks (must equal the plan's devices; default: that)")
    r.add_argument("--bandwidth-scale", type=float, default=1.0, help="multiply every link's bandwidth (default 1)")
    r.add_argument("--no-emulate", action="store_true", help="do not pace messages to the cluster's network")
    r.add_argument("--pace-compute", action="store_true",
                   help="stretch each rank's compute to its device's modelled FLOP/s (emulate slower devices)")
    r.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported (default 3)")
    r.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    r.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    r.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before the run is "
                                                                "stopped as hung (default 60)")
    r.add_argument("--fault", metavar="RANK:die|hang", help="inject a fault into one rank (tests the handling)")
    r.add_argument("--reduce", choices=["p2p", "collective"], default="p2p",
                   help="partial sums as the plan's messages (p2p, default) or as dist.reduce (collective: "
                        "gloo's own traffic, not paced)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(fn=cmd_run)

    k = sub.add_parser("calibrate", help="time each op kind here and write a cluster with the fitted rates per kind "
                                         "and per-task overhead")
    k.add_argument("--model", action="append", help="zoo model to time (repeatable; default vgg16)")
    k.add_argument("--like", default=DEFAULT_CLUSTER, help="cluster whose devices and links to copy "
                                                           f"(preset or file; default {DEFAULT_CLUSTER})")
    k.add_argument("--out", default="calibrated.json", help="cluster file to write (.json or .toml)")
    k.add_argument("--repeats", type=int, default=5, help="timed passes per op; the median is kept (default 5)")
    k.add_argument("--threads", type=int, default=1, help="torch threads, as each rank of `run` (default 1)")
    k.add_argument("--concurrent", type=int, default=1,
                   help="time in N processes at once, as N ranks on this machine would compute (default 1)")
    k.add_argument("--no-overhead", action="store_true",
                   help="do not probe the per-stage and per-task overheads with runs across processes (they stay 0)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(fn=cmd_calibrate)

    b = sub.add_parser("bench", help="run a sweep file (benchmarks/*.toml): rows appended to its CSV, resumable")
    b.add_argument("config", help="sweep file, e.g. benchmarks/default.toml")
    b.add_argument("--jobs", type=int, default=1, help="instances solved side by side, one process each (default 1)")
    b.add_argument("--out", help="results CSV (default: the file's `out`)")
    b.add_argument("--fresh", action="store_true", help="start the CSV anew instead of resuming it")
    b.add_argument("--limit", type=int, help="stop after this many new instances")
    b.add_argument("--list", action="store_true", help="print the instances' keys and exit")
    b.add_argument("--report", metavar="DIR", help="then write the report (tables, figures) into DIR")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the instances on this Dask distributed cluster (dask scheduler / dask worker, or "
                        "dask-jobqueue); rows are still written here")
    b.set_defaults(fn=cmd_bench)

    rp = sub.add_parser("report", help="tables (Markdown, LaTeX) and figures from a bench CSV, a regime CSV "
                                       "(bench_nptp.py --part regime) or an IOP memory CSV (bench_iop.py --part memory)")
    rp.add_argument("results", help="CSV written by `partopt bench`, bench_nptp.py --part regime or bench_iop.py --part memory")
    rp.add_argument("--out", help="folder for the tables and figures (default: RESULTS_report/)")
    rp.add_argument("--quiet", action="store_true", help="do not print the summary table")
    rp.set_defaults(fn=cmd_report)

    e = sub.add_parser("export", help="write one instance's exact model as LP, MPS (solver library) or LaTeX")
    e.add_argument("model", help="zoo name or path/to/file.py:factory")
    e.add_argument("--method", required=True, help="a method with an exact model: dpfp, iop, nptp, dn2pciot")
    e.add_argument("--format", required=True, choices=["lp", "mps", "tex"])
    e.add_argument("--cluster", default=DEFAULT_CLUSTER, help="preset name or .json/.toml file")
    e.add_argument("--solver", choices=["cbc", "highs"], default="highs",
                   help="which MILP build to export (they differ only in solver-specific options)")
    e.add_argument("--grid", metavar="G|RxC", help="nptp: cells of the tiling grid (default 8x8)")
    e.add_argument("--input-shape", help="N,C,H,W (required for a user model)")
    e.add_argument("--out", required=True, help="file to write")
    e.set_defaults(fn=cmd_export)

    m = sub.add_parser("models", help="list the zoo with FLOPs, parameters, activation bytes (--ops: the supported ops)")
    m.add_argument("--json", action="store_true")
    m.add_argument("--ops", action="store_true", help="list the op kinds and ONNX ops partopt supports instead")
    m.set_defaults(fn=cmd_models)

    c = sub.add_parser("clusters", help="list the cluster presets")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_clusters)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    from .methods import METHODS
    parser = build_parser()
    for a in parser._subparsers._group_actions[0].choices.values():  # method list in help
        for act in a._actions:
            if act.dest == "method":
                act.help = f"one of: {', '.join(METHODS)} (default coedge)"
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except RunError as e:
        print(f"partopt: run failed: {e}", file=sys.stderr)
        return 3
    except PartoptError as e:
        print(f"partopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("partopt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
