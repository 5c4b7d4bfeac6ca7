"""Figures of plans (a timeline of compute and transfers per device and link; a tile map of a
spatially split stage) and the report of a sweep's results (``partopt report RESULTS.csv``).

:func:`write_report` reads a CSV written by :mod:`partopt.bench` and writes, into one folder:

- ``summary.md`` / ``summary.tex``: per method, the exact runs, the share solved to proven
  optimality, the median and max heuristic gap to the proven optimum (%, once per instance
  however many solvers proved it), and the median solve time of every solver (seconds, over
  the runs it proved optimal);
- ``solvers.md`` / ``solvers.tex``: the solver comparison, per method and solver: instances,
  proven optimal, median and max time to the proven optimum;
- ``gaps.png``: histogram of heuristic gaps per method;
- ``solve_time.png``: solve time against instance size (ops x devices), one series per solver;
- ``pareto.png``: latency against peak memory of every plan, per method, with each method's
  Pareto front (no other plan of that method is both faster and smaller);
- ``timeline.png``: the fastest verified plan of the first model and cluster, as a Gantt chart;
- ``tiles.png``: the tile map of the spatial plan whose first tiled map has the most devices
  (ties: NPTP before FTP before CoEdge, exact before heuristic), if the sweep has one.

A *regime* CSV (``benchmarks/bench_nptp.py --part regime``: columns ``input_side``,
``bandwidth_factor``, ``devices``, ``link``, ``speedup_vs_coedge``, ...) gets instead
(:func:`write_regime_report`): ``regime_<model>.png``, one heat map per device count and link
of NPTP's speed-up over CoEdge against input side and bandwidth, cells where it reaches the
paper's 1.44x outlined; and ``regime.md``, per model, devices and link, the largest speed-up
over CoEdge and over FTP and where the 1.44x region lies.

An *IOP memory* CSV (``benchmarks/bench_iop.py --part memory``: columns ``devices``,
``all_pairs_reduction_pct``, ``coedge_min_cap_mib``, ``iop_min_cap_mib``, ...) gets
(:func:`write_iop_memory_report`) ``iop_memory.png``: per model, the peak-memory reduction of
the plan with every pair against ``coedge``, and the smallest per-device memory each of
``coedge`` and the IOP greedy fits in, against the number of devices; and ``iop_memory.md``.

The ``.tex`` files are bare ``tabular`` environments, so a paper wraps them in its own
``table`` with its own caption (see ``paper/main.tex``).
"""
from __future__ import annotations

import csv
import math
import os
import statistics
from typing import Any, Optional

from .errors import PartoptError
from .graph import LayerGraph
from .plan import Plan, Report


