"""``best`` against every other method's heuristic and against the lower bound (numbers, not tests).

Every zoo model x every general preset (and LeNet-5 on the dn2pciot-* presets): the latency of
``best`` and of each other demo method's heuristic (``evaluate``), the lower bound of
:mod:`partopt.bounds`, ``best``'s planning time (seconds, this machine), where its plan came
from, and whether it verifies in torch. Rows go to benchmarks/results/best.csv as they finish;
the README's table is written from it by benchmarks/readme_tables.py.

    .venv/bin/python benchmarks/bench_best.py [--models lenet5,alexnet] [--clusters pi4x4]
    .venv/bin/python benchmarks/bench_best.py --part exact    # best --exact, results/best_exact.csv

Part "exact": ``best --exact`` on LeNet-5, AlexNet, ResNet-18 and YOLOv2-tiny x pi4x2, pi4x4,
hetero3 with HiGHS and CP-SAT (60 s limit): status, latency against the heuristic's, solve time.
"""
from __future__ import annotations

import argparse
import csv
import os
import time

from partopt.bounds import lower_bound
from partopt.cluster import PRESETS, preset
from partopt.graph import LayerGraph
from partopt.methods import METHODS
from partopt.verify import verify
from partopt.zoo import CLASSIC as ZOO, example_input, load_model

HERE = os.path.dirname(os.path.abspath(__file__))
OTHERS = [m for m in METHODS if m != "best"]     # the DN2PCIoT family only on LeNet-5
FIELDS = ["model", "cluster", "best_s", "best_plan_s", "origin", "verified", "max_rel_err", "lower_bound_s",
          "best_over_bound", "best_other", "best_other_s"] + [f"{m}_s" for m in OTHERS] + ["machine_ref_s"]


def machine_reference_s() -> float:
    """Seconds of a fixed pure-Python loop (10**7 additions; the best of 3), so planning times of
    runs on different machines can be compared (planning is pure Python and NumPy on one core)."""
    best = float("inf")
    for _ in range(3):
        t0, s = time.perf_counter(), 0
        for i in range(10 ** 7):
            s += i
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def instances(models, clusters):
    for name in models:
        for cl in clusters:
            if cl.startswith("dn2pciot") and name != "lenet5":
                continue
            yield name, cl


EXACT_FIELDS = ["model", "cluster", "solver", "status", "latency_s", "heuristic_s", "bound_s", "gap", "solve_s",
                "origin", "verified"]


def part_exact(models, clusters, path, time_limit=60.0):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=EXACT_FIELDS)
        w.writeheader()
        for name in models:
            net, shape, _ = load_model(name)
            x = example_input(shape)
            g = LayerGraph.from_module(net, x)
            for cl_name in clusters:
                cl = preset(cl_name)
                h = METHODS["best"].heuristic(g, cl, model=name)
                for solver in ("highs", "cpsat"):
                    e = METHODS["best"].exact(g, cl, model=name, solver=solver, time_limit=time_limit)
                    v = verify(e.plan, net, x, g, cl) if e.feasible else None
                    row = {"model": name, "cluster": cl_name, "solver": solver, "status": e.status,
                           "latency_s": e.report.latency_s, "heuristic_s": h.report.latency_s, "bound_s": e.bound,
                           "gap": e.gap, "solve_s": round(e.solve_s, 2), "origin": e.plan.meta.get("origin"),
                           "verified": v.ok if v else None}
                    w.writerow(row)
                    fh.flush()
                    print(f"{name:12s} {cl_name:8s} {solver:6s} {e.status:9s} {e.report.latency_s:.5f} "
                          f"(heuristic {h.report.latency_s:.5f}) {e.solve_s:6.1f} s {row['origin']} "
                          f"verified {row['verified']}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["heuristic", "exact"], default="heuristic")
    ap.add_argument("--models", default=None)
    ap.add_argument("--clusters", default=None)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args(argv)
    if a.part == "exact":
        part_exact((a.models or "lenet5,alexnet,resnet18,yolov2_tiny").split(","),
                   (a.clusters or "pi4x2,pi4x4,hetero3").split(","),
                   a.csv or os.path.join(HERE, "results", "best_exact.csv"))
        return 0
    a.models = a.models or ",".join(ZOO)
    a.clusters = a.clusters or ",".join(PRESETS)
    a.csv = a.csv or os.path.join(HERE, "results", "best.csv")
    graphs = {}
    ref = machine_reference_s()
    with open(a.csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for name, cl_name in instances(a.models.split(","), a.clusters.split(",")):
            if name not in graphs:
                net, shape, _ = load_model(name)
                x = example_input(shape)
                graphs[name] = (net, x, LayerGraph.from_module(net, x))
            net, x, g = graphs[name]
            cl = preset(cl_name)
            others = {}
            for m in OTHERS:
                if m.startswith("dn2pciot") and name != "lenet5":
                    others[m] = None
                    continue
                s = METHODS[m].heuristic(g, cl, model=name)
                others[m] = s.report.latency_s if s.feasible else None
            cold = LayerGraph.from_module(net, x)      # best's time with no cones or routes cached
            t0 = time.perf_counter()
            b = METHODS["best"].heuristic(cold, cl, model=name)
            dt = time.perf_counter() - t0
            v = verify(b.plan, net, x, g, cl) if b.feasible else None
            lb = lower_bound(g, cl, source=b.plan.source, sink=b.plan.sink).seconds
            feas = {m: t for m, t in others.items() if t is not None}
            bo = min(feas, key=feas.get) if feas else None
            row = {"model": name, "cluster": cl_name, "best_s": b.report.latency_s if b.feasible else None,
                   "best_plan_s": round(dt, 3), "origin": b.plan.meta.get("origin") if b.feasible else b.reason,
                   "verified": v.ok if v else None, "max_rel_err": f"{v.max_rel_err:.1e}" if v else None,
                   "lower_bound_s": lb, "best_over_bound": b.report.latency_s / lb if b.feasible else None,
                   "best_other": bo, "best_other_s": feas.get(bo),
                   **{f"{m}_s": t for m, t in others.items()}, "machine_ref_s": ref}
            w.writerow(row)
            fh.flush()
            print(f"{name:12s} {cl_name:11s} best {row['best_s'] or float('nan'):.5f} ({row['origin']}) "
                  f"other {row['best_other_s'] or float('nan'):.5f} ({bo}) lb {lb:.5f} "
                  f"x{row['best_over_bound'] or float('nan'):.2f} plan {dt:.2f} s verified {row['verified']}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
