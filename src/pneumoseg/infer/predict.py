"""Batch prediction over DICOM files into a SIIM submission CSV, without losing work.

Finished rows are appended to ``<out>.partial`` (flushed per batch), so a run that is killed
and started again with the same ``--out`` and settings skips the images already done
(:mod:`pneumoseg.infer.resume`: fingerprint and lock). Files that cannot be
read are listed in ``errors.csv`` beside the output; the final CSV is written atomically.
"""

from __future__ import annotations

import csv
import io
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from pneumoseg.data.dicom import DicomImage, read_image_id
from pneumoseg.data.labels import write_label_csv
from pneumoseg.data.read_ahead import read_ahead
from pneumoseg.data.preprocess import resize_mask
from pneumoseg.data.rle import rle_encode
from pneumoseg.errors import DicomReadError
from pneumoseg.infer.drawing import save_overlay, save_probability_map
from pneumoseg.infer.dicom_outputs import DicomOutputs, write_dicom_outputs
from pneumoseg.infer.findings import encode_finding, finding_row, image_measurement, write_findings
from pneumoseg.infer.pipeline import Prediction, TwoStagePipeline
from pneumoseg.infer.resume import open_partial, output_lock, partial_path, read_partial
from pneumoseg.io import atomic_write_text, shown



@dataclass
class PredictSummary:
    out: Path
    n_images: int = 0
    n_positive: int = 0
    n_resumed: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"wrote {self.out}: {self.n_images} images, {self.n_positive} with pneumothorax"]
        if self.n_resumed:
            lines.append(f"  {self.n_resumed} rows kept from an interrupted run")
        if self.errors:
            lines.append(f"  {len(self.errors)} files could not be read: see {errors_path(self.out)}")
        return "\n".join(lines)


def errors_path(out: Path) -> Path:
    return Path(out).with_name("errors.csv")


