"""Timing helpers: warm-up then median/min/max of several runs, and peak resident memory."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def sample_dir() -> Path:
    """The real SIIM sample: ``$PNEUMOSEG_SAMPLE_DIR``, else ``../shared/siim-sample`` beside the repo."""
    return Path(os.environ.get("PNEUMOSEG_SAMPLE_DIR", REPO_ROOT.parent / "shared" / "siim-sample"))


@dataclass
class Timing:
    times: list[float]
    warmup: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_dict(self, per: float = 1.0) -> dict[str, Any]:
        """Seconds per run divided by ``per`` (e.g. images per run → seconds per image)."""
        return {"median_s": self.median / per, "min_s": min(self.times) / per, "max_s": max(self.times) / per,
                "runs": len(self.times), "warmup": self.warmup}


def measure(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1,
            setup: Callable[[], Any] | None = None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times timed (``setup`` before each, untimed)."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(max(repeat, 1)):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(times, warmup)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakRss:
    """Samples RSS every few milliseconds while active: ``peak_mb`` and ``delta_mb`` over the start.

    Works for any back-end (PyTorch CPU, ONNX Runtime, NumPy), unlike the per-library counters.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def row(case: str, timing: Timing, *, per: float = 1.0, unit: str = "s", **extra: Any) -> dict[str, Any]:
    """One result row: the case name, the timing (per ``unit``) and any extra figures."""
    return {"case": case, "unit": unit, **timing.as_dict(per), **extra}


def target(name: str, goal: str, measured: str, met: bool, why: str = "") -> dict[str, Any]:
    return {"name": name, "goal": goal, "measured": measured, "met": bool(met), "why": why}
