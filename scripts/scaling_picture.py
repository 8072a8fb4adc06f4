"""Draws docs/scaling-out.png, the README's "Scaling out" picture (issue 19).

.venv/bin/python scripts/scaling_picture.py [docs/scaling-out.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

Box = tuple[float, float, float, float]  # x, y, width, height


def box(ax: plt.Axes, at: Box, title: str, note: str, color: str) -> None:
    x, y, w, h = at
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#333"
        )
    )
    ax.text(x + w / 2, y + h * 0.62, title, ha="center", va="center", fontsize=10, weight="bold")
    ax.text(x + w / 2, y + h * 0.28, note, ha="center", va="center", fontsize=7.5, color="#333")


def arrow(
    ax: plt.Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    style: str = "-|>",
    dashed: bool = False,
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=12,
            lw=1.3,
            color="#333",
            linestyle="--" if dashed else "-",
        )
    )
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + 0.12, label, ha="center", va="bottom", fontsize=7, color="#333")


def draw(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9.0, 3.7), dpi=110)
    ax.set_xlim(0, 10)
    ax.set_ylim(0.7, 4.7)
    ax.axis("off")
    box(ax, (0.1, 2.2, 1.6, 0.9), "callers / trunk", "SIP + RTP", "#eeeeee")
    box(
        ax,
        (2.3, 2.2, 1.8, 0.9),
        "Kamailio",
        "dispatcher: round-robin,\nOPTIONS probe, failover",
        "#cfe2f3",
    )
    box(
        ax,
        (4.9, 3.5, 2.0, 1.0),
        "recorder node 1",
        "service.node = rec-1\nB2BUA, notice, consent,\nRTP anchor, WAV",
        "#d9ead3",
    )
    box(
        ax,
        (4.9, 0.9, 2.0, 1.0),
        "recorder node 2",
        "service.node = rec-2\nB2BUA, notice, consent,\nRTP anchor, WAV",
        "#d9ead3",
    )
    box(ax, (8.1, 2.2, 1.6, 0.9), "PBX", "Asterisk, FreeSWITCH", "#eeeeee")
    box(ax, (4.2, 2.25, 1.55, 0.8), "PostgreSQL", "one catalog, one\naudit chain, holds", "#fff2cc")
    box(
        ax,
        (6.05, 2.25, 1.55, 0.8),
        "storage root",
        "rec-1/ rec-2/ YYYY/MM/DD\naudit-anchors.jsonl",
        "#fff2cc",
    )
    arrow(ax, (1.7, 2.65), (2.3, 2.65), "INVITE")
    arrow(ax, (4.1, 2.9), (4.9, 3.9), "SIP")
    arrow(ax, (4.1, 2.4), (4.9, 1.5), "SIP")
    arrow(ax, (6.9, 4.0), (8.1, 2.9), "SIP + RTP")
    arrow(ax, (6.9, 1.4), (8.1, 2.4), "SIP + RTP")
    arrow(ax, (0.9, 2.2), (4.9, 1.15), "RTP (anchored by the node)", dashed=True)
    arrow(ax, (0.9, 3.1), (4.9, 4.25), "RTP (anchored by the node)", dashed=True)
    for y0, y1 in ((3.5, 3.05), (1.9, 2.25)):
        arrow(ax, (5.3, y0), (5.0, y1), style="<|-|>")
        arrow(ax, (6.5, y0), (6.8, y1), style="<|-|>")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/scaling-out.png"))
