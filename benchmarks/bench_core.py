"""Time graph extraction, evaluate and verify for every zoo model (not a test: numbers only).

    .venv/bin/python benchmarks/bench_core.py [--cluster pi4x4] [--repeat 3] [--csv benchmarks/results/core.csv]

Per model: the median of --repeat runs of LayerGraph.from_module, of coedge planning, of
evaluate on the coedge plan (both with a cold receptive-field cache), and of verify (which also runs the unsplit model once), plus the
process's peak resident memory at the end.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import sys
import time

from partopt.cluster import load_cluster
from partopt.graph import LayerGraph
from partopt.methods.baselines import coedge
from partopt.plan import evaluate
from partopt.verify import verify
from partopt.zoo import CLASSIC as ZOO, example_input, load_model


def timed(fn, repeat):
    out, ts = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", default="pi4x4")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    cluster = load_cluster(args.cluster)
    rows = []
    print(f"{'model':13s} {'ops':>4s} {'extract s':>10s} {'coedge s':>9s} {'evaluate s':>11s} {'verify s':>9s} "
          f"{'verified':>8s}")
    for name in ZOO:
        module, shape, _ = load_model(name)
        x = example_input(shape)
        g, t_graph = timed(lambda: LayerGraph.from_module(module, x), args.repeat)
        cold = lambda: g.__dict__.pop("_cone_cache", None)   # each timed run starts without cached cones
        sol, t_plan = timed(lambda: (cold(), coedge(g, cluster, model=name))[1], args.repeat)
        _, t_eval = timed(lambda: (cold(), evaluate(sol.plan, g, cluster))[1], args.repeat)
        v, t_ver = timed(lambda: verify(sol.plan, module, x, g, cluster), args.repeat)
        rows.append({"model": name, "ops": len(g), "extract_s": t_graph, "coedge_s": t_plan, "evaluate_s": t_eval,
                     "verify_s": t_ver, "verified": v.ok})
        print(f"{name:13s} {len(g):4d} {t_graph:10.3f} {t_plan:9.3f} {t_eval:11.3f} {t_ver:9.3f} {str(v.ok):>8s}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB (cluster {cluster.name}, median of {args.repeat})")
    if args.csv:
        os.makedirs(os.path.dirname(args.csv) or ".", exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0 if all(r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
