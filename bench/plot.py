"""The PNG: throughput and latency percentiles over time, one line per design."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server
import matplotlib.pyplot as plt


def draw(doc: dict[str, Any], path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for n, (name, design) in enumerate(doc["designs"].items()):
        color = f"C{n}"  # one colour per design; the line style tells the percentile
        series = design["timeline"]
        t = [p["t"] for p in series]
        top.plot(t, [p["messages_per_s"] for p in series], ".-", color=color, label=name)
        for key, style in (("p50_s", ".-"), ("p95_s", ".--"), ("p99_s", ".:")):
            pairs = [(p["t"], p[key]) for p in series if p.get(key) is not None]
            if pairs:
                xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
                bottom.plot(xs, ys, style, color=color, label=f"{name} {key[:3]}")
    top.set_ylabel("messages/s (per second of commit time)")
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
