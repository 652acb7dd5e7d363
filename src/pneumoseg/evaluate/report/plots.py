"""The report's plots (matplotlib Agg, written atomically): classifier ROC and precision-recall,
the Dice grid over pixel threshold × min_area, and the talk's four-column cases."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pneumoseg.config import PostprocessConfig
from pneumoseg.metrics import classification_metrics, dice_scores, pr_curve_points, roc_curve_points
from pneumoseg.evaluate.report.tables import TALK_CLASSIFIER, System, dice_surface, select_panel_cases
from pneumoseg.evaluate.validation import predicted_masks
from pneumoseg.infer.drawing import GREEN, RED, outline
from pneumoseg.infer.outputs import ModelOutputs
from pneumoseg.io import atomic_save

PLOT_FILES = {"roc": "roc.png", "pr": "pr.png", "dice_grid": "dice_grid.png", "panels": "panels.png"}


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path: Path, dpi: int = 100) -> Path:
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    return path


def plot_roc(out: ModelOutputs, threshold: float, path: Path) -> Path:
    """ROC curve of the classifier with the operating point at ``threshold``."""
    y = out.truth_positive
    curve = roc_curve_points(y, out.cls_prob)
    m = classification_metrics(y, out.cls_prob, threshold)
    fpr = m["fp"] / max(m["fp"] + m["tn"], 1)
    fig = _figure(figsize=(5, 4.6))
    ax = fig.subplots()
    ax.plot(curve.fpr, curve.tpr, "-", color="tab:blue", lw=2, label=f"classifier (AUC {m['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.plot([fpr], [m["recall"]], "o", color="tab:red", ms=8, label=f"threshold {threshold:g}")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title=f"Classifier ROC, validation ({y.sum()} pos / {(~y).sum()} neg)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_pr(out: ModelOutputs, threshold: float, path: Path) -> Path:
    """Precision-recall curve with the operating point at ``threshold`` and the talk's point."""
    y = out.truth_positive
    curve = pr_curve_points(y, out.cls_prob)
    m = classification_metrics(y, out.cls_prob, threshold)
    fig = _figure(figsize=(5, 4.6))
    ax = fig.subplots()
    ax.plot(curve.recall, curve.precision, "-", color="tab:blue", lw=2, drawstyle="steps-post", label="classifier")
    ax.axhline(y.mean(), ls=":", color="grey", label=f"positive rate {y.mean():.2f}")
    ax.plot([m["recall"]], [m["precision"]], "o", color="tab:red", ms=8,
            label=f"threshold {threshold:g}: P {m['precision']:.2f}, R {m['recall']:.2f}")
    ax.plot([TALK_CLASSIFIER["recall"]], [TALK_CLASSIFIER["precision"]], "*", color="tab:purple", ms=12,
            label="the talk's classifier (its own split)")
    ax.set(xlabel="recall", ylabel="precision", xlim=(-0.02, 1.02), ylim=(-0.02, 1.05),
           title="Classifier precision-recall, validation")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_dice_grid(surface: dict[str, Any], path: Path, *, title: str) -> Path:
    """Annotated heatmap of mean Dice over pixel threshold (rows) × min_area (columns)."""
    values = np.asarray(surface["mean_dice"], dtype=float)
    pts, mas = surface["pixel_thresholds"], surface["min_areas"]
    fig = _figure(figsize=(1.0 * len(mas) + 2.6, 0.55 * len(pts) + 2.0))
    ax = fig.subplots()
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    image = ax.imshow(values, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    for r in range(len(pts)):
        for c in range(len(mas)):
            v = values[r, c]
            dark = (v - lo) / (hi - lo) < 0.6
            ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    chosen = surface.get("chosen") or {}
    if chosen.get("pixel_threshold") in pts and chosen.get("min_area") in mas:
        from matplotlib.patches import Rectangle

        r, c = pts.index(chosen["pixel_threshold"]), mas.index(chosen["min_area"])
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_xticks(range(len(mas)), [f"{a:g}" for a in mas])
    ax.set_yticks(range(len(pts)), [f"{p:g}" for p in pts])
    ax.set_xlabel("min_area (px at 1024×1024" + ("; red box: chosen)" if chosen else ")"))
    ax.set_ylabel("pixel threshold")
    ax.set_title(title, fontsize=10)
    empty = surface.get("all_empty")
    shown = empty is not None and math.isfinite(empty) and lo <= empty <= hi
    label = "SIIM mean Dice" + (f"\n(red line: all-empty {empty:.3f})" if shown else
                                ("" if empty is None or not math.isfinite(empty) else f"\n(all-empty {empty:.3f})"))
    bar = fig.colorbar(image, ax=ax, label=label)
    if shown:
        bar.ax.axhline(empty, color="red", lw=2)
    fig.tight_layout()
    return _save(fig, path)


def _short_id(image_id: str, keep: int = 12) -> str:
    return image_id if len(image_id) <= keep + 2 else "…" + image_id[-keep:]


def _show(ax, grey: np.ndarray, *layers: tuple[np.ndarray, tuple[int, int, int], float]) -> None:
    """``grey`` with each (mask, colour, fill) outlined as the overlays are (infer.drawing)."""
    bgr = cv2.cvtColor(np.asarray(grey, np.uint8), cv2.COLOR_GRAY2BGR)
    for mask, colour, fill in layers:
        outline(bgr, mask, colour, thickness=max(1, round(max(grey.shape) / 256)), fill=fill)
    ax.imshow(bgr[..., ::-1], interpolation="bilinear")


def plot_panels(out: ModelOutputs, post: PostprocessConfig, cases: list[dict[str, Any]], path: Path) -> Path:
    """The talk's four columns per case: image, ground truth, raw prediction, final mask."""
    raw_threshold = post.bottom if post.rule == "triplet" else post.pixel_threshold
    final = predicted_masks(out, post, gated=True)
    final_title = ("final: triplet rule" if post.rule == "triplet" else
                   f"after removing components < {post.min_area:g} px (at 1024²)")
    columns = ["X-ray", "ground truth", f"raw prediction (p > {raw_threshold:g})", final_title]
    fig = _figure(figsize=(10, 2.9 * max(len(cases), 1) + 0.3))
    if not cases:
        fig.text(0.5, 0.5, "no validation image is positive in truth or prediction", ha="center")
        return _save(fig, path)
    *rows, legend = fig.subfigures(len(cases) + 1, 1, height_ratios=[1.0] * len(cases) + [0.1])
    for sub, case in zip(rows, cases):
        i = case["index"]
        image, truth = out.images[i], out.truth[i]
        raw = out.seg_prob[i].astype(np.float32) > raw_threshold
        gate = f", classifier p {case['cls_prob']:.2f}" if case.get("cls_prob") is not None else ""
        sub.suptitle(f"{case['case']} case  ·  {_short_id(case['image_id'])}  ·  Dice {case['dice']:.3f}{gate}",
                     fontsize=10, fontweight="bold")
        axes = sub.subplots(1, 4)
        sub.subplots_adjust(left=0.01, right=0.99, bottom=0.09, top=0.84, wspace=0.04)
        raw_dice = float(dice_scores(raw[None], truth[None])[0])
        for j, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(columns[j], fontsize=8)
        _show(axes[0], image)
        _show(axes[1], image, (truth, GREEN, 0.35))
        for ax, mask, dice in ((axes[2], raw, raw_dice), (axes[3], final[i], case["dice"])):
            _show(ax, image, (mask, RED, 0.35), (truth, GREEN, 0.0))
            ax.set_xlabel(f"Dice {dice:.3f}" + ("" if mask.any() else " (empty)"), fontsize=8)
        if raw.any() and not final[i].any() and out.cls_prob is not None and out.cls_prob[i] < post.cls_threshold:
            axes[3].text(0.5, 0.05, f"gated: p {out.cls_prob[i]:.2f} < {post.cls_threshold:g}", color="yellow",
                         ha="center", transform=axes[3].transAxes, fontsize=8)
    legend.text(0.5, 0.5, "green: ground truth (filled in column 2, outline elsewhere)   red: prediction",
                ha="center", va="center", fontsize=9)
    return _save(fig, path)


def write_plots(out_dir: Path, validation: dict[str, ModelOutputs],
                system: System) -> tuple[dict[str, str], dict[str, Any], list[dict[str, Any]]]:
    """Every plot for ``system`` (the final two-stage model) on the validation outputs.

    Returns the plots written (name → file name in ``out_dir``), the Dice grid and the cases."""
    base, post = validation["best"], system.post
    plots: dict[str, str] = {}
    y = base.truth_positive
    if base.cls_prob is not None and y.any() and not y.all():
        plot_roc(base, post.cls_threshold, out_dir / PLOT_FILES["roc"])
        plot_pr(base, post.cls_threshold, out_dir / PLOT_FILES["pr"])
        plots.update(roc=PLOT_FILES["roc"], pr=PLOT_FILES["pr"])
    if not len(base.image_ids):
        return plots, {}, []
    out = validation[system.variant]
    grid = {"variant": system.variant, **dice_surface(out, post)}
    gate = f"classifier ≥ {post.cls_threshold:g}" if grid["gated"] else "no classifier gate"
    chosen_rule = "" if post.rule == "threshold" else f" (chosen: {post.rule} rule)"
    plot_dice_grid(grid, out_dir / PLOT_FILES["dice_grid"],
                   title=f"Mean Dice of the threshold rule{chosen_rule}, {system.name}\n{gate}, "
                         f"{len(out.image_ids)} validation images")
    cases = select_panel_cases(out, post)
    plot_panels(out, post, cases, out_dir / PLOT_FILES["panels"])
    plots.update(dice_grid=PLOT_FILES["dice_grid"], panels=PLOT_FILES["panels"])
    return plots, grid, [{**c, "variant": system.variant} for c in cases]
