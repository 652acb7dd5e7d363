"""``MODEL_CARD.md`` of a model bundle: what the two runs are, what they were trained on, how
they scored, the post-processing chosen, and what they are not for. Every number is read from
the runs (checkpoint headers, run.json, postprocess.json) or from a ``pneumoseg report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pneumoseg.runs.checkpoint import read_metadata
from pneumoseg.runs.postprocess import postprocess_path
from pneumoseg.runs.cv import fold_run, is_cv_folder, read_cv
from pneumoseg.runs.run_info import read_run_info
from pneumoseg.runs.trained import checkpoint_path

TEST_SECTION = "## Ablation on the held-out test set"

LIMITS = """\
## Intended use and limits

- A reading aid for frontal chest radiographs (PA/AP), beside the original image in the
  viewer: it marks where a pneumothorax may be and how large it is. It is not a diagnosis and
  not cleared for clinical use; every finding must be checked on the original image.
- Trained on the data named above only. Films from other scanners, children, lateral views,
  post-operative chests and images with burnt-in annotations were not evaluated.
- A negative answer does not exclude a pneumothorax: small ones are the hardest (see the
  Dice by size in the report).
"""


def _first_fold(run: Path) -> tuple[Path, int]:
    """A run folder (1 model), or a CV folder's first fold and its fold count (an ensemble)."""
    return (fold_run(run, 0), read_cv(run).n_folds) if is_cv_folder(run) else (run, 1)


def model_card(cls_run: Path, seg_run: Path, report_dir: Path | None = None) -> str:
    (cls_first, cls_folds), (seg_first, seg_folds) = _first_fold(cls_run), _first_fold(seg_run)
    cls_meta, seg_meta = _checkpoint_meta(cls_first, "best"), _checkpoint_meta(seg_first, "auto")
    lines = ["# Model card: pneumoseg two-stage pneumothorax model", "",
             "A classifier gates each chest X-ray; only films it calls positive reach the segmenter, whose "
             "mask is thresholded, cleaned of small components and run-length encoded (the SIIM-ACR recipe).", ""]
    if cls_folds > 1 or seg_folds > 1:
        lines += [f"Each stage is a fold ensemble (classifier: {cls_folds} folds, segmenter: {seg_folds} folds): the "
                  "probabilities of its folds are averaged. The rows below describe fold 0.", ""]
    lines += ["## The two models", "", "| stage | architecture | input | checkpoint | validation metrics |",
              "|---|---|---|---|---|"]
    lines.append(_model_row("classifier", cls_meta))
    lines.append(_model_row("segmenter", seg_meta))
    lines += ["", "## Training data", ""]
    for stage, run in (("classifier", cls_first), ("segmenter", seg_first)):
        info = read_run_info(run)
        if info is None:
            lines.append(f"- {stage}: the run records no training data (no run.json)")
            continue
        norm = info.normalisation or {}
        lines.append(f"- {stage}: {info.n_train} training and {info.n_val} validation images (fold {info.fold} of a "
                     f"split with SHA-256 {(info.splits_sha256 or '?')[:16]}…); input normalisation mean "
                     f"{norm.get('mean')}, std {norm.get('std')} ({norm.get('source', '?')})")
    lines += ["", "## Post-processing chosen (on validation, or out of fold for an ensemble)", ""]
    for gated, system in ((True, "two-stage"), (False, "segmentation alone (`predict --seg-only`)")):
        tuned = _read_json(postprocess_path(seg_run, gated=gated))
        if tuned:
            lines.append(f"- {system}: {_params(tuned.get('params', {}))}; validation mean Dice "
                         f"{tuned.get('mean_dice', float('nan')):.4f} on {tuned.get('n_images', '?')} images "
                         f"(all-empty {tuned.get('all_empty_baseline', float('nan')):.4f})")
        else:
            lines.append(f"- {system}: not tuned; the run's config values are used")
    lines += ["", *_test_results(report_dir), "", LIMITS]
    return "\n".join(lines)


def _checkpoint_meta(run: Path, which: str) -> dict[str, Any]:
    path = checkpoint_path(run, which)
    return {**(read_metadata(path) or {}), "file": path.name}


def _model_row(stage: str, meta: dict[str, Any]) -> str:
    config = meta.get("config", {}).get(stage, {})
    arch = config.get("arch", "?") if stage == "classifier" else f"{config.get('arch', '?')}-{config.get('encoder', '?')}"
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in (meta.get("metrics") or {}).items() if isinstance(v, float))
    return (f"| {stage} | {arch} | {config.get('image_size', '?')} px | {meta['file']} (epoch {meta.get('epoch', '?')}) "
            f"| {metrics or '—'} |")


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def _test_results(report_dir: Path | None) -> list[str]:
    """The report's held-out table, copied as it is; or a line saying there is none."""
    header = "## Held-out test results"
    report = Path(report_dir) / "report.md" if report_dir is not None else None
    if report is None or not report.is_file():
        return [header, "", "None attached: run `pneumoseg report ... --test-images DIR --test-labels CSV` and pass "
                "its folder to `export-model --report`."]
    text = report.read_text(encoding="utf-8")
    start = text.find(TEST_SECTION)
    if start < 0:
        return [header, "", f"{report.name} has no held-out test section (it was made without --test-images)."]
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)].strip().splitlines()
    return [header, "", f"From `pneumoseg report` ({report.name}):", "", *section[1:]]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
