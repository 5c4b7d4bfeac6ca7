"""IOP benchmarks: the paper's comparison, and the greedy against the exact optimum.

Part "paper": on the ``iop-paper`` preset (ASSUMED: 3 Raspberry-Pi-class devices with 1 GiB on
one Wi-Fi channel; the paper's text is not available) and the paper's "three classical image
classification models" (ASSUMED: AlexNet, VGG-16, ResNet-18), the latency gain and peak-memory
reduction of IOP over CoEdge, printed beside the paper's 6.39-16.83 % and 21.22-49.98 %:
the greedy, the exact optimum, and the plan with every compatible pair (the most memory IOP
can save in partopt's model). Then the memory cap at which each fits.

Part "gap": every zoo model x {2, 3, 4, 6, 8} devices x bandwidth {0.1, 1, 10} x the preset's,
at two memory settings: the preset's 1 GiB ("roomy") and "tight" (each device's capacity
halfway between the all-pairs plan's peak and CoEdge's), greedy against exact (HiGHS):
statuses, latencies, gap, solve time. Rows are appended to benchmarks/results/iop_gap.csv as
they finish. The exact model runs as ``iop.exact`` does by default (with the load cuts on
HiGHS); ``--no-cuts`` runs it without (benchmarks/results/iop_gap_nocuts.csv).

Part "large": the exact model on 8 devices (``pi4x8``) for MobileNetV2, ResNet-18 and VGG-16 on
HiGHS and CP-SAT with a 60 s limit: status, latency, proven bound, solve time. Rows go to
benchmarks/results/iop_large.csv.

    python benchmarks/bench_iop.py --part paper
    python benchmarks/bench_iop.py --part gap [--models alexnet,resnet18] [--solver highs]
    python benchmarks/bench_iop.py --part gap --no-cuts --csv benchmarks/results/iop_gap_nocuts.csv
    python benchmarks/bench_iop.py --part large
    python benchmarks/bench_iop.py --part baselines
    python benchmarks/bench_iop.py --part memory

Part "memory": IOP's peak-memory reduction against the number of devices and the memory cap.
For every zoo model but LeNet-5 on 2, 3, 4 and 8 devices of the iop-paper kind: the largest
device's peak of ``coedge`` and of the plan with every compatible pair (rows outside), and the
smallest per-device capacity in which ``coedge`` (memory-aware shares) and the IOP greedy
(which takes pairs that cut the overflow first) each return a plan that fits, found by
bisection to 0.5 %, with the greedy's latency there. Rows go to
benchmarks/results/iop_memory.csv; ``partopt report benchmarks/results/iop_memory.csv`` draws it.

Part "baselines": IOP under the paper's own baseline and under partopt's strongest one, side
by side, for every zoo model on the iop-paper setup with 2, 3, 4 and 8 devices (same devices,
link and 1 GiB): ``coedge-concat`` (output channels by speed, activations all-gathered before
every conv/linear layer, as the IOP paper frames CoEdge) against the greedy with the same
channel split outside its pairs (``outside="channels"``), and halo-only ``coedge`` against the
greedy with rows outside its pairs (the default). Latency and the largest device's peak memory
of each; every plan verified in torch. Rows go to benchmarks/results/iop_baselines.csv.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

from partopt.cluster import homogeneous, preset
from partopt.graph import LayerGraph
from partopt.methods import iop
from partopt.methods.baselines import coedge
from partopt.plan import evaluate
from partopt.solvers import heuristic_gap
from partopt.zoo import CLASSIC as ZOO, example_input, load_model

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 2 ** 20
PAPER_MODELS = ["alexnet", "vgg16", "resnet18"]


def graph_of(name):
    net, shape, _ = load_model(name)
    return LayerGraph.from_module(net, example_input(shape))


def all_pairs_plan(g, cl, name, outside="rows"):
    chosen = {}
    for p in iop.legal_pairs(g, len(cl.devices)):
        if not iop._conflict(p, chosen):
            chosen[p] = iop.speed_counts(p.channels, cl)
    return iop.plan_of(g, cl, chosen, model=name, outside=outside)


def with_memory(cl, cap):
    return homogeneous(len(cl.devices), flops_per_s=cl.devices[0].flops_per_s, memory_bytes=int(cap),
                       bandwidth_bytes_per_s=cl.bw(cl.devices[0].name, cl.devices[1].name),
                       latency_s=cl.latency_s, link=cl.link, name=f"{cl.name}-cap")


def pct(a, b):
    """How much lower ``b`` is than the baseline ``a``, % of ``a`` (negative: higher)."""
    return 100.0 * (a - b) / a


def part_paper(models):
    cl = preset("iop-paper")
    print(f"IOP vs CoEdge on iop-paper ({len(cl.devices)} devices, {cl.devices[0].memory_bytes / MiB:.0f} MiB each)")
    print("paper (abstract): latency 6.39-16.83 % lower, peak memory 21.22-49.98 % lower than CoEdge")
    print(f"{'model':10s} {'coedge s':>9s} {'MiB':>7s} | {'greedy s':>9s} {'gain %':>7s} {'mem %':>6s} pairs | "
          f"{'exact s':>8s} {'gain %':>7s} | {'all-pairs s':>11s} {'gain %':>7s} {'mem %':>6s}")
    for name in models:
        g = graph_of(name)
        c = coedge(g, cl, model=name).report
        h = iop.heuristic(g, cl, model=name)
        e = iop.exact(g, cl, model=name, solver="highs")
        a = evaluate(all_pairs_plan(g, cl, name), g, cl)
        cm = c.max_peak_memory_bytes
        print(f"{name:10s} {c.latency_s:9.4f} {cm / MiB:7.1f} | {h.report.latency_s:9.4f} "
              f"{pct(c.latency_s, h.report.latency_s):7.2f} {pct(cm, h.report.max_peak_memory_bytes):6.2f} "
              f"{len(h.plan.meta['pairs']):5d} | {e.report.latency_s:8.4f} {pct(c.latency_s, e.report.latency_s):7.2f} | "
              f"{a.latency_s:11.4f} {pct(c.latency_s, a.latency_s):7.2f} {pct(cm, a.max_peak_memory_bytes):6.2f}")
    print()
    print("memory: the smallest per-device capacity each plan family fits in, and IOP under a cap CoEdge cannot meet")
    print(f"{'model':10s} {'coedge MiB':>10s} {'all-pairs MiB':>13s} {'cap MiB':>8s} {'coedge':>11s} "
          f"{'greedy':>9s} {'greedy s':>9s} {'exact':>8s} {'exact s':>8s}")
    for name in models:
        g = graph_of(name)
        cm = coedge(g, cl, model=name).report.max_peak_memory_bytes
        am = evaluate(all_pairs_plan(g, cl, name), g, cl).max_peak_memory_bytes
        cap = (cm + am) / 2
        tight = with_memory(cl, cap)
        c = coedge(g, tight, model=name)
        h = iop.heuristic(g, tight, model=name)
        e = iop.exact(g, tight, model=name, solver="highs")
        print(f"{name:10s} {cm / MiB:10.1f} {am / MiB:13.1f} {cap / MiB:8.1f} {c.status:>11s} {h.status:>9s} "
              f"{h.report.latency_s if h.feasible else float('nan'):9.4f} {e.status:>8s} "
              f"{e.report.latency_s if e.feasible else float('nan'):8.4f}")


def part_large(out_csv, models=("mobilenet_v2", "resnet18", "vgg16"), solvers=("highs", "cpsat"),
               time_limit=60.0, cuts=None):
    rows = []
    for name in models:
        m, shape, _ = load_model(name)
        g = LayerGraph.from_module(m, example_input(shape))
        cl = preset("pi4x8")
        h = iop.heuristic(g, cl, model=name)
        for solver in solvers:
            t0 = time.perf_counter()
            e = iop.exact(g, cl, model=name, solver=solver, time_limit=time_limit, cuts=cuts)
            row = {"model": name, "cluster": "pi4x8", "solver": solver, "status": e.status,
                   "exact_latency_s": e.report.latency_s if e.report else None, "bound_s": e.bound,
                   "greedy_latency_s": h.report.latency_s, "solve_s": round(time.perf_counter() - t0, 2),
                   "time_limit_s": time_limit}
            rows.append(row)
            print(f"{name:12s} {solver:6s} {e.status:9s} {row['exact_latency_s']} bound {e.bound} {row['solve_s']} s",
                  flush=True)
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def part_gap(models, out_csv, solver="highs", time_limit=120.0, cuts=None):
    base = preset("iop-paper")
    bw0 = base.bw(base.devices[0].name, base.devices[1].name)
    fields = ["model", "devices", "bandwidth_factor", "memory", "capacity_bytes", "greedy_status", "greedy_latency_s",
              "greedy_pairs", "exact_status", "exact_latency_s", "exact_bound_s", "exact_pairs", "gap_pct", "solve_s",
              "solver"]
    rows = []
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        print(f"{'model':12s} {'n':>2s} {'bw x':>5s} {'memory':>6s} {'greedy':>10s} {'greedy s':>9s} {'exact':>8s} "
              f"{'exact s':>9s} {'gap %':>6s} {'solve s':>8s}")
        for name in models:
            g = graph_of(name)
            for n in (2, 3, 4, 6, 8):
                for f in (0.1, 1.0, 10.0):
                    roomy = homogeneous(n, memory_bytes=base.devices[0].memory_bytes, bandwidth_bytes_per_s=bw0 * f,
                                        latency_s=base.latency_s, link=base.link, name=f"iop{n}")
                    cm = coedge(g, roomy, model=name).report.max_peak_memory_bytes
                    am = evaluate(all_pairs_plan(g, roomy, name), g, roomy).max_peak_memory_bytes
                    for mem, cl in (("roomy", roomy), ("tight", with_memory(roomy, (cm + am) / 2))):
                        h = iop.heuristic(g, cl, model=name)
                        t0 = time.perf_counter()
                        e = iop.exact(g, cl, model=name, solver=solver, time_limit=time_limit, cuts=cuts)
                        dt = time.perf_counter() - t0
                        hl = h.report.latency_s if h.feasible else None
                        el = e.report.latency_s if e.feasible else None
                        gap = 100 * heuristic_gap(hl, el) if (hl and el) else None
                        row = {"model": name, "devices": n, "bandwidth_factor": f, "memory": mem,
                               "capacity_bytes": cl.devices[0].memory_bytes, "greedy_status": h.status,
                               "greedy_latency_s": hl, "greedy_pairs": len(h.plan.meta["pairs"]),
                               "exact_status": e.status, "exact_latency_s": el, "exact_bound_s": e.bound,
                               "exact_pairs": len(e.plan.meta["pairs"]) if e.plan else None, "gap_pct": gap,
                               "solve_s": dt, "solver": solver}
                        rows.append(row)
                        w.writerow(row)
                        fh.flush()
                        print(f"{name:12s} {n:2d} {f:5g} {mem:>6s} {h.status:>10s} {hl or float('nan'):9.4f} "
                              f"{e.status:>8s} {el or float('nan'):9.4f} {gap if gap is not None else float('nan'):6.2f} "
                              f"{dt:8.1f}", flush=True)
    gaps = sorted(r["gap_pct"] for r in rows if r["gap_pct"] is not None)
    opt = sum(r["exact_status"] == "optimal" for r in rows)
    print(f"{len(rows)} instances, {opt} proven optimal; greedy feasible in "
          f"{sum(r['greedy_status'] != 'infeasible' for r in rows)}, exact in "
          f"{sum(r['exact_status'] != 'infeasible' for r in rows)}")
    if gaps:
        print(f"greedy gap to the optimum: median {statistics.median(gaps):.2f} %, max {gaps[-1]:.2f} %, "
              f"> 0 in {sum(x > 1e-6 for x in gaps)} of {len(gaps)}")
    bad = [r for r in rows if r["gap_pct"] is not None and r["gap_pct"] < -1e-4]
    print(f"exact worse than greedy: {len(bad)} instances")
    return not bad


BASELINE_FIELDS = ["model", "devices", "baseline", "outside", "baseline_s", "baseline_mib", "iop_s", "iop_mib",
                   "iop_pairs", "latency_gain_pct", "memory_gain_pct", "all_pairs_s", "all_pairs_mib",
                   "all_pairs_memory_gain_pct", "verified"]


def paper_like(n: int, memory_bytes: int):
    """``n`` devices of the iop-paper kind (its speed, link and latency) with ``memory_bytes`` each."""
    base = preset("iop-paper")
    return homogeneous(n, flops_per_s=base.devices[0].flops_per_s, memory_bytes=memory_bytes,
                       bandwidth_bytes_per_s=base.bw(base.devices[0].name, base.devices[1].name),
                       latency_s=base.latency_s, link=base.link, name=f"iop{n}")


def cases(models):
    """(name, module, input, graph) of each zoo model."""
    for name in models:
        net, shape, _ = load_model(name)
        x = example_input(shape)
        yield name, net, x, LayerGraph.from_module(net, x)


def part_baselines(models, out_csv, devices=(2, 3, 4, 8)):
    """IOP against coedge-concat (channels outside the pairs) and coedge (rows), module doc."""
    from partopt.methods.baselines import coedge_concat
    from partopt.verify import verify
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=BASELINE_FIELDS)
        w.writeheader()
        for name, net, x, g in cases(models):
            for n in devices:
                cl = paper_like(n, preset("iop-paper").devices[0].memory_bytes)
                for label, fn, outside in (("coedge-concat", coedge_concat, "channels"), ("coedge", coedge, "rows")):
                    b = fn(g, cl, model=name)
                    h = iop.heuristic(g, cl, model=name, outside=outside)
                    ok = all(verify(s.plan, net, x, g, cl).ok for s in (b, h))
                    bm, hm = b.report.max_peak_memory_bytes, h.report.max_peak_memory_bytes
                    a = evaluate(all_pairs_plan(g, cl, name, outside), g, cl)
                    row = {"model": name, "devices": n, "baseline": label, "outside": outside,
                           "baseline_s": b.report.latency_s, "baseline_mib": round(bm / MiB, 3),
                           "iop_s": h.report.latency_s, "iop_mib": round(hm / MiB, 3),
                           "iop_pairs": len(h.plan.meta["pairs"]),
                           "latency_gain_pct": round(pct(b.report.latency_s, h.report.latency_s), 3),
                           "memory_gain_pct": round(pct(bm, hm), 3), "all_pairs_s": a.latency_s,
                           "all_pairs_mib": round(a.max_peak_memory_bytes / MiB, 3),
                           "all_pairs_memory_gain_pct": round(pct(bm, a.max_peak_memory_bytes), 3), "verified": ok}
                    w.writerow(row)
                    fh.flush()
                    print(f"{name:12s} {n} {label:13s} {row['baseline_s']:8.4f} s {row['baseline_mib']:8.1f} MiB | "
                          f"iop {row['iop_s']:8.4f} s {row['iop_mib']:8.1f} MiB pairs {row['iop_pairs']:2d} | "
                          f"gain {row['latency_gain_pct']:6.2f} % mem {row['memory_gain_pct']:6.2f} % "
                          f"all pairs mem {row['all_pairs_memory_gain_pct']:6.2f} % "
                          f"verified {ok}", flush=True)


MEMORY_FIELDS = ["model", "devices", "coedge_peak_mib", "all_pairs_peak_mib", "all_pairs_reduction_pct",
                 "coedge_min_cap_mib", "iop_min_cap_mib", "cap_reduction_pct", "coedge_s", "iop_s_at_min_cap",
                 "iop_pairs_at_min_cap", "verified"]


def smallest_fit(fits, hi: float, rel: float = 0.005) -> float:
    """The smallest capacity (bytes) in (0, hi] at which ``fits(cap)`` holds, to ``rel``; ``fits``
    must hold at ``hi`` and be monotone."""
    lo = 0.0
    while hi - lo > rel * hi:
        mid = (lo + hi) / 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def part_memory(models, out_csv, devices=(2, 3, 4, 8)):
    """IOP's peak memory against devices and the memory cap (module doc)."""
    from partopt.verify import verify
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MEMORY_FIELDS)
        w.writeheader()
        for name, net, x, g in cases(models):
            for n in devices:
                roomy = paper_like(n, 64 * 2 ** 30)
                c = coedge(g, roomy, model=name).report
                a = evaluate(all_pairs_plan(g, roomy, name), g, roomy)
                hi = max(c.max_peak_memory_bytes, a.max_peak_memory_bytes)
                c_cap = smallest_fit(lambda cap: coedge(g, with_memory(roomy, cap), model=name).feasible, hi)
                i_cap = smallest_fit(lambda cap: iop.heuristic(g, with_memory(roomy, cap), model=name).feasible, hi)
                h = iop.heuristic(g, with_memory(roomy, i_cap), model=name)
                ok = verify(h.plan, net, x, g, with_memory(roomy, i_cap)).ok
                row = {"model": name, "devices": n, "coedge_peak_mib": round(c.max_peak_memory_bytes / MiB, 3),
                       "all_pairs_peak_mib": round(a.max_peak_memory_bytes / MiB, 3),
                       "all_pairs_reduction_pct": round(pct(c.max_peak_memory_bytes, a.max_peak_memory_bytes), 3),
                       "coedge_min_cap_mib": round(c_cap / MiB, 3), "iop_min_cap_mib": round(i_cap / MiB, 3),
                       "cap_reduction_pct": round(pct(c_cap, i_cap), 3), "coedge_s": c.latency_s,
                       "iop_s_at_min_cap": h.report.latency_s, "iop_pairs_at_min_cap": len(h.plan.meta["pairs"]),
                       "verified": ok}
                w.writerow(row)
                fh.flush()
                print(f"{name:12s} {n} coedge {row['coedge_peak_mib']:8.1f} MiB all-pairs {row['all_pairs_peak_mib']:8.1f} "
                      f"({row['all_pairs_reduction_pct']:6.2f} %) | fits in: coedge {row['coedge_min_cap_mib']:8.1f} "
                      f"iop {row['iop_min_cap_mib']:8.1f} ({row['cap_reduction_pct']:6.2f} %) "
                      f"{row['iop_s_at_min_cap']:.4f} s, {row['iop_pairs_at_min_cap']} pairs, verified {ok}",
                      flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["paper", "gap", "large", "baselines", "memory", "all"], default="all")
    ap.add_argument("--memory-csv", default=os.path.join(HERE, "results", "iop_memory.csv"))
    ap.add_argument("--baselines-csv", default=os.path.join(HERE, "results", "iop_baselines.csv"))
    ap.add_argument("--large-csv", default=os.path.join(HERE, "results", "iop_large.csv"))
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--paper-models", default=",".join(PAPER_MODELS))
    ap.add_argument("--solver", default="highs", choices=["cbc", "highs", "cpsat"])
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--csv", default=os.path.join(HERE, "results", "iop_gap.csv"))
    ap.add_argument("--no-cuts", action="store_true",
                    help="the exact model without its per-resource load cuts (by default on HiGHS only)")
    args = ap.parse_args(argv)
    ok = True
    if args.part in ("paper", "all"):
        part_paper(args.paper_models.split(","))
    if args.part in ("gap", "all"):
        cuts = False if args.no_cuts else None
        ok = part_gap(args.models.split(","), args.csv, args.solver, args.time_limit, cuts)
    if args.part in ("large", "all"):
        part_large(args.large_csv, cuts=False if args.no_cuts else None)
    if args.part in ("baselines", "all"):
        part_baselines(args.models.split(","), args.baselines_csv)
    if args.part in ("memory", "all"):
        part_memory([m for m in args.models.split(",") if m != "lenet5"], args.memory_csv)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
