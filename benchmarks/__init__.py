"""Speed benchmarks for pneumoseg (``make bench``); not part of ``make test``.

Each ``bench_*.py`` module exposes ``run(ctx) -> dict`` returning rows (timings), targets (the
issue's goals with the measured value) and notes; ``python -m benchmarks`` runs them all and
writes ``results.json`` and ``RESULTS.md`` beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any


@dataclass
class Context:
    quick: bool
    sample_dir: Path
    tmp: Path

    @property
    def label_file(self) -> Path:
        return self.sample_dir / "train-rle-full.csv.gz"

    @property
    def config_name(self) -> str:
        return "demo" if self.quick else "siim"


def run_case(case: str, ctx: Context) -> dict[str, Any]:
    """``bench_<case>.run(ctx)``; importable by name, so a fresh process can run it."""
    import multiprocessing

    # A spawned process inherits "spawn" as its default start method; a fresh interpreter has the
    # platform's (fork on Linux), which is what DataLoader workers use in training.
    multiprocessing.set_start_method(None, force=True)
    return import_module(f"benchmarks.bench_{case}").run(ctx)
