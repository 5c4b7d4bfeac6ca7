"""Figures of plans: a timeline (Gantt) of compute and transfers per device and link."""
from __future__ import annotations

from .plan import Report


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
