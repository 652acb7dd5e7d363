"""Speed benchmarks for pneumoseg (``make bench``); not part of ``make test``.

Each ``bench_*.py`` module exposes ``run(ctx) -> dict`` returning rows (timings), targets (the
issue's goals with the measured value) and notes; ``python -m benchmarks`` runs them all and
writes ``results.json`` and ``RESULTS.md`` beside this file.
"""
