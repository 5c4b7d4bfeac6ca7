"""NPTP benchmarks: the paper's comparison, the heuristic against the exact tile model, and the
exact model's solve time as the grid grows.

Part "paper": on the ``nptp-paper`` preset (ASSUMED: four Raspberry-Pi-4-class devices on one
Wi-Fi channel; the paper's testbed is not in the stored text) at bandwidth x{0.25, 1, 4}, the
paper's "four widely-adopted DNN models" (ASSUMED: VGG-11, VGG-16, ResNet-18, YOLOv2-tiny) at
their default input and at 2x: latency of CoEdge's strips, DeepThings' FTP grid and NPTP (MPA
as read, see partopt.methods.nptp), NPTP's speed-up over CoEdge printed beside the paper's
1.44-1.68x. Every plan is priced by ``evaluate``; plans at the default input are verified in
torch here (the 2x inputs are verified by ``pytest -m slow tests/test_nptp.py``).

Part "gap": the tile model (module doc of partopt.methods.nptp) on grids of 4x4, 6x6 and 8x8
cells, 4 devices (homogeneous shared Wi-Fi, and heterogeneous 10/20/30/10 GFLOP/s on a mesh
at 12.5 MB/s), the four models: the grid heuristic (MPA on the cells) against the exact
CP-SAT optimum, in the tile model, and both tilings' plans priced by ``evaluate``.

Part "growth": CP-SAT's solve time on YOLOv2-tiny and VGG-16, heterogeneous 4 devices, as
the grid grows from 2x2 to 10x10 (time limit 60 s).

Part "regime": where NPTP's speed-up appears. YOLOv2-tiny and VGG-16 at input sides 224-1024,
bandwidth x{0.1, 0.3, 1, 3, 10} of 6.25 MB/s (2 ms per message), 4 and 8 Pi-4-class devices
(8 GFLOP/s; 8 GiB each, so that memory never decides and speed alone is compared), on one
shared channel and on a mesh: latency of NPTP, CoEdge and FTP by ``evaluate`` (not run in
torch here: the plans are the heuristics' own, whose geometry the tests verify; a 1024x1024
VGG-16 takes minutes per run on this CPU). Rows go to benchmarks/results/nptp_regime.csv;
``partopt report benchmarks/results/nptp_regime.csv`` draws the heat maps.

    python benchmarks/bench_nptp.py --part paper|gap|growth|regime
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys

from partopt.cluster import heterogeneous, preset
from partopt.graph import LayerGraph
from partopt.methods import nptp
from partopt.methods.baselines import coedge
from partopt.plan import evaluate
from partopt.verify import verify
from partopt.zoo import example_input, load_model

HERE = os.path.dirname(os.path.abspath(__file__))
GiB = 2 ** 30
PAPER_MODELS = ["vgg11", "vgg16", "resnet18", "yolov2_tiny"]


def load(name, scale=1):
    net, shape, _ = load_model(name)
    shape = (shape[0], shape[1], shape[2] * scale, shape[3] * scale)
    x = example_input(shape)
    return net, x, LayerGraph.from_module(net, x)


def het4():
    return heterogeneous([("d0", 10e9, 4 * GiB), ("d1", 20e9, 4 * GiB), ("d2", 30e9, 4 * GiB),
                          ("d3", 10e9, 4 * GiB)], 12.5e6, 0.001, "mesh", "het4-mesh")


def part_paper(out):
    base = preset("nptp-paper")
    print("NPTP vs CoEdge on nptp-paper (ASSUMED: 4 Pi-4-class devices, shared Wi-Fi 6.25 MB/s x scale)", file=out)
    print("paper: NPTP 1.44-1.68x faster than CoEdge (four models, its testbed)\n", file=out)
    print("| model | input | bw x | CoEdge s | FTP s | NPTP s | NPTP orientation | speed-up vs CoEdge | paper | "
          "verified |", file=out)
    print("|---|---|---|---|---|---|---|---|---|---|", file=out)
    ups = []
    for name in PAPER_MODELS:
        for scale in (1, 2):
            net, x, g = load(name, scale)
            for bw in (0.25, 1.0, 4.0):
                cl = base.scaled(bw, name=f"nptp-paper-x{bw:g}")
                c, f, h = coedge(g, cl, model=name), nptp.ftp(g, cl, model=name), nptp.heuristic(g, cl, model=name)
                ver = "-"
                if scale == 1:
                    oks = [verify(s.plan, net, x, g, cl) for s in (c, f, h)]
                    ver = "yes" if all(v.ok and v.max_rel_err <= 1e-4 for v in oks) else "NO"
                up = c.report.latency_s / h.report.latency_s
                ups.append(up)
                print(f"| {name} | {x.shape[2]}x{x.shape[3]} | {bw:g} | {c.report.latency_s:.4f} | "
                      f"{f.report.latency_s:.4f} | {h.report.latency_s:.4f} | {h.plan.meta['orientation']} | "
                      f"{up:.2f}x | 1.44-1.68x | {ver} |", file=out, flush=True)
    print(f"\nspeed-up over CoEdge: min {min(ups):.2f}x, median {statistics.median(ups):.2f}x, max {max(ups):.2f}x "
          f"({len(ups)} instances)", file=out)


GAP_FIELDS = ["model", "cluster", "grid", "status", "heur_tile_s", "exact_tile_s", "gap_pct", "bound_s",
              "solve_s", "heur_eval_s", "exact_eval_s", "heur_cells", "exact_cells"]


def row_of(name, g, cl, G, time_limit):
    tm = nptp.tile_model(g, cl, (G, G))
    h_rects, h_cost = nptp.grid_heuristic(tm)
    r = nptp.solve_tiles(tm, "cpsat", time_limit)
    ev = {k: evaluate(nptp.plan_of_cells(g, cl, rects, (G, G), model=name), g, cl).latency_s
          for k, rects in (("h", h_rects), ("x", r.rects))}
    return {"model": name, "cluster": cl.name, "grid": f"{G}x{G}", "status": r.status,
            "heur_tile_s": h_cost, "exact_tile_s": r.latency_s, "gap_pct": 100 * (h_cost - r.latency_s) / r.latency_s,
            "bound_s": r.bound_s, "solve_s": r.solve_s, "heur_eval_s": ev["h"], "exact_eval_s": ev["x"],
            "heur_cells": h_rects, "exact_cells": r.rects}


def part_gap(out, time_limit=300):
    path = os.path.join(HERE, "results", "nptp_gap.csv")
    rows = []
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=GAP_FIELDS)
        w.writeheader()
        for name in PAPER_MODELS:
            _, _, g = load(name)
            for cl in (preset("nptp-paper"), het4()):
                for G in (4, 6, 8):
                    row = row_of(name, g, cl, G, time_limit)
                    rows.append(row)
                    w.writerow(row)
                    fh.flush()
                    print(f"{name} {cl.name} {G}x{G}: {row['status']} heuristic {row['heur_tile_s']:.4f} s, exact "
                          f"{row['exact_tile_s']:.4f} s, gap {row['gap_pct']:.2f} %, {row['solve_s']:.1f} s; "
                          f"evaluate: heuristic {row['heur_eval_s']:.4f} s, exact {row['exact_eval_s']:.4f} s",
                          file=sys.stderr, flush=True)
    gaps = [r["gap_pct"] for r in rows]
    opt = sum(r["status"] == "optimal" for r in rows)
    print(f"NPTP tile model, grid heuristic (MPA on cells) vs exact (CP-SAT, {time_limit} s limit): "
          f"{len(rows)} instances, {opt} proven optimal", file=out)
    print(f"heuristic gap %: median {statistics.median(gaps):.2f}, max {max(gaps):.2f}, zero in "
          f"{sum(x < 1e-6 for x in gaps)}; exact never worse: {all(x > -1e-6 for x in gaps)}", file=out)
    better_eval = sum(r["exact_eval_s"] < r["heur_eval_s"] - 1e-12 for r in rows)
    worse_eval = sum(r["exact_eval_s"] > r["heur_eval_s"] + 1e-12 for r in rows)
    print(f"priced by evaluate: the exact tiling's plan is faster in {better_eval}, slower in {worse_eval}, "
          f"equal in {len(rows) - better_eval - worse_eval} instances\n", file=out)
    print("| model | cluster | grid | status | heuristic tile s | exact tile s | gap % | solve s | "
          "heuristic evaluate s | exact evaluate s |", file=out)
    print("|---|---|---|---|---|---|---|---|---|---|", file=out)
    for r in rows:
        print(f"| {r['model']} | {r['cluster']} | {r['grid']} | {r['status']} | {r['heur_tile_s']:.4f} | "
              f"{r['exact_tile_s']:.4f} | {r['gap_pct']:.2f} | {r['solve_s']:.1f} | {r['heur_eval_s']:.4f} | "
              f"{r['exact_eval_s']:.4f} |", file=out)


def part_growth(out, time_limit=60):
    print(f"CP-SAT solve time of the NPTP tile model as the grid grows (het4-mesh, {time_limit} s limit, "
          f"2 workers)\n", file=out)
    print("| model | grid | cells | status | solve s | exact tile s | heuristic tile s | gap to bound % |", file=out)
    print("|---|---|---|---|---|---|---|---|", file=out)
    cl = het4()
    for name in ("yolov2_tiny", "vgg16"):
        _, _, g = load(name)
        for G in (2, 3, 4, 5, 6, 7, 8, 10):
            tm = nptp.tile_model(g, cl, (G, G))
            r = nptp.solve_tiles(tm, "cpsat", time_limit, threads=2)
            h = nptp.grid_heuristic(tm)[1]
            gb = 100 * (r.latency_s - r.bound_s) / r.latency_s if r.bound_s is not None else float("nan")
            print(f"| {name} | {G}x{G} | {G * G} | {r.status} | {r.solve_s:.1f} | {r.latency_s:.4f} | {h:.4f} | "
                  f"{gb:.2f} |", file=out, flush=True)


REGIME_FIELDS = ["model", "input_side", "bandwidth_factor", "devices", "link", "nptp_s", "coedge_s", "ftp_s",
                 "nptp_orientation", "speedup_vs_coedge", "speedup_vs_ftp"]
REGIME_SIDES = (224, 320, 416, 512, 640, 832, 1024)
REGIME_BANDWIDTHS = (0.1, 0.3, 1.0, 3.0, 10.0)


def part_regime(out, models=("yolov2_tiny", "vgg16"), csv_path=None):
    from partopt.cluster import homogeneous
    csv_path = csv_path or os.path.join(HERE, "results", "nptp_regime.csv")
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=REGIME_FIELDS)
        w.writeheader()
        for name in models:
            net, shape, _ = load_model(name)
            for side in REGIME_SIDES:
                g = LayerGraph.from_module(net, example_input((1, shape[1], side, side)))
                for n in (4, 8):
                    for link in ("shared", "mesh"):
                        for f in REGIME_BANDWIDTHS:
                            cl = homogeneous(n, memory_bytes=8 * GiB, bandwidth_bytes_per_s=6.25e6 * f, link=link,
                                             name=f"pi4x{n}-{link}-x{f:g}")
                            h, c, t = (nptp.heuristic(g, cl, model=name), coedge(g, cl, model=name),
                                       nptp.ftp(g, cl, model=name))
                            row = {"model": name, "input_side": side, "bandwidth_factor": f, "devices": n, "link": link,
                                   "nptp_s": h.report.latency_s, "coedge_s": c.report.latency_s,
                                   "ftp_s": t.report.latency_s, "nptp_orientation": h.plan.meta.get("orientation"),
                                   "speedup_vs_coedge": round(c.report.latency_s / h.report.latency_s, 4),
                                   "speedup_vs_ftp": round(t.report.latency_s / h.report.latency_s, 4)}
                            w.writerow(row)
                            fh.flush()
                            print(f"{name:12s} {side:5d} x{f:<4g} {n} {link:6s} nptp {row['nptp_s']:8.4f} "
                                  f"coedge {row['coedge_s']:8.4f} ftp {row['ftp_s']:8.4f} "
                                  f"x{row['speedup_vs_coedge']:.3f} vs coedge", file=out, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["paper", "gap", "growth", "regime"], required=True)
    ap.add_argument("--out", help="also write the table here (default benchmarks/results/nptp_<part>.txt)")
    a = ap.parse_args(argv)
    path = a.out or os.path.join(HERE, "results", f"nptp_{a.part}.txt")

    class Tee:
        def __init__(self, fh):
            self.fh = fh

        def write(self, s):
            sys.stdout.write(s)
            self.fh.write(s)

        def flush(self):
            sys.stdout.flush()
            self.fh.flush()

    with open(path, "w") as fh:
        {"paper": part_paper, "gap": part_gap, "growth": part_growth, "regime": part_regime}[a.part](Tee(fh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
