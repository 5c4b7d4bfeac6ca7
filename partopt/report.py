"""Figures of plans: a timeline (Gantt) of compute and transfers per device and link, and a
tile map of a spatially split stage."""
from __future__ import annotations

from typing import Optional

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
