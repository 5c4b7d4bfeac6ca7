"""RFS + DPFP benchmarks (numbers, not tests).

    .venv/bin/python benchmarks/bench_dpfp.py [--part paper|exact|all] [--models vgg16,...]

Part "paper": the paper's comparison on the (assumed) dpfp-paper setup: DPFP against
stand-alone (single), MoDNN-style layer-wise, a single fused block (DeepThings-style) and
CoEdge, for 2-4 edge servers and bandwidth x {0.5, 1, 2, 4}; printed beside the paper's
"VGG-16 up to 73 % faster than stand-alone, faster than MoDNN in every scenario".

Part "gap": DPFP (speed-proportional rows) against the exact twin with optimal integer rows,
on --gap-models x {2, 3, 4, 6, 8} devices x bandwidth {0.1, 1, 10} x the preset's: the
heuristic's gap to the proven optimum, (DPFP - optimum) / optimum, and the exact model's solve
time. Rows go to benchmarks/results/dpfp_gap.csv (LeNet-5, AlexNet); the larger models'
committed rows are benchmarks/results/dpfp_gap_large.csv (``--part gap --gap-models
vgg11,resnet18,yolov2_tiny,vgg16 --gap-csv benchmarks/results/dpfp_gap_large.csv``, hours).
The README's table is written from both by benchmarks/readme_tables.py.

Part "zoo": DPFP exact on every zoo model x pi4x2, pi4x4, pi4x8, hetero3 and dpfp-paper, and
again with the non-source devices listed in reverse: status, solve time, the heuristic's gap.
Rows go to benchmarks/results/dpfp_zoo.csv.

Part "speed": the DPFP heuristic's planning time (best of 3) on every zoo model x the same
presets. Rows go to benchmarks/results/dpfp_speed.csv.

Part "exact": the DP against the blocking model with the memory rule (CBC, HiGHS, CP-SAT;
:mod:`partopt.methods.segment_path`) on every zoo model x {2, 3, 4, 6, 8} devices x {the
preset's bandwidth, 10x lower, 10x higher}: does every solver prove the DP's value optimal, and
how long do they take. Rows go to benchmarks/results/dpfp_exact.csv.
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
from partopt.methods import dpfp, segment_path
from partopt.methods.baselines import coedge, layerwise, single
from partopt.solvers import heuristic_gap
from partopt.zoo import CLASSIC as ZOO, example_input, load_model

HERE = os.path.dirname(os.path.abspath(__file__))


def graph_of(name):
    m, s, _ = load_model(name)
    return LayerGraph.from_module(m, example_input(s))


def sweep(devices, factors, prefix="n"):
    """Clusters of the dpfp-paper kind with ``devices`` servers and bandwidth x ``factors``."""
    base = preset("dpfp-paper")
    for n in devices:
        for f in factors:
            yield n, f, homogeneous(n, bandwidth_bytes_per_s=base.bw("es0", "es1") * f, latency_s=base.latency_s,
                                    link=base.link, prefix="es", name=f"{prefix}{n}-bw{f}")


PAPER_FIELDS = ["model", "devices", "bandwidth_factor", "single_s", "layerwise_s", "fused_s", "coedge_s", "dpfp_s"]


def part_paper(models, out_csv=None):
    """The paper's comparison (module doc), printed; the rows also go to ``out_csv``."""
    print("Paper comparison (dpfp-paper is an ASSUMED setup; see partopt/cluster.py)")
    print(f"{'model':12s} {'n':>2s} {'bw x':>5s} {'single s':>9s} {'layerwise':>9s} {'fused':>9s} {'coedge':>9s} "
          f"{'dpfp':>9s} {'dpfp vs single':>15s} {'dpfp vs MoDNN':>14s}")
    rows = []
    for name in models:
        g = graph_of(name)
        for n, f, cl in sweep((2, 3, 4), (0.5, 1, 2, 4), "dpfp-paper-n"):
            t = {k: fn(g, cl, model=name).report.latency_s for k, fn in
                 (("single", single), ("layerwise", layerwise), ("fused", dpfp.fused), ("coedge", coedge),
                  ("dpfp", dpfp.heuristic))}
            red = 100 * (1 - t["dpfp"] / t["single"])
            rows.append((name, n, f, t, red))
            print(f"{name:12s} {n:2d} {f:5g} {t['single']:9.4f} {t['layerwise']:9.4f} {t['fused']:9.4f} "
                  f"{t['coedge']:9.4f} {t['dpfp']:9.4f} {red:+8.1f} % ({t['single'] / t['dpfp']:4.2f}x) "
                  f"{t['layerwise'] / t['dpfp']:8.2f}x")
    if out_csv:
        with open(out_csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=PAPER_FIELDS)
            w.writeheader()
            for name, n, f, t, _ in rows:
                w.writerow({"model": name, "devices": n, "bandwidth_factor": f, **{f"{k}_s": v for k, v in t.items()}})
    for name in models:
        rs = [r for r in rows if r[0] == name]
        best = max(r[4] for r in rs)
        beats = sum(r[3]["dpfp"] < r[3]["layerwise"] for r in rs)
        print(f"{name}: DPFP up to {best:.1f} % lower latency than stand-alone (paper, VGG-16: up to 73 %); "
              f"faster than MoDNN-style layer-wise in {beats}/{len(rs)} scenarios (paper: all)")


