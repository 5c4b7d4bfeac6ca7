"""The README's result tables, written from the committed results files.

Every table in README.md that states measured numbers sits between two markers::

    <!-- generated:NAME (benchmarks/readme_tables.py) -->
    ...
    <!-- end:NAME -->

and is written here from ``benchmarks/results/``. ``tests/test_readme.py`` fails when a block
in the README differs from what this script writes, so a README number cannot drift from its
results file. Gaps use partopt's one definition, :func:`partopt.solvers.heuristic_gap`:
(heuristic - optimum) / optimum.

    python benchmarks/readme_tables.py            # rewrite the blocks in README.md
    python benchmarks/readme_tables.py --check    # exit 1 if any block is stale
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import sys
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")
sys.path.insert(0, HERE)

from partopt.report import load_results, markdown_table, solver_rows, summary_rows  # noqa: E402
from partopt.solvers import heuristic_gap  # noqa: E402


def _rows(name: str) -> list[dict]:
    with open(os.path.join(RESULTS, name), newline="") as f:
        return list(csv.DictReader(f))


def _gap_pct(h: str, e: str) -> float:
    return 100 * heuristic_gap(float(h), float(e))


def _range(xs: list[float], fmt: str = "{:.1f}") -> str:
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def _table(cols: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _in_order(values) -> list[str]:
    """The distinct ``values`` in order of first appearance."""
    return list(dict.fromkeys(values))


def iop_gap() -> str:
    """IOP greedy against the exact optimum, per model and memory regime (iop_gap.csv)."""
    rows = _rows("iop_gap.csv")
    out = []
    for m in _in_order(r["model"] for r in rows):
        for mem in ("roomy", "tight"):
            rs = [r for r in rows if r["model"] == m and r["memory"] == mem]
            both = [r for r in rs if r["greedy_latency_s"] and r["exact_latency_s"]]
            gaps = [_gap_pct(r["greedy_latency_s"], r["exact_latency_s"]) for r in both]
            paired = [r for r in both if int(float(r["exact_pairs"] or 0)) > 0]
            out.append([m, mem, len(rs), sum(r["exact_status"] == "optimal" for r in rs),
                        f"{sum(int(float(r['greedy_pairs'])) > 0 for r in rs)} / {len(paired)}",
                        sum(g > 1e-6 for g in gaps), f"{statistics.median(gaps):.2f}" if gaps else "-",
                        f"{max(gaps):.2f}" if gaps else "-"])
    return _table(["model", "memory", "instances", "proven optimal", "greedy / exact use pairs",
                   "greedy above optimum", "median gap %", "max gap %"], out)


def iop_large() -> str:
    rows = _rows("iop_large.csv")
    out = [[r["model"], r["solver"], r["status"], f"{float(r['exact_latency_s']):.4f}",
            "-" if not r["bound_s"] else f"{float(r['bound_s']):.4f}", f"{float(r['greedy_latency_s']):.4f}",
            r["solve_s"]] for r in rows]
    return _table(["model", "solver", "status", "exact s", "proven bound s", "greedy s", "solve s"], out)


def iop_cuts() -> str:
    """The gap sweep without the load cuts and with them (iop.exact's default on HiGHS, with
    HIGHS_TIGHT's tolerances): statuses, solve time, and the instances whose status or exact
    latency differ."""
    key = lambda r: (r["model"], r["devices"], r["bandwidth_factor"], r["memory"])     # noqa: E731
    plain = {key(r): r for r in _rows("iop_gap_nocuts.csv")}
    cuts = {key(r): r for r in _rows("iop_gap.csv")}
    out = []
    for name, rows in (("without cuts (iop_gap_nocuts.csv)", [plain[k] for k in cuts]),
                       ("with cuts, the default (iop_gap.csv)", list(cuts.values()))):
        st = [r["exact_status"] for r in rows]
        secs = [float(r["solve_s"]) for r in rows]
        out.append([name, len(rows), st.count("optimal"), st.count("feasible"), st.count("infeasible"),
                    f"{sum(secs):.0f}", f"{statistics.median(secs):.2f}", f"{max(secs):.1f}"])
    summary = _table(["run", "instances", "optimal", "feasible", "infeasible", "total solve s", "median s",
                      "max s"], out)
    diff = []
    for k, c in cuts.items():
        b = plain[k]
        eb, ec = (float(x) if x else float("nan") for x in (b["exact_latency_s"], c["exact_latency_s"]))
        if b["exact_status"] != c["exact_status"] or not abs(eb - ec) <= 1e-5 * max(eb, ec):
            diff.append(list(k) + [b["exact_status"], f"{eb:.4f}", c["exact_status"], f"{ec:.4f}",
                                   f"{float(b['solve_s']):.1f}", f"{float(c['solve_s']):.1f}",
                                   f"{float(c['greedy_latency_s']):.4f}"])
    return summary + "\n" + _table(["model", "devices", "bandwidth x", "memory", "without: status", "s",
                                    "with: status", "s", "solve s without", "with", "greedy s"], diff)


def iop_vs_coedge() -> str:
    """With memory to spare, the instances whose exact optimum pairs operators. The greedy adds a
    pair only when it lowers ``evaluate``'s latency, so its plan is never slower than the
    pair-free one (the halo-only ``coedge`` split), and the exact optimum never slower than it."""
    rows = [r for r in _rows("iop_gap.csv") if r["memory"] == "roomy" and r["exact_latency_s"]
            and int(float(r["exact_pairs"] or 0)) > 0]
    out = [[r["model"], r["devices"], r["bandwidth_factor"], r["greedy_pairs"], f"{float(r['greedy_latency_s']):.4f}",
            r["exact_pairs"], f"{float(r['exact_latency_s']):.4f}",
            f"{_gap_pct(r['greedy_latency_s'], r['exact_latency_s']):.2f}"] for r in rows]
    return _table(["model", "devices", "bandwidth x", "greedy pairs", "greedy s", "exact pairs", "exact s",
                   "greedy gap %"], out)


def dpfp_gap() -> str:
    """DPFP (speed-proportional rows) against the exact row model, per model."""
    rows = _rows("dpfp_gap.csv") + _rows("dpfp_gap_large.csv")
    out = []
    for m in _in_order(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == m]
        gaps = [_gap_pct(r["dpfp_latency_s"], r["exact_latency_s"]) for r in rs if r["exact_status"] == "optimal"]
        ts = [float(r["exact_solve_s"]) for r in rs]
        out.append([m, len(rs), sum(r["exact_status"] == "optimal" for r in rs), f"{min(gaps):.1f}",
                    f"{statistics.median(gaps):.1f}", f"{max(gaps):.1f}", f"{statistics.median(ts):.1f}",
                    f"{max(ts):.1f}"])
    return _table(["model", "instances", "proven optimal", "min gap %", "median gap %", "max gap %",
                   "median solve s", "max solve s"], out)


def dpfp_zoo() -> str:
    """DPFP exact on every zoo model x presets of 2-8 devices, one row per model."""
    rows = _rows("dpfp_zoo.csv")

    def line(label: str, rs: list[dict]) -> list:
        ts = [float(r["exact_solve_s"]) for r in rs]
        return [label, len(rs), sum(r["exact_status"] == "optimal" for r in rs), f"{statistics.median(ts):.1f}",
                f"{max(ts):.1f}", _range([_gap_pct(r["dpfp_latency_s"], r["exact_latency_s"]) for r in rs]),
                sum(r["same_when_reversed"] == "True" for r in rs)]

    out = [line(m, [r for r in rows if r["model"] == m]) for m in _in_order(r["model"] for r in rows)]
    out.append(line("all", rows))
    return _table(["model", "instances", "proven optimal", "median solve s", "max solve s", "DPFP gap %",
                   "same reversed"], out)


def dpfp_speed() -> str:
    """The DPFP heuristic's planning time per model (over the presets)."""
    rows = _rows("dpfp_speed.csv")
    out = []
    for model in _in_order(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        ts = [float(r["plan_s"]) for r in rs]
        out.append([model, rs[0]["units"], len(rs), f"{statistics.median(ts):.3f}", f"{max(ts):.3f}"])
    return _table(["model", "spatial units", "clusters", "median plan s", "max plan s"], out)


def nptp_gap() -> str:
    """NPTP grid heuristic against the tile-model optimum, and both plans priced by evaluate."""
    rows = _rows("nptp_gap.csv")
    out = []
    for c in _in_order(r["cluster"] for r in rows):
        rs = [r for r in rows if r["cluster"] == c]
        gaps = [_gap_pct(r["heur_tile_s"], r["exact_tile_s"]) for r in rs if r["status"] == "optimal"]
        ev = [(float(r["exact_eval_s"]) - float(r["heur_eval_s"])) / float(r["heur_eval_s"]) for r in rs]
        slower = [100 * x for x in ev if x > 1e-9]
        out.append([c, len(rs), sum(r["status"] == "optimal" for r in rs), f"{statistics.median(gaps):.2f}",
                    f"{max(gaps):.2f}", sum(x < -1e-9 for x in ev), sum(abs(x) <= 1e-9 for x in ev),
                    f"{len(slower)}" + (f" (up to {max(slower):.1f} %)" if slower else "")])
    return _table(["cluster", "instances", "proven optimal (tile model)", "median tile gap %", "max tile gap %",
                   "evaluate: exact tiling faster", "equal", "slower"], out)


def default_counts() -> str:
    """How many rows the default sweep has, how many plans, how many verified, which infeasible."""
    rows = _rows("default.csv")
    plans = [r for r in rows if r["status"] in ("heuristic", "optimal", "feasible")]
    infeasible = [r for r in rows if r["status"] == "infeasible"]
    out = [["instances (rows)", len(rows)], ["plans (heuristic, optimal or feasible)", len(plans)],
           ["plans verified in torch", sum(r["verified"] == "True" for r in plans)],
           ["infeasible rows", len(infeasible)]]
    for r in infeasible:
        out.append([f"infeasible: {r['model']} {r['cluster']} {r['method']} {r['mode']} {r['solver'] or ''}".strip(),
                    r["reason"][:80]])
    return _table(["", ""], out)


def default_summary() -> str:
    return markdown_table(summary_rows(load_results(os.path.join(RESULTS, "default.csv"))))


def default_solvers() -> str:
    return markdown_table(solver_rows(load_results(os.path.join(RESULTS, "default.csv"))))


def runtime() -> str:
    from bench_runtime import per_cluster
    rows = _rows("runtime.csv")
    ok = sum(str(r["ok"]) == "True" for r in rows)
    return (f"{ok} of {len(rows)} plans equal the unsplit model (relative error <= 1e-4) with every byte moved as "
            "planned. `benchmarks/results/runtime.txt` has every row; per model and cluster:\n\n") + _table(["model", "cluster", "plans", "verified", "ratio median", "ratio min-max", "within 0.8-1.25", "tau",
                   "clear pairs", "clear pairs flipped"], per_cluster(_rows("runtime.csv")))


def runtime_compare() -> str:
    """Per model and cluster: the one-speed cost model (runtime_one_speed.csv) against rates per
    kind with the per-task overhead (runtime.csv)."""
    from bench_runtime import per_cluster
    old = {(r[0], r[1]): r for r in per_cluster(_rows("runtime_one_speed.csv"))}
    out = []
    for r in per_cluster(_rows("runtime.csv")):
        o = old.get((r[0], r[1]))
        if o is None:
            continue
        flips = lambda row: 0 if row[9] == "none" else len(row[9].split(", "))      # noqa: E731
        out.append([r[0], r[1], f"{o[4]} -> {r[4]}", f"{o[6]} -> {r[6]}", f"{o[7]} -> {r[7]}",
                    f"{flips(o)} -> {flips(r)}"])
    return _table(["model", "cluster", "ratio median", "within 0.8-1.25", "tau", "clear pairs flipped"], out)


def core() -> str:
    out = [[r["model"], r["ops"]] + [f"{float(r[k]):.3f}" for k in ("extract_s", "coedge_s", "evaluate_s", "verify_s")]
           for r in _rows("core.csv")]
    return _table(["model", "ops", "extract", "coedge plan", "evaluate", "verify"], out)


def dn2pciot() -> str:
    """Inferences per second per grouping and setup; the exact column is the better of its
    solvers, with ``optimal`` or the tightest proven upper bound on the rate."""
    rows = _rows("dn2pciot.csv")
    out = []
    for grouping in _in_order(r["grouping"] for r in rows):
        for setup in _in_order(r["setup"] for r in rows if r["grouping"] == grouping):
            rs = {r["method"]: r for r in rows if (r["grouping"], r["setup"]) == (grouping, setup)}

            def rate(r):
                return "invalid" if r["status"] == "infeasible" else f"{float(r['rate_per_s']):.2f}"
            ex = [r for m, r in rs.items() if m.startswith("exact-") and r["status"] != "infeasible"]
            best = max(ex, key=lambda r: (float(r["rate_per_s"]), r["status"] == "optimal"))
            if any(r["status"] == "optimal" for r in ex):
                opt = [r for r in ex if r["status"] == "optimal"]
                cell = f"{rate(best)}, optimal ({', '.join(r['method'][6:] for r in opt)})"
            else:
                bounded = [r for r in ex if r["bound_s"] and float(r["bound_s"]) > 0]    # a bound above zero
                bounds = [1 / float(r["bound_s"]) for r in bounded]
                cell = f"{rate(best)} ({best['method'][6:]}), " + (f"bound {min(bounds):.1f}" if bounds else "no bound")
                cell += "; " + ", ".join(f"{r['method'][6:]} gap {100 * float(r['gap']):.1f} %" if r in bounded
                                         else f"{r['method'][6:]} no bound" for r in ex if r["gap"])
            out.append([grouping, setup] + [rate(rs[m]) for m in ("dn2pciot", "metis", "per-layer", "greedy")] + [cell])
    return _table(["grouping", "setup", "DN2PCIoT", "METIS", "per-layer", "greedy", "exact (best of its solvers)"], out)


def demo() -> str:
    """`partopt demo`'s table, as `partopt demo --csv benchmarks/results/demo.csv` wrote it."""
    rows = _rows("demo.csv")
    cols = [c for c in rows[0] if c not in ("model", "cluster", "lower_bound_s")]
    return _table(cols, [[r[c] for c in cols] for r in rows])


def best_summary() -> str:
    """best against the fastest other heuristic and the lower bound, per cluster (best.csv)."""
    rows = _rows("best.csv")
    out = []
    for c in _in_order(r["cluster"] for r in rows):
        rs = [r for r in rows if r["cluster"] == c and r["best_s"]]
        speed = [float(r["best_other_s"]) / float(r["best_s"]) for r in rs if r["best_other_s"]]
        ratio = [float(r["best_over_bound"]) for r in rs]
        t = [float(r["best_plan_s"]) for r in rs]
        out.append([c, len(rs), sum(r["verified"] == "True" for r in rs),
                    sum(float(r["best_s"]) < float(r["best_other_s"]) * (1 - 1e-9) for r in rs if r["best_other_s"]),
                    f"{statistics.median(speed):.2f}", f"{max(speed):.2f}", f"{statistics.median(ratio):.2f}",
                    f"{min(ratio):.2f}-{max(ratio):.2f}", f"{statistics.median(t):.2f}", f"{max(t):.2f}"])
    return _table(["cluster", "models", "verified", "best faster than every other method", "median speed-up",
                   "max speed-up", "median x lower bound", "x lower bound min-max", "median plan s", "max plan s"], out)


def best_slow() -> str:
    """The instances of best.csv that took best more than a second to plan."""
    rows = [r for r in _rows("best.csv") if r["best_s"]]
    slow = [r for r in rows if float(r["best_plan_s"]) > 1.0]
    ref = {r.get("machine_ref_s") for r in rows} - {None, ""}
    on = f" on a machine whose reference loop (`machine_ref_s`) took {min(ref)} s" if ref else ""
    head = f"{len(rows) - len(slow)} of {len(rows)} instances planned in under 1 s{on}; the others:\n\n"
    return head + _table(["model", "cluster", "plan s"], [[r["model"], r["cluster"], r["best_plan_s"]] for r in slow])


def best_bound_histogram() -> str:
    """How far best is from the lower bound, over every instance of best.csv."""
    ratio = [float(r["best_over_bound"]) for r in _rows("best.csv") if r["best_over_bound"]]
    edges = [1.0, 1.1, 1.5, 2.0, 4.0, float("inf")]
    cells = [sum(a <= x < b for x in ratio) for a, b in zip(edges, edges[1:])]
    return _table(["best / lower bound", "1-1.1", "1.1-1.5", "1.5-2", "2-4", ">= 4"], [["instances"] + cells])


def best_exact() -> str:
    rows = _rows("best_exact.csv")
    out = [[r["model"], r["cluster"], r["solver"], r["status"], f"{float(r['latency_s']):.5f}",
            f"{float(r['heuristic_s']):.5f}", f"{100 * (float(r['heuristic_s']) / float(r['latency_s']) - 1):.2f}",
            r["solve_s"], r["origin"], r["verified"]] for r in rows]
    return _table(["model", "cluster", "solver", "status", "exact s", "heuristic s", "heuristic gap %", "solve s",
                   "plan from", "verified"], out)


def default_union() -> str:
    from partopt.report import union_rows
    return markdown_table(union_rows(load_results(os.path.join(RESULTS, "default.csv"))))


def _span(xs: list[float], fmt: str) -> str:
    def f(x):
        t = fmt.format(x)
        return t[1:] if t.startswith("-") and float(t) == 0 else t     # no "-0.0"
    lo, hi = f(min(xs)), f(max(xs))
    return lo if lo == hi else f"{lo} to {hi}"


def _where(rows: list[dict], ok, label) -> str:
    """'model (devices ...)' for the rows where ``ok`` holds, grouped by model."""
    hit = [r for r in rows if ok(r)]
    if not hit:
        return "nowhere in the swept range"
    return "; ".join(f"{m} ({label([r for r in hit if r['model'] == m])})" for m in _in_order(r["model"] for r in hit))


def reproductions() -> str:
    """Each paper's claim under its own baseline and under partopt's strongest, and where it holds."""
    out = []
    # IOP: iop_baselines.csv, greedy against coedge-concat (channels outside the pairs) and coedge (rows)
    ib = _rows("iop_baselines.csv")
    for r in ib:
        for k in ("latency_gain_pct", "memory_gain_pct", "all_pairs_memory_gain_pct"):
            r[k] = float(r[k])
    concat = [r for r in ib if r["baseline"] == "coedge-concat"]
    halo = [r for r in ib if r["baseline"] == "coedge"]
    n_verified = sum(r["verified"] == "True" for r in ib)

    def dev_span(rs):
        return "devices " + ",".join(r["devices"] for r in rs)
    out.append(["IOP", "latency 6.39-16.83 % lower than CoEdge",
                f"greedy {_span([r['latency_gain_pct'] for r in concat], '{:.1f}')} % lower than `coedge-concat` "
                f"(median {statistics.median(r['latency_gain_pct'] for r in concat):.1f} %; {len(ib)} comparisons, "
                f"both plans verified in torch in {n_verified})",
                f"{_span([r['latency_gain_pct'] for r in halo], '{:.1f}')} % lower than halo-only `coedge`",
                "vs `coedge-concat`: " + _where(concat, lambda r: r["latency_gain_pct"] >= 6.39, dev_span)
                + "; vs `coedge`: " + _where(halo, lambda r: r["latency_gain_pct"] >= 6.39, dev_span),
                "`python benchmarks/bench_iop.py --part baselines`"])
    im = _rows("iop_memory.csv")
    for r in im:
        for k in ("all_pairs_reduction_pct", "cap_reduction_pct"):
            r[k] = float(r[k])
    out.append(["IOP", "peak memory 21.22-49.98 % lower than CoEdge",
                f"every pair changes the peak by {_span(sorted(-r['all_pairs_memory_gain_pct'] for r in concat), '{:+.1f}')}"
                f" % against `coedge-concat` (its channel splits already divide every layer's weights)",
                f"greedy fits in {_span([r['cap_reduction_pct'] for r in im], '{:.1f}')} % less memory per device "
                f"than `coedge`; every pair's peak {_span([r['all_pairs_reduction_pct'] for r in im], '{:.1f}')} % "
                f"lower",
                "greedy vs `coedge`: " + _where(im, lambda r: r["cap_reduction_pct"] >= 21.22, dev_span)
                + "; vs `coedge-concat`: " + _where(concat, lambda r: r["all_pairs_memory_gain_pct"] >= 21.22,
                                                    dev_span),
                "`python benchmarks/bench_iop.py --part memory` and `--part baselines`"])
    # NPTP: nptp_regime.csv
    nr = _rows("nptp_regime.csv")
    for r in nr:
        for k in ("nptp_s", "coedge_s", "ftp_s", "speedup_vs_coedge"):
            r[k] = float(r[k])
    strongest = [r["coedge_s"] and min(r["coedge_s"], r["ftp_s"]) / r["nptp_s"] for r in nr]

    def cells(rs):
        return ", ".join(f"{n} dev {link}: {sum(1 for r in rs if (r['devices'], r['link']) == (n, link))}"
                         for n, link in _in_order((r["devices"], r["link"]) for r in rs))
    hit = [r for r in nr if r["speedup_vs_coedge"] >= 1.44]
    hit_at = (f"bandwidth x{_span([float(r['bandwidth_factor']) for r in hit], '{:g}')}, "
              f"{'/'.join(_in_order(r['devices'] for r in hit))} devices" if hit else "")
    out.append(["NPTP", "1.44-1.68x faster than CoEdge",
                f"{_span([r['speedup_vs_coedge'] for r in nr], '{:.2f}')}x over `coedge` "
                f"(median {statistics.median(r['speedup_vs_coedge'] for r in nr):.2f}x, {len(nr)} cells)",
                f"{_span(strongest, '{:.2f}')}x over the faster of `coedge` and `ftp`",
                ">= 1.44x over `coedge` in cells of " + _where(nr, lambda r: r["speedup_vs_coedge"] >= 1.44, cells)
                + (f" (all at {hit_at}; heat maps below)" if hit else ""),
                "`python benchmarks/bench_nptp.py --part regime`"])
    # DPFP: dpfp_paper.csv
    dp = _rows("dpfp_paper.csv")
    for r in dp:
        for k in ("single_s", "layerwise_s", "coedge_s", "dpfp_s"):
            r[k] = float(r[k])
    red = [100 * (1 - r["dpfp_s"] / r["single_s"]) for r in dp]
    top = max(dp, key=lambda r: 1 - r["dpfp_s"] / r["single_s"])
    out.append(["RFS + DPFP", "up to 73 % lower latency than stand-alone (VGG-16); faster than MoDNN everywhere",
                f"up to {max(red):.1f} % lower than `single` ({top['model']}, {top['devices']} devices, bw "
                f"x{top['bandwidth_factor']}); faster than MoDNN-style `layerwise` in "
                f"{sum(r['dpfp_s'] < r['layerwise_s'] for r in dp)}/{len(dp)}",
                f"faster than halo-only `coedge` in {sum(r['dpfp_s'] < r['coedge_s'] for r in dp)}/{len(dp)} "
                f"(`dpfp` / `coedge` {_span([r['dpfp_s'] / r['coedge_s'] for r in dp], '{:.2f}')}x)",
                ">= 73 % below `single`: " + _where(dp, lambda r: 1 - r["dpfp_s"] / r["single_s"] >= 0.73, dev_span),
                "`python benchmarks/bench_dpfp.py --part paper`"])
    # DN2PCIoT: dn2pciot.csv
    dn = _rows("dn2pciot.csv")
    by = {}
    for r in dn:
        by.setdefault((r["grouping"], r["setup"]), {})[r["method"]] = r

    def rate(r):
        return float(r["rate_per_s"]) if r["status"] != "infeasible" else None
    ratios, strong, setups = [], [], []
    for (grouping, setup), rs in by.items():
        h = rate(rs["dn2pciot"])
        if rate(rs["metis"]):
            ratios.append(h / rate(rs["metis"]))
            setups.append({"model": f"{grouping} {setup}", "ratio": h / rate(rs["metis"])})
        others = [rate(rs[m]) for m in ("metis", "per-layer", "greedy") if rate(rs[m])]
        if others:
            strong.append(h / max(others))
    n_invalid = sum(rate(rs["metis"]) is None for rs in by.values())
    out.append(["DN2PCIoT", "38 % higher inference rate than METIS",
                f"{_span(ratios, '{:.1f}')}x METIS's rate where METIS fits memory ({len(ratios)}/{len(by)} setups; "
                f"METIS breaks memory on {n_invalid})",
                f"{_span(strong, '{:.2f}')}x the best valid baseline (METIS, per-layer, greedy)",
                ">= 1.38x METIS: " + _where(setups, lambda r: r["ratio"] >= 1.38, lambda rs: f"{rs[0]['ratio']:.1f}x"),
                "`python benchmarks/bench_dn2pciot.py`"])
    return _table(["paper", "claim (paper)", "partopt, under the paper's baseline", "partopt, under the strongest "
                   "baseline", "where the claim holds", "regenerate"], out)


def models() -> str:
    """The zoo: input, GFLOPs and weight MB of every model (traced from partopt.zoo, not a results file)."""
    from partopt.zoo import ZOO, summary
    out = []
    for name in ZOO:
        s = summary(name)
        out.append([name, "x".join(map(str, s["input_shape"])), f"{s['flops'] / 1e9:.4g}",
                    f"{s['param_bytes'] / 1e6:.1f}", s["description"]])
    return _table(["model", "input", "GFLOPs", "weights MB", "what"], out)


def ops() -> str:
    """The op kinds partopt plans (partopt.graph.KINDS) and the ONNX ops it reads."""
    from partopt.graph import KINDS
    from partopt.onnx_import import SUPPORTED_ONNX_OPS
    return (_table(["kind", "what it covers"], [[f"`{k}`", v] for k, v in KINDS.items()])
            + "\nONNX ops read from `.onnx` files: " + ", ".join(SUPPORTED_ONNX_OPS) + ".\n")


def edge_zoo() -> str:
    """The edge CNNs under every demo method (edge_zoo.csv): plans, verified, the fastest."""
    rows = _rows("edge_zoo.csv")
    out = []
    for m in _in_order(r["model"] for r in rows):
        for c in _in_order(r["cluster"] for r in rows if r["model"] == m):
            rs = [r for r in rows if (r["model"], r["cluster"]) == (m, c)]
            planned = [r for r in rs if r["latency_s"]]
            na = [r["method"] for r in rs if r["status"] == "not applicable"]
            fastest = min((r for r in planned if r["method"] != "best"), key=lambda r: float(r["latency_s"]))
            coop = min((r for r in planned if r["method"] not in ("best", "single")), key=lambda r: float(r["latency_s"]))
            best = next(r for r in rs if r["method"] == "best")
            out.append([m, c, f"{len(planned)}/{len(rs)}", sum(r["verified"] == "True" for r in planned),
                        ", ".join(na) or "none", f"{fastest['method']} {float(fastest['latency_s']):.4f}",
                        f"{coop['method']} {float(coop['latency_s']):.4f}", f"{float(best['latency_s']):.4f}",
                        f"{float(best['plan_s']):.2f}"])
    return _table(["model", "cluster", "planned", "verified", "not applicable", "fastest method s",
                   "fastest cooperative s", "best s", "best plan s"], out)


BLOCKS: dict[str, Callable[[], str]] = {
    "demo": demo, "default-counts": default_counts, "best": best_summary, "best-slow": best_slow, "best-bound": best_bound_histogram, "best-exact": best_exact,
    "default-union": default_union,
    "iop-gap": iop_gap, "iop-vs-coedge": iop_vs_coedge, "iop-large": iop_large, "iop-cuts": iop_cuts, "dpfp-gap": dpfp_gap, "dpfp-zoo": dpfp_zoo, "dpfp-speed": dpfp_speed, "nptp-gap": nptp_gap,
    "default-summary": default_summary, "default-solvers": default_solvers, "runtime": runtime, "runtime-compare": runtime_compare, "core": core,
    "dn2pciot": dn2pciot, "reproductions": reproductions, "models": models, "ops": ops, "edge-zoo": edge_zoo,
}
PATTERN = re.compile(r"(<!-- generated:(?P<name>[\w-]+) \(benchmarks/readme_tables.py\) -->\n)(?P<body>.*?)"
                     r"(<!-- end:(?P=name) -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block rewritten; unknown block names raise KeyError."""
    return PATTERN.sub(lambda m: m.group(1) + BLOCKS[m.group("name")]() + m.group(4), text)


def blocks_in(text: str) -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in PATTERN.finditer(text)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a block differs from the results")
    ap.add_argument("--readme", default=README)
    a = ap.parse_args(argv)
    with open(a.readme) as f:
        text = f.read()
    new = render(text)
    if a.check:
        stale = [k for k, v in blocks_in(text).items() if blocks_in(new)[k] != v]
        print("stale blocks: " + ", ".join(stale) if stale else f"{len(blocks_in(text))} blocks up to date")
        return 1 if stale else 0
    with open(a.readme, "w") as f:
        f.write(new)
    print(f"wrote {len(blocks_in(new))} blocks into {a.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