def safe_name(image_id: str) -> str:
    """An ImageId usable as a file name inside an output folder (no path separators)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in image_id).lstrip(".")
    return cleaned or "image"


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def shared_image_ids(paths: list[Path]) -> dict[str, str]:
    """Files whose SOPInstanceUID another file has too, with the reason to list in errors.csv.

    A submission has one row per ImageId, and overlays and SEGs are named by it: none of the
    files of a shared UID is predicted, rather than one silently replacing the other. A header
    that cannot be read is left for the full read to report."""
    by_id: dict[str, list[Path]] = {}
    for path in paths:
        try:
            by_id.setdefault(read_image_id(path), []).append(path)
        except DicomReadError:
            continue
    reasons = {}
    for image_id, group in by_id.items():
        for path in group if len(group) > 1 else []:
            others = ", ".join(shown(p) for p in group if p != path)
            reasons[str(path)] = (f"{shown(path)}: SOPInstanceUID {image_id} is also that of {others}; "
                                  "none of them is predicted (a submission has one row per ImageId)")
    return reasons


def _write_errors(out: Path, errors: dict[str, str]) -> None:
    path = errors_path(out)
    if not errors:
        path.unlink(missing_ok=True)
        return
    lines = ["path,reason"] + [_csv_line(shown(p), r) for p, r in sorted(errors.items())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_line(*values: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def run_fingerprint(pipeline: TwoStagePipeline, rle_fmt: str, *, overlays: Path | None = None,
                    probs: Path | None = None, dicom: DicomOutputs = DicomOutputs(),
                    findings: Path | None = None) -> dict[str, object]:
    """What a resumed run must share with the interrupted one: the pipeline's fingerprint, the
    RLE format, and which extra outputs each image gets (a kept row must have them too)."""
    outputs = {"overlays": overlays, "probs": probs, "dicom_seg": dicom.seg, "dicom_sr": dicom.sr,
               "dicom_sc": dicom.sc, "findings": findings}
    return {**pipeline.fingerprint(), "rle": rle_fmt, "outputs": {k: v is not None for k, v in outputs.items()}}


def predict_files(pipeline: TwoStagePipeline, paths: list[Path], out: Path, *, batch_size: int = 4,
                  rle_fmt: str = "relative", overlays: Path | None = None, probs: Path | None = None,
                  dicom: DicomOutputs = DicomOutputs(), findings: Path | None = None,
                  unreadable: dict[Path, str] | None = None, restart: bool = False,
                  progress: bool = True, workers: int = 0) -> PredictSummary:
    """Predict every file in ``paths`` and write the submission CSV ``out`` (one row per image).

    ``dicom``: folders for the DICOM SEG and SR of each positive image and the Secondary Capture
    of every image (:mod:`pneumoseg.infer.dicom_outputs`), ``<folder>/<ImageId>.dcm``; with
    ``findings``, every image a row of measurements (:mod:`pneumoseg.infer.findings`).
    ``unreadable``: paths the folder scan could not look into, listed in errors.csv. Rows of an
    interrupted run are kept when it had the same fingerprint (see :mod:`pneumoseg.infer.resume`).
    ``workers``: processes decoding ahead of the model (:func:`read_ahead`); the outputs and rows
    of a batch are written by one thread while the next batch is computed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = run_fingerprint(pipeline, rle_fmt, overlays=overlays, probs=probs, dicom=dicom, findings=findings)
    with output_lock(out):
        done = read_partial(out, fingerprint, restart=restart)
        shared = shared_image_ids(paths)
        paths = [p for p in paths if str(p) not in shared]
        errors = {**{str(p): f"{shown(p)}: {r}" for p, r in (unreadable or {}).items()}, **shared}
        summary = PredictSummary(out, n_resumed=sum(1 for p in paths if str(p) in done), errors=errors)
        todo = [p for p in paths if str(p) not in done]
        bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc="predict", unit="img", disable=not progress)
        chunks = list(_batches(todo, batch_size))
        with open_partial(out, fingerprint) as fh, ThreadPoolExecutor(1) as writer:
            written: deque = deque()

            def finish(images: list[DicomImage], preds: list[Prediction]) -> None:
                """Outputs, then the rows (flushed): off the compute path, in order (one thread)."""
                for image, pred in zip(images, preds):
                    rle = rle_encode(pred.mask, rle_fmt)
                    finding = _save_extras(image, pred, overlays, probs, dicom, findings is not None)
                    fh.write(_csv_line(str(image.path), image.image_id, rle, finding) + "\n")
                    done[str(image.path)] = (image.image_id, rle, finding)
                fh.flush()
                os.fsync(fh.fileno())

            for chunk, (images, unread) in zip(chunks, read_ahead(chunks, workers)):
                summary.errors.update(unread)
                written.append(writer.submit(finish, images, pipeline.predict([im.pixels for im in images])))
                while len(written) > 1 or (written and written[0].done()):
                    written.popleft().result()  # bounded: one batch written while the next is computed
                bar.update(len(chunk))
            while written:
                written.popleft().result()
        bar.close()
        kept = [done[str(p)] for p in paths if str(p) in done]
        rows = [(image_id, rle) for image_id, rle, _ in kept]
        write_label_csv(rows, out)
        if findings is not None:
            write_findings(findings, [finding for _, _, finding in kept])
        _write_errors(out, summary.errors)
        partial_path(out).unlink(missing_ok=True)
    summary.n_images = len(rows)
    summary.n_positive = sum(1 for _, rle in rows if rle.strip() != "-1")
    return summary


def _save_extras(image: DicomImage, pred: Prediction, overlays: Path | None, probs: Path | None,
                 dicom: DicomOutputs, findings: bool) -> str:
    """Write the image's extra outputs; return its findings line ("" without --findings)."""
    name = safe_name(image.image_id)
    if overlays is not None:
        save_overlay(overlays / f"{name}.png", image, pred.mask, pred.probability)
    if probs is not None and pred.seg_prob is not None:
        save_probability_map(probs / f"{name}.png", pred.seg_prob)
    if not (dicom or findings):
        return ""
    mask = resize_mask(pred.mask, image.shape)
    measurement = image_measurement(image, mask)
    if dicom:
        write_dicom_outputs(dicom, name, image, mask, measurement, pred.probability)
    return encode_finding(finding_row(image.image_id, pred.probability, measurement)) if findings else ""