def part_exact(models, out_csv):
    rows = []
    print(f"{'model':12s} {'n':>2s} {'bw x':>5s} {'units':>5s} {'table s':>8s} {'dp s':>7s} "
          f"{'cbc s':>7s} {'highs s':>7s} {'cpsat s':>7s}  agree")
    for name in models:
        g = graph_of(name)
        for n, f, cl in sweep((2, 3, 4, 6, 8), (0.1, 1, 10)):
            t0 = time.perf_counter()
            p = dpfp.problem(g, cl)
            t_table = time.perf_counter() - t0
            t0 = time.perf_counter()
            v_dp, _ = dpfp.dp(p)
            t_dp = time.perf_counter() - t0
            row = {"model": name, "devices": n, "bandwidth_factor": f, "units": p.n, "table_s": t_table,
                   "dp_s": t_dp, "dp_latency_s": v_dp}
            agree = True
            arcs, last = dpfp.arcs(p)
            for solver in ("cbc", "highs", "cpsat"):
                # the blocking with the memory rule (memory to spare on these clusters: the
                # optimum is the DP's)
                r, _ = segment_path.solve(arcs, last, cl, solver, 120)
                obj = r.objective
                ok = r.status == "optimal" and abs(obj - v_dp) <= 1e-9 * (p.n + 1) + 1e-9 * v_dp
                agree &= ok
                row[f"{solver}_status"] = r.status
                row[f"{solver}_s"] = r.solve_s
                row[f"{solver}_latency_s"] = obj
            row["agree"] = agree
            rows.append(row)
            print(f"{name:12s} {n:2d} {f:5g} {p.n:5d} {t_table:8.2f} {t_dp:7.4f} {row['cbc_s']:7.3f} "
                  f"{row['highs_s']:7.3f} {row['cpsat_s']:7.3f}  {agree}", flush=True)
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{sum(r['agree'] for r in rows)}/{len(rows)} instances: every solver optimal and equal to the DP")
    for s in ("dp", "cbc", "highs", "cpsat"):
        ts = [r[f"{s}_s"] for r in rows]
        print(f"  {s:6s} solve time median {statistics.median(ts):.4f} s, max {max(ts):.4f} s")
    return all(r["agree"] for r in rows)


def part_gap(models, out_csv, solver="cpsat"):
    """Rows are appended to ``out_csv`` as they finish, so an interrupted sweep keeps them."""
    rows = []
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    fields = ["model", "devices", "bandwidth_factor", "dpfp_latency_s", "exact_latency_s", "exact_status",
              "exact_bound_s", "dpfp_gap_pct", "exact_solve_s", "solver"]
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        print(f"{'model':12s} {'n':>2s} {'bw x':>5s} {'dpfp s':>9s} {'exact s':>9s} {'status':>8s} {'gap %':>7s} "
              f"{'solve s':>8s}")
        for name in models:
            g = graph_of(name)
            for n, f, cl in sweep((2, 3, 4, 6, 8), (0.1, 1, 10)):
                h = dpfp.heuristic(g, cl, model=name)
                e = dpfp.exact(g, cl, model=name, solver=solver, block_time_limit=30)
                gap = 100 * heuristic_gap(h.report.latency_s, e.report.latency_s)
                row = {"model": name, "devices": n, "bandwidth_factor": f, "dpfp_latency_s": h.report.latency_s,
                       "exact_latency_s": e.report.latency_s, "exact_status": e.status, "exact_bound_s": e.bound,
                       "dpfp_gap_pct": gap, "exact_solve_s": e.solve_s, "solver": solver}
                rows.append(row)
                w.writerow(row)
                fh.flush()
                print(f"{name:12s} {n:2d} {f:5g} {h.report.latency_s:9.5f} {e.report.latency_s:9.5f} {e.status:>8s} "
                      f"{gap:7.2f} {e.solve_s:8.1f}", flush=True)
    gaps = sorted(r["dpfp_gap_pct"] for r in rows)
    print(f"DPFP gap to the exact optimum over {len(rows)} instances: median {statistics.median(gaps):.2f} %, "
          f"max {gaps[-1]:.2f} %, min {gaps[0]:.2f} %; {sum(r['exact_status'] == 'optimal' for r in rows)} proven optimal")


ZOO_CLUSTERS = ("pi4x2", "pi4x4", "pi4x8", "hetero3", "dpfp-paper")