def plot_timeline(report: Report, path: str, title: str = "") -> str:
    """Write a Gantt chart of ``report.events`` (one row per device, link or medium) to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted({e.resource for e in report.events}, key=lambda r: ("->" in r or r == "medium", r))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    colours = {"compute": "tab:blue", "send": "tab:orange"}
    for i, r in enumerate(rows):
        spans = [(e.start_s, e.end_s - e.start_s) for e in report.events if e.resource == r]
        kinds = {e.kind for e in report.events if e.resource == r}
        ax.broken_barh(spans, (i - 0.4, 0.8), facecolors=colours["send" if "send" in kinds else "compute"],
                       edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("time (s)")
    ax.set_title(title or f"latency {report.latency_s:.4f} s")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tiled_stage(plan: Plan, graph: LayerGraph, stage: Optional[int] = None) -> int:
    """The index of the first stage whose tasks tile a map of more than one pixel with more
    than one device (or ``stage`` itself, checked)."""
    cands = [i for i, s in enumerate(plan.stages)
             if len({t.device for t in s.tasks}) > 1 and graph.tensor_chw(s.output)[1:] != (1, 1)]
    if stage is None:
        if not cands:
            raise PartoptError("the plan has no stage whose map is tiled over several devices")
        return cands[0]
    if not 0 <= stage < len(plan.stages):
        raise PartoptError(f"stage {stage} out of range (the plan has {len(plan.stages)})")
    return stage


def plot_tiles(plan: Plan, graph: LayerGraph, path: str, stage: Optional[int] = None, title: str = "") -> str:
    """Draw the output map of one stage (default: the first tiled one) with each task's box,
    one colour per device (the box's channel range is not shown), to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    i = tiled_stage(plan, graph, stage)
    s = plan.stages[i]
    _, h, w = graph.tensor_chw(s.output)
    devices = [d["name"] for d in plan.cluster["devices"]]
    cmap = plt.get_cmap("tab10" if len(devices) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1) + 0.6))
    for t in s.tasks:
        b = t.box
        k = devices.index(t.device) if t.device in devices else 0
        ax.add_patch(mpatches.Rectangle((b.w0, b.h0), b.w1 - b.w0, b.h1 - b.h0, facecolor=cmap(k % cmap.N),
                                        edgecolor="black", linewidth=0.8, alpha=0.85))
        ax.text((b.w0 + b.w1) / 2, (b.h0 + b.h1) / 2, t.device, ha="center", va="center", fontsize=8)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("column (pixel)")
    ax.set_ylabel("row (pixel)")
    ax.set_title(title or f"{plan.model} by {plan.method}: stage {i} ({s.ops[0]}..{s.ops[-1]}), {h}x{w}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- results of a sweep -------------------------------------------------------------------

NUMERIC = ("objective", "bound", "gap", "twin_objective", "heuristic_gap", "latency_s", "throughput_per_s",
           "peak_memory_bytes", "comm_bytes", "solve_s", "size", "n_devices", "n_ops", "max_rel_err", "lower_bound_s")


def load_results(path: str) -> list[dict[str, Any]]:
    """Rows of a bench CSV with numbers parsed (empty cells become None)."""
    from .bench import FIELDS, read_rows
    from .errors import ConfigError
    if not os.path.exists(path):
        raise ConfigError(f"no such results file: {path}")
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    missing = [k for k in ("key", "method", "mode", "solver", "status", "solve_s") if k not in header]
    if missing:
        raise ConfigError(f"{path}: not a partopt bench CSV (missing columns {missing}; expected {FIELDS})")
    rows = read_rows(path)
    for r in rows:
        for k in NUMERIC:
            v = r.get(k)
            r[k] = float(v) if v not in (None, "") else None
        r["verified"] = {"True": True, "False": False}.get(r.get("verified", ""))
    return rows


def _median(xs: list[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def heuristic_gaps(rows: list[dict[str, Any]], method: str) -> list[float]:
    """The heuristic's gap to the proven optimum (%), once per instance (model, cluster,
    options) however many solvers proved it."""
    gaps: dict[tuple, float] = {}
    for r in rows:
        if (r["method"] == method and r["mode"] == "exact" and r["status"] == "optimal"
                and r["heuristic_gap"] is not None):
            gaps.setdefault((r["model"], r["cluster"], r.get("options", "")), 100 * r["heuristic_gap"])
    return list(gaps.values())


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method with exact rows: exact runs, share optimal, instances with a proven gap, the
    heuristic's gap (median, max, %; once per instance) and the median seconds to a proven
    optimum per solver."""
    solvers = sorted({r["solver"] for r in rows if r["mode"] == "exact"})
    out = []
    for m in sorted({r["method"] for r in rows if r["mode"] == "exact"}):
        ex = [r for r in rows if r["method"] == m and r["mode"] == "exact"]
        opt = [r for r in ex if r["status"] == "optimal"]
        gaps = heuristic_gaps(rows, m)
        row = {"method": m, "exact runs": len(ex), "optimal": len(opt),
               "optimal %": 100 * len(opt) / len(ex) if ex else None, "instances with a gap": len(gaps),
               "median gap %": _median(gaps), "max gap %": max(gaps) if gaps else None}
        for s in solvers:
            row[f"{s} median s"] = _median([r["solve_s"] for r in opt if r["solver"] == s])
        out.append(row)
    return out


def solver_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and solver: runs, proven optimal, median and max seconds to the proven optimum."""
    out = []
    for m in sorted({r["method"] for r in rows if r["mode"] == "exact"}):
        for s in sorted({r["solver"] for r in rows if r["method"] == m and r["mode"] == "exact"}):
            ex = [r for r in rows if r["method"] == m and r["mode"] == "exact" and r["solver"] == s]
            ts = [r["solve_s"] for r in ex if r["status"] == "optimal"]
            out.append({"method": m, "solver": s, "runs": len(ex), "optimal": len(ts),
                        "median s": _median(ts), "max s": max(ts) if ts else None})
    return out


def union_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and mode, over the instances (model, cluster) where ``best --exact`` proved the
    union optimum: the gap of each feasible plan's latency to it, (latency - optimum) / optimum
    in %, and the ratio of every feasible plan's latency to the lower bound no plan can beat."""
    from .solvers import heuristic_gap
    union: dict[tuple, float] = {}
    for r in rows:
        if r["method"] == "best" and r["mode"] == "exact" and r["status"] == "optimal" and r["latency_s"]:
            k = (r["model"], r["cluster"])
            union[k] = min(union.get(k, r["latency_s"]), r["latency_s"])
    out = []
    for m, mode in sorted({(r["method"], r["mode"]) for r in rows}):
        ok = [r for r in rows if (r["method"], r["mode"]) == (m, mode) and r["status"] not in ("infeasible", "error")
              and r["latency_s"]]
        if not ok:
            continue
        gaps = {(r["model"], r["cluster"]): 100 * heuristic_gap(r["latency_s"], union[(r["model"], r["cluster"])])
                for r in ok if (r["model"], r["cluster"]) in union}
        ratios = [r["latency_s"] / r["lower_bound_s"] for r in ok if r.get("lower_bound_s")]
        out.append({"method": m, "mode": mode, "plans": len(ok), "with union optimum": len(gaps),
                    "median gap to union optimum %": _median(list(gaps.values())),
                    "max gap to union optimum %": max(gaps.values()) if gaps else None,
                    "median x lower bound": _median(ratios), "max x lower bound": max(ratios) if ratios else None})
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub Markdown table of ``rows`` (the first row's keys are the columns)."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def tex_escape(text: str) -> str:
    """``text`` safe inside LaTeX: backslash, underscore, percent, ampersand and hash escaped."""
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#")):
        text = text.replace(a, b)
    return text


def latex_table(rows: list[dict[str, Any]]) -> str:
    """A bare ``tabular`` of ``rows`` (escaped; wrap it in a table with a caption)."""
    if not rows:
        return "% no rows\n"
    cols = list(rows[0])
    lines = ["\\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", "\\hline",
             " & ".join(tex_escape(c) for c in cols) + " \\\\", "\\hline"]
    lines += [" & ".join(tex_escape(_cell(r[c])) for c in cols) + " \\\\" for r in rows]
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_gaps(rows: list[dict[str, Any]], path: str) -> Optional[str]:
    """Histogram of the heuristic's gap to the proven optimum (%), one panel per method."""
    by = {m: heuristic_gaps(rows, m) for m in {r["method"] for r in rows if r["mode"] == "exact"}}
    by = {m: g for m, g in by.items() if g}
    if not by:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(by), figsize=(3.2 * len(by), 2.8), squeeze=False)
    for ax, (m, gaps) in zip(axes[0], sorted(by.items())):
        ax.hist(gaps, bins=min(20, max(5, len(gaps))), color="tab:blue", edgecolor="black", linewidth=0.4)
        ax.set_title(f"{m} (n={len(gaps)})")
        ax.set_xlabel("heuristic gap to optimum (%)")
    axes[0][0].set_ylabel("instances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_solve_times(rows: list[dict[str, Any]], path: str) -> Optional[str]:
    """Solve time (s) against instance size (ops x devices), one series per solver; hollow
    markers are runs stopped at the time limit."""
    ex = [r for r in rows if r["mode"] == "exact" and r["size"] and r["status"] in ("optimal", "feasible")]
    if not ex:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    markers = {"cbc": "o", "highs": "s", "cpsat": "^"}
    for i, s in enumerate(sorted({r["solver"] for r in ex})):
        for status, fill in (("optimal", True), ("feasible", False)):
            pts = [(r["size"], r["solve_s"]) for r in ex if r["solver"] == s and r["status"] == status]
            if pts:
                c = f"C{i}"
                ax.scatter(*zip(*pts), marker=markers.get(s, "o"), facecolors=c if fill else "none", edgecolors=c,
                           label=f"{s} ({status})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("instance size (ops x devices; NPTP: cells x devices)")
    ax.set_ylabel("solve time (s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (both minimised), sorted by the first.

    >>> pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)])
    [(1, 5), (2, 3), (4, 1)]
    """
    front, best = [], math.inf
    for p in sorted(set(points)):
        if p[1] < best:
            front.append(p)
            best = p[1]
    return front


def plot_pareto(rows: list[dict[str, Any]], path: str) -> Optional[str]:
    """Latency (s) against the largest device's peak memory (MiB) of every feasible plan, one
    colour per method, each method's Pareto front drawn as a step line."""
    ok = [r for r in rows if r["status"] != "infeasible" and r["latency_s"] and r["peak_memory_bytes"]]
    if not ok:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, m in enumerate(sorted({r["method"] for r in ok})):
        pts = [(r["latency_s"], r["peak_memory_bytes"] / 2**20) for r in ok if r["method"] == m]
        ax.scatter(*zip(*pts), s=14, color=f"C{i % 10}", alpha=0.6, label=m)
        front = pareto_front(pts)
        ax.step(*zip(*front), where="post", color=f"C{i % 10}", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("peak memory of the largest device (MiB)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plan_of(row: dict[str, Any], base: str):
    from .plan import Plan, evaluate
    from .runtime import prepare
    plan = Plan.load(os.path.join(base, row["plan_file"]))
    _, _, graph, cluster = prepare(plan)
    return plan, graph, evaluate(plan, graph, cluster)


REGIME_COLUMNS = ("model", "input_side", "bandwidth_factor", "devices", "link", "speedup_vs_coedge", "speedup_vs_ftp")
PAPER_SPEEDUP = 1.44        # NPTP's smallest speed-up over CoEdge in its paper


def load_regime(path: str) -> list[dict[str, Any]]:
    """Rows of a regime CSV, numbers parsed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("input_side", "devices"):
            r[k] = int(r[k])
        for k in ("bandwidth_factor", "speedup_vs_coedge", "speedup_vs_ftp", "nptp_s", "coedge_s", "ftp_s"):
            r[k] = float(r[k])
    return rows


def regime_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, devices and link: the largest speed-up of NPTP over CoEdge and over FTP, and
    the cells (input side x bandwidth factor) where it reaches :data:`PAPER_SPEEDUP`."""
    out = []
    keys = sorted({(r["model"], r["devices"], r["link"]) for r in rows})
    for m, n, link in keys:
        rs = [r for r in rows if (r["model"], r["devices"], r["link"]) == (m, n, link)]
        top = max(rs, key=lambda r: r["speedup_vs_coedge"])
        hit = [r for r in rs if r["speedup_vs_coedge"] >= PAPER_SPEEDUP]
        where = "nowhere in the swept range" if not hit else (
            f"{len(hit)}/{len(rs)} cells: side {min(r['input_side'] for r in hit)}-{max(r['input_side'] for r in hit)}, "
            f"bandwidth x{min(r['bandwidth_factor'] for r in hit):g}-x{max(r['bandwidth_factor'] for r in hit):g}")
        out.append({"model": m, "devices": n, "link": link,
                    "max speed-up vs CoEdge": f"{top['speedup_vs_coedge']:.2f}x (side {top['input_side']}, "
                                              f"bw x{top['bandwidth_factor']:g})",
                    "median vs CoEdge": f"{statistics.median(r['speedup_vs_coedge'] for r in rs):.2f}x",
                    "max vs FTP": f"{max(r['speedup_vs_ftp'] for r in rs):.2f}x",
                    f">= {PAPER_SPEEDUP}x vs CoEdge": where})
    return out


def plot_regime(rows: list[dict[str, Any]], model: str, path: str) -> str:
    """Heat maps of NPTP's speed-up over CoEdge (input side x bandwidth), one per devices x link."""
    plt = _plt()
    rs = [r for r in rows if r["model"] == model]
    panels = sorted({(r["devices"], r["link"]) for r in rs})
    sides = sorted({r["input_side"] for r in rs})
    bws = sorted({r["bandwidth_factor"] for r in rs})
    vmax = max(PAPER_SPEEDUP + 0.1, max(r["speedup_vs_coedge"] for r in rs))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (n, link) in zip(axes[0], panels):
        grid = [[math.nan] * len(sides) for _ in bws]
        for r in rs:
            if (r["devices"], r["link"]) == (n, link):
                grid[bws.index(r["bandwidth_factor"])][sides.index(r["input_side"])] = r["speedup_vs_coedge"]
        im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=1.0, vmax=vmax, aspect="auto")
        for i in range(len(bws)):
            for j in range(len(sides)):
                v = grid[i][j]
                if math.isnan(v):
                    continue
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > (1 + vmax) / 2 else "white")
                if v >= PAPER_SPEEDUP:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
        ax.set_xticks(range(len(sides)), [str(x) for x in sides], fontsize=7)
        ax.set_yticks(range(len(bws)), [f"x{b:g}" for b in bws], fontsize=7)
        ax.set_xlabel("input side (pixels)")
        ax.set_title(f"{n} devices, {link}", fontsize=9)
    axes[0][0].set_ylabel("bandwidth (x 6.25 MB/s)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="NPTP speed-up over CoEdge")
    fig.suptitle(f"{model}: NPTP / CoEdge latency ratio; red: >= {PAPER_SPEEDUP}x (the paper's lower end)",
                 fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_regime_report(results: str, out_dir: str) -> list[str]:
    """The regime report of the module doc; returns the files written."""
    rows = load_regime(results)
    os.makedirs(out_dir, exist_ok=True)
    p = os.path.join(out_dir, "regime.md")
    with open(p, "w") as f:
        f.write(markdown_table(regime_rows(rows)))
    files = [p]
    for m in sorted({r["model"] for r in rows}):
        files.append(plot_regime(rows, m, os.path.join(out_dir, f"regime_{m}.png")))
    return files


IOP_MEMORY_COLUMNS = ("model", "devices", "coedge_peak_mib", "all_pairs_peak_mib", "all_pairs_reduction_pct",
                      "coedge_min_cap_mib", "iop_min_cap_mib", "cap_reduction_pct")


def write_iop_memory_report(results: str, out_dir: str) -> list[str]:
    """The IOP memory report of the module doc; returns the files written."""
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["devices"] = int(r["devices"])
        for k in IOP_MEMORY_COLUMNS[2:]:
            r[k] = float(r[k])
    os.makedirs(out_dir, exist_ok=True)
    md = os.path.join(out_dir, "iop_memory.md")
    with open(md, "w") as f:
        f.write(markdown_table([{"model": r["model"], "devices": r["devices"],
                                 "coedge peak MiB": f"{r['coedge_peak_mib']:.1f}",
                                 "every pair: peak MiB": f"{r['all_pairs_peak_mib']:.1f} "
                                                         f"({-r['all_pairs_reduction_pct']:+.1f} %)",
                                 "coedge fits in MiB": f"{r['coedge_min_cap_mib']:.1f}",
                                 "IOP greedy fits in MiB": f"{r['iop_min_cap_mib']:.1f} "
                                                           f"({-r['cap_reduction_pct']:+.1f} %)"} for r in rows]))
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in models:
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["devices"])
        ns = [r["devices"] for r in rs]
        a1.plot(ns, [r["all_pairs_reduction_pct"] for r in rs], marker="o", label=m)
        a2.plot(ns, [r["iop_min_cap_mib"] / r["coedge_min_cap_mib"] for r in rs], marker="o", label=m)
    a1.axhspan(21.22, 49.98, color="tab:red", alpha=0.12, label="paper: 21.22-49.98 %")
    a1.set_xlabel("devices")
    a1.set_ylabel("peak memory below coedge (%)")
    a1.set_title("every pair against coedge", fontsize=9)
    a2.set_xlabel("devices")
    a2.set_ylabel("smallest memory: IOP greedy / coedge")
    a2.set_title("smallest per-device memory each fits in", fontsize=9)
    for ax in (a1, a2):
        ax.set_xticks(sorted({r["devices"] for r in rows}))
    a1.legend(fontsize=7)
    fig.tight_layout()
    png = os.path.join(out_dir, "iop_memory.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [md, png]


def write_report(results: str, out_dir: str) -> list[str]:
    """Write the tables and figures of a sweep's CSV into ``out_dir``; return the files written."""
    from .errors import ConfigError
    if os.path.exists(results):
        with open(results, newline="") as f:
            header = next(csv.reader(f), [])
        if all(k in header for k in REGIME_COLUMNS):
            return write_regime_report(results, out_dir)
        if all(k in header for k in IOP_MEMORY_COLUMNS):
            return write_iop_memory_report(results, out_dir)
    rows = load_results(results)
    if not rows:
        raise ConfigError(f"{results}: no finished rows")
    os.makedirs(out_dir, exist_ok=True)
    files = []

    def text(name: str, body: str) -> None:
        p = os.path.join(out_dir, name)
        with open(p, "w") as f:
            f.write(body)
        files.append(p)

    summ, solv = summary_rows(rows), solver_rows(rows)
    text("summary.md", markdown_table(summ))
    text("summary.tex", latex_table(summ))
    text("solvers.md", markdown_table(solv))
    text("solvers.tex", latex_table(solv))
    if any(r.get("lower_bound_s") is not None for r in rows):
        uni = union_rows(rows)
        text("union.md", markdown_table(uni))
        text("union.tex", latex_table(uni))
    for name, fn in (("gaps.png", plot_gaps), ("solve_time.png", plot_solve_times), ("pareto.png", plot_pareto)):
        p = fn(rows, os.path.join(out_dir, name))
        if p:
            files.append(p)
    base = os.path.dirname(os.path.abspath(results))
    planned = [r for r in rows if r.get("plan_file") and r["latency_s"] and r["verified"] is not False]
    if planned:
        first = (planned[0]["model"], planned[0]["cluster"])
        best = min((r for r in planned if (r["model"], r["cluster"]) == first), key=lambda r: r["latency_s"])
        plan, graph, rep = _plan_of(best, base)
        files.append(plot_timeline(rep, os.path.join(out_dir, "timeline.png"),
                                   f"{best['model']} on {best['cluster']}: {best['method']} {best['mode']} "
                                   f"({rep.latency_s:.4f} s)"))
        order = {"nptp": 0, "ftp": 1, "coedge": 2}
        best_tiles = None               # the spatial plan whose tiled map has the most devices
        for r in sorted((r for r in planned if r["method"] in order),
                        key=lambda r: (order[r["method"]], r["mode"] != "exact")):
            plan, graph, _ = _plan_of(r, base)
            try:
                i = tiled_stage(plan, graph)
            except PartoptError:
                continue
            k = len({t.device for t in plan.stages[i].tasks})
            if best_tiles is None or k > best_tiles[0]:
                best_tiles = (k, r, plan, graph)
        if best_tiles:
            _, r, plan, graph = best_tiles
            files.append(plot_tiles(plan, graph, os.path.join(out_dir, "tiles.png"),
                                    title=f"{r['model']} on {r['cluster']}: {r['method']} {r['mode']}"))
    return files
