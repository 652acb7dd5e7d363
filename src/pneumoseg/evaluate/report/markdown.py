"""report.md, and the tables the demo's summary.md shares with it (from report.json-style dicts)."""

from __future__ import annotations

import math
from typing import Any

from pneumoseg.evaluate.bootstrap import CONFIDENCE
from pneumoseg.evaluate.report.measured import BTS_CLASSES
from pneumoseg.evaluate.report.tables import SIZE_BUCKETS, SIZE_CUTS, TALK_SOURCE, size_cut_pixels
from pneumoseg.infer.tune import describe_params

OPTIMISTIC = "validation (optimistic: post-processing was tuned on it)"
ORACLE_NOTE = ("The perfect-gate row is not a system: the ground truth decides which films reach the segmenter. "
               "It is the score an ideal classifier would give this segmenter, so the gap between it and two-stage "
               "is the classifier's, and the gap between it and 1.0 the segmenter's.")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 4, *, signed: bool = False) -> str:
    if _missing(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "—" if _missing(value) else f"{100 * value:.2f}%"


def _delta(interval: dict[str, float] | None) -> str:
    if interval is None:
        return "—"
    return f"{fmt(interval['mean'], signed=True)} [{fmt(interval['lo'], signed=True)}, {fmt(interval['hi'], signed=True)}]"


def ablation_table(rows: list[dict[str, Any]]) -> str:
    """The headline table: mean Dice with its interval, and the paired differences."""
    pct = f"{100 * CONFIDENCE:g}%"
    lines = [f"| system | mean Dice | {pct} CI | Δ vs all-empty [{pct} CI] | Δ vs segmentation alone [{pct} CI] "
             "| the talk's (SIIM LB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["mean_dice"] is None:
            lines.append(f"| {r['system']} | — ({r['note']}) | — | — | — | {fmt(r['talk'])} |")
            continue
        ci = f"[{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]"
        lines.append(f"| {r['system']} | {fmt(r['mean_dice'])} | {ci} | {_delta(r['delta_vs_empty'])} | "
                     f"{_delta(r['delta_vs_seg_alone'])} | {fmt(r['talk'])} |")
    return "\n".join(lines) + "\n"


def oracle_note(rows: list[dict[str, Any]]) -> list[str]:
    """What the perfect-gate row means (markdown lines), when the table has one."""
    return [ORACLE_NOTE, ""] if any(r.get("oracle") for r in rows) else []


def _verdict(interval: dict[str, float]) -> str:
    if interval["lo"] > 0:
        return "better, the interval above 0"
    if interval["hi"] < 0:
        return "worse, the interval below 0"
    return "no difference shown, the interval holds 0"


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """The table read out in words (markdown lines): the final two-stage system against
    segmentation alone and against all-empty, the healthy films each marks, and the ceiling."""
    by_key = {r["key"]: r for r in rows if r["mean_dice"] is not None}
    final = by_key.get("two_stage_swa") or by_key.get("two_stage")
    if final is None:
        return []
    lines = []
    for other, field in (("seg_alone", "delta_vs_seg_alone"), ("all_empty", "delta_vs_empty")):
        if final[field] is not None:
            lines.append(f"- {final['system']} against {by_key[other]['system']}: {_delta(final[field])}, "
                         f"{_verdict(final[field])}.")
    seg, fp = by_key.get("seg_alone"), final["fp_healthy"]
    if seg is not None:
        lines.append(f"- Healthy films given a mask: {seg['fp_healthy']['n']}/{seg['fp_healthy']['of']} by "
                     f"{seg['system']}, {fp['n']}/{fp['of']} by {final['system']}.")
    oracle = by_key.get("oracle_gate")
    if oracle is not None and oracle["delta_vs_empty"] is not None:
        lines.append(f"- Behind a perfect gate the segmenter would score {fmt(oracle['mean_dice'])}, "
                     f"{_delta(oracle['delta_vs_empty'])} against all-empty.")
    return ["What the table says:", "", *lines, ""]


def false_positive_table(rows: list[dict[str, Any]]) -> str:
    """Per system: the healthy films (no pneumothorax in truth) that got a non-empty mask."""
    lines = ["| system | healthy films given a mask | share |", "|---|---:|---:|"]
    for r in rows:
        fp = r["fp_healthy"]
        if fp is not None:
            lines.append(f"| {r['system']} | {fp['n']}/{fp['of']} | {_pct(fp['rate'])} |")
    return "\n".join(lines) + "\n"


def size_cut_text() -> str:
    small, large = (f"{100 * c:g}%" for c in SIZE_CUTS)
    small_px, large_px = size_cut_pixels()
    return (f"small < {small} of the image (< {small_px:,} px at 1024²), medium {small}–{large} "
            f"({small_px:,}–{large_px:,} px), large ≥ {large}; by the ground truth's area at full resolution")


def size_table(rows: list[dict[str, Any]], n_by_size: dict[str, int]) -> str:
    """Mean Dice per system on the images with pneumothorax, by size."""
    head = " | ".join(f"{b} (n={n_by_size.get(b, 0)})" for b in SIZE_BUCKETS)
    lines = [f"| system | {head} |", "|---|" + "---:|" * len(SIZE_BUCKETS)]
    for r in rows:
        if r["by_size"] is not None and r["key"] != "all_empty":
            cells = " | ".join(fmt(r["by_size"][b]["mean_dice"]) for b in SIZE_BUCKETS)
            lines.append(f"| {r['system']} | {cells} |")
    return "\n".join(lines) + "\n"


def bts_table(rows: list[dict[str, Any]], n_by_bts: dict[str, int]) -> str:
    """Mean Dice per system by the ground truth's BTS 2023 size class (docs/measurements.md)."""
    head = " | ".join(f"{b} (n={n_by_bts.get(b, 0)})" for b in BTS_CLASSES)
    lines = [f"| system | {head} |", "|---|" + "---:|" * len(BTS_CLASSES)]
    for r in rows:
        if r.get("by_bts") is not None and r["key"] != "all_empty":
            lines.append(f"| {r['system']} | " + " | ".join(fmt(r["by_bts"][b]["mean_dice"]) for b in BTS_CLASSES) + " |")
    return "\n".join(lines) + "\n"


def rim_table(rim: dict[str, Any] | None) -> list[str]:
    """The final system's measured rim and apical distance against the ground truth's."""
    if not rim or not rim["n"]:
        return ["No calibrated film is positive in both truth and prediction, so no rim is compared.", ""]
    lines = [f"Measured against true, {rim['system']}, on the {rim['n']} calibrated films positive in both "
             f"(BTS class the same on {rim['bts_agreement']} of {rim['n']}):", "",
             "| measurement | true (median) | measured (median) | mean absolute error |", "|---|---:|---:|---:|"]
    for field, name in (("lateral_mm", "lateral rim, mm"), ("apical_mm", "apical distance, mm")):
        r = rim[field]
        lines.append(f"| {name} | {fmt(r['true_median'], 1)} | {fmt(r['measured_median'], 1)} | "
                     f"{fmt(r['mean_abs_error'], 1)} |")
    return [*lines, ""]


def split_tables(split: dict[str, Any], heading: str, intro: str) -> list[str]:
    """A split's ablation, false-positive and by-size tables under ``heading`` (markdown lines)."""
    n, n_pos = split["n_images"], split["n_positive"]
    return [heading, "", f"{n} images ({n_pos} with pneumothorax, {n - n_pos} without). {intro}", "",
            ablation_table(split["rows"]), *oracle_note(split["rows"]), *findings(split["rows"]),
            "Healthy films given a non-empty mask (false positives of the system as a whole):", "",
            false_positive_table(split["rows"]),
            f"Mean Dice by pneumothorax size ({size_cut_text()}):", "",
            size_table(split["rows"], split["n_by_size"]),
            "Mean Dice by the ground truth's BTS 2023 size class (rim ≥ 20 mm laterally or apically: large; "
            f"{split.get('n_by_bts', {}).get('unknown', 0)} positive films without calibration left out):", "",
            bts_table(split["rows"], split.get("n_by_bts", {})), *rim_table(split.get("rim"))]


def describe_postprocess(post: dict[str, Any] | None) -> str:
    return "—" if post is None else describe_params(post)


def _evaluated_table(report) -> list[str]:
    ev = report.evaluated
    lines = ["## What was evaluated", "", "| | |", "|---|---|"]
    if ev.get("cls_run"):
        lines.append(f"| classifier run | `{ev['cls_run']}` (checkpoint `{ev.get('cls_checkpoint', 'best.safetensors')}`) |")
    if ev.get("seg_run"):
        checkpoints = ", ".join(f"`{c}`" for c in ev.get("seg_checkpoints", []))
        lines.append(f"| segmenter run | `{ev['seg_run']}` (checkpoints {checkpoints}) |")
    if ev.get("splits"):
        lines.append(f"| validation split | `{ev['splits']}`, fold {ev.get('fold', 0)} |")
    for name, split in report.splits.items():
        lines.append(f"| {name} images | {split['n_images']} ({split['n_positive']} with pneumothorax) |")
    if ev.get("test_images"):
        lines.append(f"| test set | `{ev['test_images']}`, labels `{ev['test_labels']}` |")
    size = report.splits["validation"]["eval_size"]
    lines.append(f"| Dice computed at | {size}×{size} px (the segmenter's input size, at most 512; min_area scaled "
                 "from 1024×1024) |")
    if "tta" in ev:
        lines.append(f"| hflip TTA row | {'yes' if ev['tta'] else 'no (--no-tta)'} |")
    return lines + [""]


def _protocol_text(report) -> list[str]:
    headline = "test" if "test" in report.splits else "validation"
    size = report.splits["validation"]["eval_size"]
    text = ("Each system's post-processing (rule, pixel threshold, min_area and, for two-stage rows, the classifier "
            "threshold) was chosen for that system alone by a grid search on the validation split, then applied "
            "unchanged to the held-out test set." if headline == "test" else
            "No held-out test set was given (`--test-images/--test-labels`): these rows are on the validation split "
            "the post-processing was tuned on, so they are optimistic.")
    return [text, f"SIIM mean Dice (1 when prediction and truth are both empty), computed at {size}×{size}. "
            f"Intervals: paired percentile bootstrap over images ({100 * CONFIDENCE:g}%, 2000 resamples, seed 0). "
            f"The last column is not ours: {TALK_SOURCE}; other data, resolution and split. On SIIM an all-empty "
            "submission already scores ≈ 0.79.", ""]


CHECK_TOLERANCE = 0.005
"""How far the full-resolution score of a test CSV may sit from the report's row unflagged."""


def submission_check(rows: list[dict[str, Any]], submissions: dict[str, dict[str, Any]], eval_size: int) -> list[str]:
    """Each system's row beside its `pneumoseg predict` + `evaluate` score at 1024×1024 (markdown lines)."""
    if not submissions:
        return []
    by_key = {r["key"]: r for r in rows}
    lines = ["The same systems run by `pneumoseg predict` (masks at 1024×1024) and scored by `pneumoseg evaluate`:",
             "", f"| system | this table (at {eval_size}×{eval_size}) | predict + evaluate (1024×1024) | difference |",
             "|---|---:|---:|---:|"]
    far = []
    for key, scores in submissions.items():
        ours = by_key[key]["mean_dice"]
        diff = None if ours is None else scores["mean_dice"] - ours
        lines.append(f"| {by_key[key]['system']} | {fmt(ours)} | {fmt(scores['mean_dice'])} | {fmt(diff, signed=True)} |")
        if diff is not None and abs(diff) > CHECK_TOLERANCE:
            far.append(by_key[key]["system"])
    if far:
        lines += ["", f"_Note: {', '.join(far)} differ by more than {CHECK_TOLERANCE} between the two resolutions "
                  "(small masks lost or gained by resizing, min_area scaling): read the 1024×1024 score as the "
                  "submission's._"]
    return lines + [""]


def _postprocess_table(report) -> list[str]:
    lines = ["## Post-processing per system (tuned on validation)", "",
             "| system | post-processing | validation mean Dice (tuned on it) |", "|---|---|---:|"]
    for s in report.systems:
        if s["key"] != "all_empty":
            lines.append(f"| {s['system']} | {describe_postprocess(s['postprocess'])} | {fmt(s['validation_dice'])} |")
    return lines + [""]


def _classifier_section(report) -> list[str]:
    c = report.classifier
    lines = ["## Classifier", "", f"On all {c['n_images']} validation images ({c['n_positive']} positive), at the "
             f"final two-stage system's classifier threshold {c['threshold']:g}.", ""]
    m = c.get("metrics")
    if m:
        talk = c["talk"]
        lines += ["| metric | ours | the talk's (its own split) |", "|---|---:|---:|",
                  f"| MCC | {fmt(m['mcc'])} | {fmt(talk['mcc'])} |",
                  f"| precision | {fmt(m['precision'])} | {fmt(talk['precision'])} |",
                  f"| recall | {fmt(m['recall'])} | {fmt(talk['recall'])} |",
                  f"| accuracy | {_pct(m['accuracy'])} | {_pct(talk['accuracy'])} |",
                  f"| ROC-AUC | {fmt(m['roc_auc'])} | — |", "",
                  f"Confusion: TP {m['tp']}, FP {m['fp']}, TN {m['tn']}, FN {m['fn']}.", ""]
    if c.get("note"):
        lines += [f"_{c['note']}_", ""]
    for key, alt in (("roc", "ROC curve"), ("pr", "precision-recall curve")):
        if key in report.plots:
            lines.append(f"![{alt}]({report.plots[key]})")
    return lines + [""]


def _segmenter_section(report) -> list[str]:
    s = report.segmenter
    lines = ["## Segmenter", "",
             f"Means over the {s['n_images']} validation images with pneumothorax. *raw*: p > {s['raw_threshold']:g} "
             "(as training validation measures it); *post-processed*: the final two-stage system's rule, without "
             "the classifier gate.", "",
             "| checkpoint | hflip TTA | masks | IoU | F1 | F2 |", "|---|---|---|---:|---:|---:|"]
    for r in s["rows"]:
        lines.append(f"| {r['checkpoint']} | {'yes' if r['tta'] else 'no'} | {r['masks']} | {fmt(r['iou'])} | "
                     f"{fmt(r['f1'])} | {fmt(r['f2'])} |")
    t = s["talk"]
    return lines + [f"| the talk's (its own split) | | | {fmt(t['iou'])} | {fmt(t['f1'])} | {fmt(t['f2'])} |", ""]


def _pictures(report) -> list[str]:
    lines = []
    if "dice_grid" in report.plots:
        g = report.dice_grid
        gate = f"classifier ≥ {g['cls_threshold']:g}" if g["gated"] else "no gate"
        chosen = ("; red box: chosen):" if g["chosen"] else
                  f"; the chosen rule is {g['rule']}, shown for comparison):")
        lines += [f"Mean Dice of the threshold rule over pixel threshold × min_area on validation ({g['variant']} "
                  f"checkpoint, {gate}{chosen}", "", f"![Dice over pixel threshold × min_area]({report.plots['dice_grid']})", ""]
    if "panels" in report.plots:
        lines += ["## Cases", "",
                  "The talk's columns: X-ray, ground truth, raw prediction, and the final mask after small-component "
                  "removal (and the classifier gate). Best, median and worst validation images by final Dice among "
                  "those positive in truth or prediction.", "",
                  "| case | ImageId | Dice | classifier p |", "|---|---|---:|---:|"]
        for case in report.panels:
            lines.append(f"| {case['case']} | `{case['image_id']}` | {case['dice']:.3f} | {fmt(case['cls_prob'], 3)} |")
        lines += ["", f"![Cases: image, truth, raw, final]({report.plots['panels']})", ""]
    return lines


def render_markdown(report) -> str:
    """report.md for a :class:`~pneumoseg.evaluate.report.Report`."""
    lines = ["# pneumoseg report: the talk's ablation, each system tuned on validation", ""]
    lines += _evaluated_table(report)
    if "test" in report.splits:
        lines += split_tables(report.splits["test"], "## Ablation on the held-out test set: SIIM mean Dice", "")
        lines += _protocol_text(report) + submission_check(report.splits["test"]["rows"], report.submissions,
                                                           report.splits["test"]["eval_size"])
        lines += split_tables(report.splits["validation"], f"## The same on {OPTIMISTIC}",
                              "Shown to compare with the test table, not as a result.")
    else:
        lines += split_tables(report.splits["validation"], f"## Ablation on {OPTIMISTIC}", "")
        lines += _protocol_text(report)
    lines += _postprocess_table(report)
    lines += _classifier_section(report) + _segmenter_section(report) + _pictures(report)
    lines += [f"_Note: {note}_" for note in report.notes]
    return "\n".join(lines).rstrip() + "\n"
