"""The PNG: throughput and latency percentiles over time, one line per design."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server
import matplotlib.pyplot as plt

# Past this many one-second points, throughput is drawn as an average over wider windows: commits
# come a chunk at a time, so a steady 6,000 messages/s reads 5,600 and 6,400 in alternate seconds.
MAX_POINTS = 120


def window_for(seconds: int) -> int:
    """How many one-second points each plotted throughput point averages."""
    return max(1, -(-seconds // MAX_POINTS))


def averaged(t: list[float], rates: list[float], width: int) -> tuple[list[float], list[float]]:
    """Mean rate over consecutive windows of `width` points, placed at each window's middle."""
    xs, ys = [], []
    for i in range(0, len(rates), width):
        part = rates[i:i + width]
        xs.append(sum(t[i:i + width]) / len(part))
        ys.append(sum(part) / len(part))
    return xs, ys


def draw(doc: dict[str, Any], path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    width = window_for(max((len(d["timeline"]) for d in doc["designs"].values()), default=0))
    for n, (name, design) in enumerate(doc["designs"].items()):
        color = f"C{n}"  # one colour per design; the line style tells the percentile
        series = design["timeline"]
        t = [p["t"] for p in series]
        xs, rates = averaged(t, [p["messages_per_s"] for p in series], width)
        top.plot(xs, rates, ".-", color=color, label=name)
        for key, style in (("p50_s", ".-"), ("p95_s", ".--"), ("p99_s", ".:")):
            pairs = [(p["t"], p[key]) for p in series if p.get(key) is not None]
            if pairs:
                xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
                bottom.plot(xs, ys, style, color=color, label=f"{name} {key[:3]}")
    per = "per second" if width == 1 else f"mean over {width} s"
    top.set_ylabel(f"messages/s ({per} of commit time)")
    top.set_ylim(bottom=0)
    top.set_title(doc["command"], fontsize=9)
    top.legend()
    top.grid(alpha=0.3)
    bottom.set_ylabel("latency, s (ingested_at - ts)")
    bottom.set_xlabel("seconds since the measured window opened")
    bottom.set_yscale("log")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
