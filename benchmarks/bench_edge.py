"""The edge CNNs of the zoo (partopt/zoo_edge.py) under every method `partopt demo` runs.

Every edge model x {pi4x4, hetero3} x every demo method's heuristic: status, latency
(``evaluate``, seconds), planning time (seconds, this machine), and whether the plan verifies
in torch against the unsplit model; a method that does not apply to a model
(:class:`~partopt.errors.NotApplicableError`) is a row with status ``not applicable`` and its
reason. Rows go to benchmarks/results/edge_zoo.csv; the README's table is written from it by
benchmarks/readme_tables.py.

    .venv/bin/python benchmarks/bench_edge.py [--models yolov5n,unet] [--clusters pi4x4]
"""
from __future__ import annotations

import argparse
import csv
import os
import time

from partopt.cluster import preset
from partopt.errors import NotApplicableError
from partopt.graph import LayerGraph
from partopt.methods import METHODS
from partopt.verify import verify
from partopt.zoo import EDGE, example_input, load_model

HERE = os.path.dirname(os.path.abspath(__file__))
FIELDS = ["model", "cluster", "method", "status", "latency_s", "plan_s", "verified", "max_rel_err", "reason"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(EDGE))
    ap.add_argument("--clusters", default="pi4x4,hetero3")
    ap.add_argument("--csv", default=os.path.join(HERE, "results", "edge_zoo.csv"))
    a = ap.parse_args(argv)
    ok = True
    with open(a.csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for name in a.models.split(","):
            net, shape, _ = load_model(name)
            x = example_input(shape)
            for cl_name in a.clusters.split(","):
                cl = preset(cl_name)
                for m, entry in METHODS.items():
                    if not entry.demo:
                        continue
                    g = LayerGraph.from_module(net, x)      # fresh: no caches from the other methods
                    t0 = time.perf_counter()
                    try:
                        sol = entry.heuristic(g, cl, model=name)
                    except NotApplicableError as e:
                        row = {"model": name, "cluster": cl_name, "method": m, "status": "not applicable",
                               "reason": str(e)}
                    else:
                        dt = time.perf_counter() - t0
                        v = verify(sol.plan, net, x, g, cl) if sol.plan is not None else None
                        ok = ok and (v is None or v.ok)
                        row = {"model": name, "cluster": cl_name, "method": m, "status": sol.status,
                               "latency_s": sol.report.latency_s if sol.report else None, "plan_s": round(dt, 3),
                               "verified": v.ok if v else None, "max_rel_err": f"{v.max_rel_err:.1e}" if v else None,
                               "reason": sol.reason or ""}
                    w.writerow(row)
                    fh.flush()
                    print(f"{name:18s} {cl_name:8s} {m:10s} {row['status']:14s} {row.get('latency_s') or float('nan'):9.4f} s "
                          f"plan {row.get('plan_s') or 0:6.2f} s verified {row.get('verified')}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
