"""Waiting for a design to land everything, with a progress line and a deadline on stalls."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

POLL_S = 1.0
LINE_EVERY_S = 5.0  # when the output is not a terminal, one line this often


@dataclass(frozen=True)
class Sample:
    at: float  # unix seconds
    landed: int


class Stalled(RuntimeError):
    pass


def watch(
    name: str, unit: str, probe: Callable[[], int], target: int, *, stall_s: float, started: float
) -> list[Sample]:
    """Poll `probe` until it reaches `target`; raise Stalled after `stall_s` without progress."""
    samples = [Sample(started, 0)]
    last_change = time.monotonic()
    last_line = 0.0
    shown = 0
    while samples[-1].landed < target:
        time.sleep(POLL_S)
        now, landed = time.time(), probe()
        if landed != samples[-1].landed:
            last_change = time.monotonic()
        samples.append(Sample(now, landed))
        if time.monotonic() - last_line >= (0 if sys.stdout.isatty() else LINE_EVERY_S):
            show(name, unit, samples, target)
            last_line, shown = time.monotonic(), len(samples)
        if time.monotonic() - last_change > stall_s:
            print()
            raise Stalled(f"{name}: stuck at {landed:,} of {target:,} {unit} for {stall_s:.0f} s")
    if shown != len(samples):
        show(name, unit, samples, target)
    if sys.stdout.isatty():
        print()
    return samples


def show(name: str, unit: str, samples: list[Sample], target: int) -> None:
    prev, last = samples[max(0, len(samples) - 3)], samples[-1]
    rate = (last.landed - prev.landed) / max(1e-9, last.at - prev.at)
    pct = 100 * last.landed / max(1, target)
    line = (
        f"  {name}: {last.landed:>10,} / {target:,} {unit} ({pct:5.1f}%)  now {rate:>9,.0f} {unit}/s"
        f"  {last.at - samples[0].at:6.1f} s"
    )
    end = "\r" if sys.stdout.isatty() else "\n"
    print(line, end=end, flush=True)
