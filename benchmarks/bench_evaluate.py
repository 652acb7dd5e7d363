"""``evaluate_submission`` on the full label file (12,047 images), and how it grows with N."""

from __future__ import annotations

from typing import Any

from benchmarks.timing import PeakRss, measure, row, target
from pneumoseg.data.labels import read_labels, write_label_csv
from pneumoseg.evaluate.scoring import evaluate_submission


def _perturbed_rows(labels) -> list[tuple[str, str]]:
    """A plausible submission: every 7th image missing, every 5th positive emptied, first instance only."""
    rows = []
    for k, label in enumerate(labels.images.values()):
        if k % 7 == 3:
            continue
        if not label.rles or k % 5 == 0:
            rows.append((label.image_id, "-1"))
        else:
            rows.append((label.image_id, label.rles[0]))
    return rows


def run(ctx) -> dict[str, Any]:
    labels = read_labels(ctx.label_file)
    n_all = len(labels.images)
    truth = ctx.label_file
    pred = ctx.tmp / "perturbed.csv"
    write_label_csv(_perturbed_rows(labels), pred)
    reps, warm = (1, 0) if ctx.quick else (3, 1)
    rows, targets = [], []
    if ctx.quick:
        sizes = [100, 300]
    else:
        sizes = [1000, 3000, 6000, n_all]
    # Scaling: the first N images of the file against themselves.
    items = list(labels.images.values())
    scale = {}
    for n in sizes:
        path = ctx.tmp / f"truth-{n}.csv"
        write_label_csv([(lab.image_id, rle) for lab in items[:n] for rle in (lab.rles or ("-1",))], path)
        t = measure(lambda: evaluate_submission(path, path), repeat=reps, warmup=warm)
        scale[n] = t
        rows.append(row(f"evaluate {n} images (self vs self)", t, unit="s total",
                        us_per_image=round(t.median / n * 1e6, 1)))
    if not ctx.quick:
        with PeakRss() as mem:
            full = measure(lambda: evaluate_submission(pred, truth), repeat=reps, warmup=warm)
        rows.append(row(f"evaluate {n_all} images (perturbed submission vs full label file)", full, unit="s total",
                        peak_rss_mb=round(mem.peak_mb)))
        worst = max(full.median, scale[n_all].median)
        targets.append(target(f"evaluate on {n_all} images", "< 20 s", f"{worst:.2f} s", worst < 20))
    return {"rows": rows, "targets": targets,
            "notes": ["evaluate time grows linearly with the number of images after a small fixed cost (see the "
                      "µs/image column); it parses both files and compares pixel-index sets, never building a 1024² array."]}