def part_speed(models, out_csv, repeat=3):
    """The DPFP heuristic's planning time (the best of ``repeat`` runs, seconds) on every zoo
    model x every preset of 2-8 devices."""
    rows = []
    for name in models:
        g = graph_of(name)
        for cname in ZOO_CLUSTERS:
            cl = preset(cname)
            times = []
            for _ in range(repeat):
                s = dpfp.heuristic(g, cl, model=name)
                times.append(s.solve_s)
            rows.append({"model": name, "cluster": cname, "units": len(dpfp.spatial_units(g)[0]),
                         "plan_s": round(min(times), 4), "latency_s": s.report.latency_s})
            print(f"{name:12s} {cname:10s} {min(times):7.3f} s", flush=True)
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ts = [r["plan_s"] for r in rows]
    print(f"DPFP heuristic planning time over {len(rows)} instances: median {statistics.median(ts):.3f} s, "
          f"max {max(ts):.3f} s")


def part_zoo(models, out_csv, solver="highs"):
    """DPFP exact (row DP + the blocking model with memory) on every zoo model x the presets
    of 2-8 devices, against the heuristic, and again with the non-source devices listed in the
    reverse order: is every instance proven optimal, how long does it take, does the optimum
    depend on the listing. Rows to ``out_csv`` as they finish."""
    fields = ["model", "cluster", "devices", "link", "dpfp_latency_s", "exact_latency_s", "exact_status",
              "exact_solve_s", "dpfp_gap_pct", "reversed_latency_s", "same_when_reversed", "blocks", "solver"]
    rows = []
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for name in models:
            g = graph_of(name)
            for cname in ZOO_CLUSTERS:
                cl = preset(cname)
                h = dpfp.heuristic(g, cl, model=name)
                e = dpfp.exact(g, cl, model=name, solver=solver)
                src = cl.names[0]
                rev = cl.subset([src] + cl.names[1:][::-1])
                r = dpfp.exact(g, rev, model=name, solver=solver)
                row = {"model": name, "cluster": cname, "devices": len(cl), "link": cl.link,
                       "dpfp_latency_s": h.report.latency_s, "exact_latency_s": e.report.latency_s,
                       "exact_status": e.status, "exact_solve_s": round(e.solve_s, 3),
                       "dpfp_gap_pct": 100 * heuristic_gap(h.report.latency_s, e.report.latency_s),
                       "reversed_latency_s": r.report.latency_s,
                       "same_when_reversed": abs(r.report.latency_s - e.report.latency_s) <= 1e-9 * e.report.latency_s,
                       "blocks": len(e.plan.meta["blocks"]), "solver": solver}
                rows.append(row)
                w.writerow(row)
                fh.flush()
                print(f"{name:12s} {cname:10s} {h.report.latency_s:9.5f} {e.report.latency_s:9.5f} {e.status:>8s} "
                      f"{e.solve_s:7.2f} s  reversed {r.report.latency_s:9.5f}", flush=True)
    ts = [r["exact_solve_s"] for r in rows]
    print(f"{sum(r['exact_status'] == 'optimal' for r in rows)}/{len(rows)} proven optimal; solve time median "
          f"{statistics.median(ts):.2f} s, max {max(ts):.2f} s; same optimum with the devices listed in reverse: "
          f"{sum(r['same_when_reversed'] for r in rows)}/{len(rows)}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["paper", "exact", "gap", "zoo", "speed", "all"], default="all")
    ap.add_argument("--speed-csv", default=os.path.join(HERE, "results", "dpfp_speed.csv"))
    ap.add_argument("--zoo-csv", default=os.path.join(HERE, "results", "dpfp_zoo.csv"))
    ap.add_argument("--gap-models", default="lenet5,alexnet")
    ap.add_argument("--gap-solver", default="cpsat", choices=["cbc", "highs", "cpsat"])
    ap.add_argument("--gap-csv", default=os.path.join(HERE, "results", "dpfp_gap.csv"))
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--paper-models", default="vgg16,vgg11,alexnet,resnet18")
    ap.add_argument("--paper-csv", default=os.path.join(HERE, "results", "dpfp_paper.csv"))
    ap.add_argument("--csv", default=os.path.join(HERE, "results", "dpfp_exact.csv"))
    args = ap.parse_args(argv)
    ok = True
    if args.part in ("paper", "all"):
        part_paper(args.paper_models.split(","), args.paper_csv)
    if args.part in ("exact", "all"):
        ok = part_exact(args.models.split(","), args.csv)
    if args.part in ("gap", "all"):
        part_gap(args.gap_models.split(","), args.gap_csv, args.gap_solver)
    if args.part in ("zoo", "all"):
        part_zoo(args.models.split(","), args.zoo_csv)
    if args.part in ("speed", "all"):
        part_speed(args.models.split(","), args.speed_csv)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
