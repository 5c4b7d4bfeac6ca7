"""Every method's plan run for real across processes (`partopt.runtime.run`), beside the cost model.

For each model (VGG-16, ResNet-18; LeNet-5 for the DN2PCIoT family, which plans small chain
CNNs only) the machine is first calibrated (`partopt.calibrate.calibrate` on that model: a rate
per op kind, fitted by least squares over the timed ops, and the per-task overhead probed with a
run across processes; `--one-speed`: one FLOP/s and no overhead, the cost model before rates per
kind), then every method plans on the calibrated clusters below, and each
plan runs with one process per device (gloo, network emulated, 1 warm-up + 3 timed runs, the
median reported). Per run: output error against the unsplit model, bytes moved against
planned, measured and predicted latency and their ratio, and per rank the measured and
predicted compute seconds.

Clusters (all devices at the calibrated speed, 1.5 GiB each):
  wifi2, wifi3, wifi4: one shared Wi-Fi channel at 6.25 MB/s, 2 ms per message (as pi4x4);
  mesh2, mesh4: a switched mesh at 12.5 MB/s per ordered pair, 1 ms;
  mesh4c: mesh4 at the speed calibrated with 4 processes at once (`calibrate(concurrent=4)`):
    with more ranks than cores, ranks that compute at the same time share a core;
  mesh4p: mesh4c with compute paced to the modelled rates (`RunOptions(pace_compute=True)`),
    so a rank computing alone is no faster than one of four sharing the 2 cores.
Methods: single, layerwise, coedge, fused, dpfp, iop, iop+pair (IOP with its first legal pair
forced, so partial sums cross processes), nptp, ftp; on LeNet-5 also dn2pciot and its baselines.

    python benchmarks/bench_runtime.py [--models vgg16,resnet18] [--clusters wifi2,mesh4] [--scale 1]

Rows go to benchmarks/results/runtime.csv (rewritten), each calibration (rates per kind,
overheads, residual) to runtime_calibration.csv, and a summary to runtime.txt: the
latency ratios, and per model and cluster how well the method ranking by measured latency
agrees with the ranking by predicted latency (`ranking`). `--summarise CSV` rewrites the
summary from an earlier CSV without running anything.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import sys
import time

from partopt.calibrate import calibrate
from partopt.cluster import Device, homogeneous
from partopt.graph import LayerGraph
from partopt.methods import METHODS, iop
from partopt.runtime import RunOptions, run
from partopt.zoo import example_input, load_model

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTERS = {
    "wifi2": dict(n=2, bandwidth_bytes_per_s=6.25e6, latency_s=0.002, link="shared"),
    "wifi3": dict(n=3, bandwidth_bytes_per_s=6.25e6, latency_s=0.002, link="shared"),
    "wifi4": dict(n=4, bandwidth_bytes_per_s=6.25e6, latency_s=0.002, link="shared"),
    "mesh4": dict(n=4, bandwidth_bytes_per_s=12.5e6, latency_s=0.001, link="mesh"),
    "mesh2": dict(n=2, bandwidth_bytes_per_s=12.5e6, latency_s=0.001, link="mesh"),
    # mesh4 at the speed calibrated with 4 processes timing at once (4 ranks share 2 cores)
    "mesh4c": dict(n=4, bandwidth_bytes_per_s=12.5e6, latency_s=0.001, link="mesh", concurrent=4),
    # mesh4c with compute paced to the modelled rates (`run --pace-compute`): each emulated device
    # is no faster than this machine's share when 4 ranks compute at once, as the network is paced
    "mesh4p": dict(n=4, bandwidth_bytes_per_s=12.5e6, latency_s=0.001, link="mesh", concurrent=4, pace=True),
}
CNN_METHODS = ["single", "layerwise", "coedge", "fused", "dpfp", "iop", "iop+pair", "nptp", "ftp"]
CHAIN_METHODS = ["dn2pciot", "dn2pciot-metis", "dn2pciot-per-layer", "dn2pciot-greedy"]
FIELDS = ["model", "cluster", "world", "method", "ok", "max_rel_err", "bytes_moved", "bytes_planned",
          "latency_s", "predicted_s", "ratio", "compute_ratio_min", "compute_ratio_max", "wall_s", "reason"]


def plan_for(method, graph, cluster, model):
    if method == "iop+pair":
        pairs = iop.legal_pairs(graph, len(cluster))
        if not pairs:
            return None
        return iop.heuristic(graph, cluster, model=model, pairs=[(pairs[0].a, pairs[0].b)]).plan
    return METHODS[method].heuristic(graph, cluster, model=model).plan


def ranking(rows: list[dict], band: float = 1.25) -> dict:
    """How far the order of methods by measured latency agrees with the order by predicted latency.

    Per (model, cluster), every pair of methods is compared. ``tau`` is Kendall's tau over all
    pairs (ties in either order count as neither concordant nor discordant). Pairs whose
    predictions differ by more than ``band`` (the run-to-run noise seen on this machine) are
    the ones a ranking must get right: ``clear`` counts them and ``clear_flipped`` lists those
    measured in the opposite order.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["cluster"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        conc = disc = clear = 0
        flipped = []
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                pa, pb = float(rs[i]["predicted_s"]), float(rs[j]["predicted_s"])
                ma, mb = float(rs[i]["latency_s"]), float(rs[j]["latency_s"])
                s = (pa > pb) - (pa < pb)
                t = (ma > mb) - (ma < mb)
                conc += s * t > 0
                disc += s * t < 0
                if max(pa, pb) > band * min(pa, pb):
                    clear += 1
                    if s * t < 0:
                        flipped.append(f"{rs[i]['method']}/{rs[j]['method']}")
        n = len(rs) * (len(rs) - 1) // 2
        out[key] = {"tau": (conc - disc) / n if n else 1.0, "pairs": n, "clear": clear, "clear_flipped": flipped}
    return out


def _write_calibration(path: str, model: str, concurrent: int, cal, first: bool) -> None:
    """One row per calibration: the fitted rates per kind (FLOP/s), overheads (s) and residual."""
    fields = ["model", "concurrent", "flops_per_s", "conv", "dwconv", "deconv", "linear", "pool", "eltwise",
              "residual", "per_op_s", "stage_overhead_s", "task_overhead_s"]
    with open(path, "w" if first else "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if first:
            w.writeheader()
        w.writerow({"model": model, "concurrent": concurrent, "flops_per_s": cal.flops_per_s,
                    **{k: cal.rates.get(k, "") for k in ("conv", "dwconv", "deconv", "linear", "pool", "eltwise")},
                    "residual": cal.residual, "per_op_s": cal.per_op_s, "stage_overhead_s": cal.stage_overhead_s,
                    "task_overhead_s": cal.task_overhead_s})


def per_cluster(rows: list[dict]) -> list[list]:
    """Per model and cluster: plans, verified, ratio median and min-max, plans within 0.8-1.25,
    tau, clear pairs, and the clear pairs flipped (the summary's table; the README's too)."""
    out = []
    for (model, cluster), g in ranking(rows).items():
        rs = [float(r["ratio"]) for r in rows if (r["model"], r["cluster"]) == (model, cluster)]
        ok = sum(str(r["ok"]) == "True" for r in rows if (r["model"], r["cluster"]) == (model, cluster))
        band = sum(0.8 <= x <= 1.25 for x in rs)
        out.append([model, cluster, len(rs), ok, f"{statistics.median(rs):.2f}", f"{min(rs):.2f}-{max(rs):.2f}",
                    f"{band}/{len(rs)}", f"{g['tau']:.2f}", g["clear"], ", ".join(g["clear_flipped"]) or "none"])
    return out


def summarise(rows: list[dict], scale: float, path: str) -> None:
    """Write the text summary (ratios, ranking agreement, one table row per plan) to ``path``."""
    ratios = [float(r["ratio"]) for r in rows]
    inside = [x for x in ratios if 0.8 <= x <= 1.25]
    cnn = [float(r["ratio"]) for r in rows if r["model"] != "lenet5"]
    cnn_in = [x for x in cnn if 0.8 <= x <= 1.25]
    lines = [f"# partopt run: {len(rows)} plans, bandwidth scale {scale:g}",
             f"verified (rel err <= 1e-4, bytes as planned): {sum(str(r['ok']) == 'True' for r in rows)}/{len(rows)}",
             f"measured/predicted latency, all: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
             f"max {max(ratios):.3f}; within 0.8-1.25: {len(inside)}/{len(ratios)}"]
    if cnn:
        lines.append(f"measured/predicted latency, vgg16 and resnet18: median {statistics.median(cnn):.3f}, "
                     f"min {min(cnn):.3f}, max {max(cnn):.3f}; within 0.8-1.25: {len(cnn_in)}/{len(cnn)}")
    lines += ["", "Per model and cluster: measured/predicted latency, and the ranking of methods by measured "
              "latency against the ranking by predicted latency (Kendall tau over all pairs; 'clear' pairs are "
              "those whose predictions differ by more than 1.25x, and the flipped ones were measured in the "
              "other order):", "",
              "| model | cluster | plans | verified | ratio median | ratio min-max | within 0.8-1.25 | tau | "
              "clear pairs | clear pairs flipped |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in per_cluster(rows)]
    lines += ["", "| model | cluster | method | ok | rel err | measured s | predicted s | ratio | compute ratio (min-max) |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['cluster']} | {r['method']} | {r['ok']} | {r['max_rel_err']} | {r['latency_s']} | "
              f"{r['predicted_s']} | {r['ratio']} | {r['compute_ratio_min']}-{r['compute_ratio_max']} |" for r in rows]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:4]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg16,resnet18,lenet5")
    ap.add_argument("--clusters", default=",".join(CLUSTERS))
    ap.add_argument("--methods", default=None, help="comma list (default: all that apply)")
    ap.add_argument("--scale", type=float, default=1.0, help="bandwidth scale for emulation and prediction")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "runtime"))
    ap.add_argument("--append", action="store_true", help="keep the CSV's rows and add the missing ones")
    ap.add_argument("--summarise", metavar="CSV", help="only rewrite the summary from an earlier CSV")
    ap.add_argument("--one-speed", action="store_true",
                    help="the earlier cost model: one calibrated FLOP/s per device, no per-task overhead "
                         "(results/runtime_one_speed.csv was written so)")
    args = ap.parse_args()
    if args.summarise:
        with open(args.summarise) as f:
            rows = list(csv.DictReader(f))
        summarise(rows, args.scale, os.path.splitext(args.summarise)[0] + ".txt")
        return 0
    rows, done = [], set()
    if args.append and os.path.exists(args.out + ".csv"):
        with open(args.out + ".csv") as f:
            rows = list(csv.DictReader(f))
        done = {(r["model"], r["cluster"], r["method"]) for r in rows}
    with open(args.out + ".csv", "a" if args.append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if not done:
            w.writeheader()
        cal_rows: list = []
        for model in args.models.split(","):
            cals = {}
            for conc in sorted({CLUSTERS[c].get("concurrent", 1) for c in args.clusters.split(",")}):
                # the overhead probe runs with as many ranks as processes time at once (at least 2)
                cals[conc] = calibrate([model], homogeneous(max(2, conc)), repeats=3, concurrent=conc,
                                       overhead=not args.one_speed)
                c = cals[conc]
                if not args.append:
                    _write_calibration(args.out + "_calibration.csv", model, conc, c, first=not cal_rows)
                cal_rows.append((model, conc))
                print(f"{model}: calibrated {c.flops_per_s / 1e9:.1f} GFLOP/s ({conc} at once); "
                      + ("one speed" if args.one_speed else
                         ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(c.rates.items()))
                         + f" GFLOP/s, residual {100 * c.residual:.0f} %, overheads {1e3 * c.stage_overhead_s:.2f} ms per stage,"
                         f" {1e3 * c.task_overhead_s:.3f} ms per task"),
                      flush=True)
            net, shape, _ = load_model(model)
            graph = LayerGraph.from_module(net, example_input(shape))
            methods = args.methods.split(",") if args.methods else (CHAIN_METHODS if model == "lenet5" else CNN_METHODS)
            for cname in args.clusters.split(","):
                spec = dict(CLUSTERS[cname])
                cal = cals[spec.pop("concurrent", 1)]
                pace = spec.pop("pace", False)
                cluster = homogeneous(spec.pop("n"), flops_per_s=cal.flops_per_s, name=cname, **spec)
                if not args.one_speed:       # the fitted rates per kind and the per-task overhead
                    cluster = dataclasses.replace(cluster, task_overhead_s=cal.task_overhead_s,
                                                  stage_overhead_s=cal.stage_overhead_s, devices=tuple(
                        Device(d.name, d.flops_per_s, d.memory_bytes, cal.rates) for d in cluster.devices))
                for method in methods:
                    if (model, cname, method) in done:
                        continue
                    plan = plan_for(method, graph, cluster, model)
                    if plan is None:
                        continue
                    t0 = time.perf_counter()
                    res = run(plan, RunOptions(bandwidth_scale=args.scale, repeat=3, warmup=1, pace_compute=pace))
                    cr = [r.compute_s / r.predicted_compute_s for r in res.ranks if r.predicted_compute_s > 0]
                    row = {"model": model, "cluster": cname, "world": res.world, "method": method, "ok": res.ok,
                           "max_rel_err": f"{res.max_rel_err:.2e}", "bytes_moved": res.bytes_moved,
                           "bytes_planned": res.bytes_planned, "latency_s": f"{res.latency_s:.4f}",
                           "predicted_s": f"{res.predicted_latency_s:.4f}", "ratio": f"{res.ratio:.3f}",
                           "compute_ratio_min": f"{min(cr):.3f}" if cr else "",
                           "compute_ratio_max": f"{max(cr):.3f}" if cr else "",
                           "wall_s": f"{time.perf_counter() - t0:.1f}", "reason": res.reason}
                    w.writerow(row)
                    f.flush()
                    rows.append(row)
                    print(" ".join(f"{k}={row[k]}" for k in ("model", "cluster", "method", "ok", "max_rel_err",
                                                               "latency_s", "predicted_s", "ratio")), flush=True)
    summarise(rows, args.scale, args.out + ".txt")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
