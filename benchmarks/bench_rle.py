"""RLE encode/decode of 1024×1024 masks, pneumoseg vs the loop baseline; decode + union of the label file."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import baseline_rle
from benchmarks.timing import PeakRss, measure, row, target
from pneumoseg.data.labels import label_mask, label_pixels, read_labels
from pneumoseg.data.rle import rle_decode, rle_encode, rle_runs

SHAPE = (1024, 1024)


def _union_baseline(rows: list[tuple[str, str]]) -> int:
    """Every row decoded with the baseline and OR-ed into its image's mask; returns the total foreground.

    Only the current image's mask is kept (rows of one image are consecutive in the file), as a
    streaming consumer would: holding all 12,047 masks would need ~100 GB.
    """
    total, current_id, current = 0, None, None
    for image_id, rle in rows:
        mask = baseline_rle.rle2mask(rle, *SHAPE)
        if image_id == current_id:
            current = np.maximum(current, mask)
        else:
            if current is not None:
                total += int(np.count_nonzero(current))
            current_id, current = image_id, mask
    return total + (int(np.count_nonzero(current)) if current is not None else 0)


def _union_pneumoseg(labels) -> int:
    """The same with :func:`pneumoseg.data.labels.label_mask` (decode + union per image)."""
    return sum(int(np.count_nonzero(label_mask(label, SHAPE))) for label in labels)


def run(ctx) -> dict[str, Any]:
    labels = read_labels(ctx.label_file)
    raw = [(label.image_id, rle) for label in labels.images.values() for rle in (label.rles or ("-1",))]
    positives = [rle for label in labels.images.values() for rle in label.rles]
    n_masks = 3 if ctx.quick else 20
    picked = positives[:: max(1, len(positives) // n_masks)][:n_masks]
    masks = [rle_decode(r, SHAPE) for r in picked]
    for rle, mask in zip(picked, masks):  # same spec, same strings
        assert baseline_rle.mask2rle(mask) == rle == rle_encode(mask), "baseline and pneumoseg disagree"
        assert np.array_equal(baseline_rle.rle2mask(rle) > 0, mask)
    reps, base_reps = (1, 1) if ctx.quick else (5, 3)
    rows, out = [], {}

    enc = measure(lambda: [rle_encode(m) for m in masks], repeat=reps, warmup=1)
    enc_base = measure(lambda: [baseline_rle.mask2rle(m) for m in masks], repeat=base_reps if not ctx.quick else 1,
                       warmup=0)
    dec = measure(lambda: [rle_decode(r, SHAPE) for r in picked], repeat=reps, warmup=1)
    dec_base = measure(lambda: [baseline_rle.rle2mask(r, *SHAPE) for r in picked], repeat=reps, warmup=1)
    parse = measure(lambda: [rle_runs(r, SHAPE) for r in picked], repeat=reps, warmup=1)
    n = len(masks)
    fg = float(np.mean([m.mean() for m in masks]))
    for name, t, base in (("encode", enc, enc_base), ("decode", dec, dec_base)):
        ratio = base.median / t.median
        out[name] = ratio
        rows.append(row(f"rle {name} 1024² mask (pneumoseg)", t, per=n, unit="s/mask", speedup_vs_loop=round(ratio, 1)))
        rows.append(row(f"rle {name} 1024² mask (loop baseline)", base, per=n, unit="s/mask"))

    rows.append(row("rle parse + validate only (rle_runs, no mask)", parse, per=n, unit="s/mask"))
    us = {k: t.median / n * 1e6 for k, t in (("dec", dec), ("base", dec_base), ("parse", parse))}

    # Decode + union of every row of the label file (12,954 rows, 12,047 images).
    all_rows = raw[:300] if ctx.quick else raw
    ids = list(dict.fromkeys(i for i, _ in all_rows))
    subset = [labels.images[i] for i in ids]
    with PeakRss() as mem:
        union = measure(lambda: _union_pneumoseg(subset), repeat=reps, warmup=1)
    pixels = measure(lambda: sum(label_pixels(label, SHAPE).size for label in subset), repeat=reps, warmup=1)
    union_base = measure(lambda: _union_baseline(all_rows), repeat=1, warmup=0)
    check_ids = set(ids[:150])
    assert _union_baseline([r for r in all_rows if r[0] in check_ids]) == _union_pneumoseg(
        [labels.images[i] for i in ids[:150]]), "baseline and pneumoseg unions differ"
    ratio_union = union_base.median / union.median
    out["union"] = ratio_union
    rows.append(row(f"decode+union label file ({len(all_rows)} rows, {len(ids)} images, pneumoseg)", union,
                    unit="s total", speedup_vs_loop=round(ratio_union, 1), peak_rss_mb=round(mem.peak_mb)))
    out["pixels"] = union_base.median / pixels.median
    rows.append(row(f"decode+union label file as pixel indices (label_pixels, what evaluate uses)", pixels,
                    unit="s total", speedup_vs_loop=round(out["pixels"], 1)))
    rows.append(row(f"decode+union label file ({len(all_rows)} rows, loop baseline)", union_base, unit="s total"))

    targets = [
        target("RLE encode vs loop", "≥ 50×", f"{out['encode']:.0f}×", out["encode"] >= 50),
        target("RLE decode vs loop", "≥ 50×", f"{out['decode']:.1f}×", out["decode"] >= 50,
               f"pneumoseg takes {us['dec']:.0f} µs per mask against the baseline's {us['base']:.0f} µs. The "
               "competition's reference decoder is not a pixel loop: it assigns one NumPy slice per run "
               f"(~{np.mean([len(r.split()) // 2 for r in picked]):.0f} runs per mask), so its cost is zeroing an "
               "8 MB float64 array plus the int() parse. 50× would mean ~"
               f"{us['base'] / 50:.0f} µs per 1024² mask. Of ours, {us['parse']:.0f} µs is parsing and validating "
               "the string (regex, bounds and overlap checks that the baseline skips; see the rle_runs row), the "
               "rest scattering the pixels into a 1 MB bool mask. What would fix it: a trusted fast path without "
               "validation and a slice-per-run fill of a column-major buffer; not worth it, since decoding is "
               "nowhere near a bottleneck (evaluate on 12,047 images takes a few seconds)."),
        target("decode + union of label file vs loop", "≥ 50×", f"{out['union']:.1f}×", out["union"] >= 50,
               f"per image, the baseline's cost is one 8 MB float64 array per row (plus np.maximum for images "
               "with several instances); ours is dominated by parsing and validating each RLE again (read_labels "
               f"already validated them once). Skipping the mask (label_pixels, used by evaluate) gains only "
               f"{out['pixels'] / out['union']:.1f}× more ({out['pixels']:.0f}× vs the baseline), which confirms "
               "parsing is the cost. Fix: keep the runs parsed by read_labels instead of re-parsing the strings "
               "(about halves it), and a trusted path without re-validation."),
    ]
    notes = [f"{n} real positive masks from the label file (mean foreground {fg:.2%}); encoders verified equal "
             "to the baseline string and to the label file byte for byte before timing."]
    return {"rows": rows, "targets": targets, "notes": notes}
