"""Commands that use trained models: predict, export to ONNX, tune the post-processing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.bundle import ModelOpt, bundle_runs
from pneumoseg.cli.base import ClsRunOpt, FoldEvalOpt, ImagesOpt, LabelsOpt, SplitsEvalOpt, app
from pneumoseg.cli.options import at_least, device_name, output_file, output_folder, rle_format, tta_flag
from pneumoseg.errors import PneumosegError
from pneumoseg.io import shown


@app.command()
def predict(
    out: Annotated[Path, typer.Option(help="Submission CSV to write (ImageId,EncodedPixels).")],
    images: Annotated[Optional[list[Path]], typer.Option(help="DICOM folder (searched recursively) or files; repeatable. Or --dicomweb with --study.")] = None,
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`); --backend torch.")] = None,
    cls: ClsRunOpt = None,
    backend: Annotated[str, typer.Option(help="Run the models in torch (run folders), or an export-onnx folder in onnx (ONNX Runtime) or openvino (OpenVINO, CPU; the fastest here, and the only one for a bf16 export: benchmarks/RESULTS.md).")] = "torch",
    onnx: Annotated[Optional[Path], typer.Option("--onnx", metavar="DIR", help="Folder written by `pneumoseg export-onnx` (--backend onnx or openvino).")] = None,
    seg_only: Annotated[bool, typer.Option(help="Skip the classifier gate and segment every image (ablation); uses the run's postprocess-seg-only.json (from `pneumoseg tune` without --cls) when present, else postprocess.json.")] = False,
    checkpoint: Annotated[str, typer.Option(help="Segmenter checkpoint: auto (SWA if present), swa or best.")] = "auto",
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or hflip.")] = "none",
    rule: Annotated[Optional[str], typer.Option(help="Post-processing rule: threshold (the talk) or triplet (1st place).")] = None,
    cls_threshold: Annotated[Optional[float], typer.Option(help="Classifier probability that counts as positive.")] = None,
    pixel_threshold: Annotated[Optional[float], typer.Option(help="Segmenter pixel probability threshold.")] = None,
    min_area: Annotated[Optional[int], typer.Option(help="Smallest component kept, px at 1024x1024 (scaled).")] = None,
    rle: Annotated[str, typer.Option(help="RLE flavour: relative (SIIM) or standard.")] = "relative",
    overlays: Annotated[Optional[Path], typer.Option(help="Write PNG overlays (X-ray with the region outlined) here.")] = None,
    probs: Annotated[Optional[Path], typer.Option(help="Write probability maps (8-bit PNG) here.")] = None,
    dicom_seg: Annotated[Optional[Path], typer.Option(
        "--dicom-seg", metavar="DIR", help="Write a DICOM SEG (<ImageId>.dcm) for each positive image here.")] = None,
    dicom_sr: Annotated[Optional[Path], typer.Option(
        "--dicom-sr", metavar="DIR", help="Write a DICOM SR (TID 1500) of each positive image's measurements here; it references the SEG, so give --dicom-seg too.")] = None,
    dicom_sc: Annotated[Optional[Path], typer.Option(
        "--dicom-sc", metavar="DIR", help="Write an RGB Secondary Capture of every image (outline + one-line summary) here, for PACS that cannot show a SEG.")] = None,
    findings: Annotated[Optional[Path], typer.Option(help="Also write findings.csv here: per image the probability, side, area (cm²), lateral rim and apical distance (mm), BTS and ACCP size class, and the calibration used (docs/measurements.md).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per batch [default: 16 on a GPU, 4 on the CPU, where a larger batch gains nothing (benchmarks/RESULTS.md)].")] = None,
    workers: Annotated[int, typer.Option(help="Processes that decode the DICOMs ahead of the model (0: in the main process). Worth it where decoding is a real share of the time: on a GPU, or with a light model; on a 2-core CPU the model already keeps both cores busy (docs/experiments.md).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    restart: Annotated[bool, typer.Option(help="Discard the rows of an interrupted run (OUT.partial) and start over.")] = False,
    model: ModelOpt = None,
    dicomweb: Annotated[Optional[str], typer.Option(metavar="URL", help="Read the images from this DICOMweb server (WADO-RS), e.g. http://pacs:8042/dicom-web; with --study. The study's CR/DX chest PA/AP instances are fetched to OUT's folder (<OUT stem>-dicomweb/), the rest skipped.")] = None,
    study: Annotated[Optional[str], typer.Option(metavar="UID", help="StudyInstanceUID to read with --dicomweb.")] = None,
    stow: Annotated[Optional[str], typer.Option(metavar="URL", help="Store the study's DICOM outputs (--dicom-seg/--dicom-sr/--dicom-sc) at this DICOMweb server by STOW-RS.")] = None,
) -> None:
    """Predict pneumothorax masks for DICOM images and write a SIIM submission CSV.

    The classifier gates; only positives are segmented; the mask is thresholded, small
    components are removed and the 1024x1024 mask is run-length encoded. Post-processing
    values come from the segmenter run's postprocess.json (written by `pneumoseg tune --cls`;
    with --seg-only: postprocess-seg-only.json, written by `pneumoseg tune` without --cls)
    unless given here.

    Exit status: 0 all images predicted; 1 some files or folders could not be read (listed in
    errors.csv beside OUT; every readable image still has its row); 2 bad usage or input
    (one line); 3 internal error (one line naming the log with the traceback).

    A killed run, rerun with the same --out and settings, resumes from OUT.partial; with other
    settings or models it is refused unless --restart. Two runs on one --out: the second is
    refused (OUT.lock).

    Pull mode: `--dicomweb URL --study UID [--stow URL]` reads one study from PACS and stores the
    results back into it."""
    from pneumoseg.config import updated_postprocess
    from pneumoseg.infer.dicom_outputs import DicomOutputs
    from pneumoseg.infer.predict import predict_files

    if batch_size is not None:
        at_least("--batch-size", batch_size)
    at_least("--workers", workers, 0)
    rle_format(rle)
    output_file("--out", out)
    output_file("--findings", findings)
    for option, folder in (("--overlays", overlays), ("--probs", probs), ("--dicom-seg", dicom_seg),
                           ("--dicom-sr", dicom_sr), ("--dicom-sc", dicom_sc)):
        output_folder(option, folder)
    if dicom_sr is not None and dicom_seg is None:
        raise PneumosegError("--dicom-sr references the DICOM SEG of each finding: give --dicom-seg DIR too")
    dicom = DicomOutputs(dicom_seg, dicom_sr, dicom_sc)
    if stow is not None and not dicom:
        raise PneumosegError("--stow stores the DICOM outputs: give --dicom-seg, --dicom-sr or --dicom-sc DIR")
    device = device_name(device) if backend == "torch" else device
    batch_size = batch_size or (16 if device.startswith("cuda") else 4)
    paths, unreadable = _input_files(images, dicomweb, study, out)
    with bundle_runs(model, cls, seg) as (cls, seg):
        pipeline = _build_pipeline(backend, cls, seg, onnx, seg_only=seg_only, checkpoint=checkpoint,
                                   tta=tta_flag(tta), device=device)
    updates = {"rule": rule, "cls_threshold": cls_threshold, "pixel_threshold": pixel_threshold, "min_area": min_area}
    pipeline.post = updated_postprocess(pipeline.post, updates, "command line")
    summary = predict_files(pipeline, paths, out, batch_size=batch_size, rle_fmt=rle, overlays=overlays, probs=probs,
                            dicom=dicom, findings=findings, unreadable=unreadable, restart=restart, workers=workers)
    typer.echo(summary.render())
    if stow is not None:
        _store_results(stow, dicom, study if dicomweb else None, paths)
    if summary.errors:
        raise typer.Exit(1)


@app.command("export-onnx")
def export_onnx(
    out: Annotated[Path, typer.Option(help="Folder for classifier.onnx, segmenter.onnx and onnx.json (created).")],
    cls: Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`; best checkpoint).")] = None,
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`).")] = None,
    model: ModelOpt = None,
    checkpoint: Annotated[str, typer.Option(help="Segmenter checkpoint: auto (SWA if present), swa or best.")] = "auto",
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
    precision: Annotated[str, typer.Option(help="fp32; int8: static QDQ quantisation (ONNX Runtime's tools), calibrated on --calibrate films, run by onnx or openvino; bf16: the fp32 graphs, run in bf16 by --backend openvino on a CPU with native bf16 (ONNX Runtime has no bf16 convolutions).")] = "fp32",
    calibrate: Annotated[Optional[Path], typer.Option(metavar="DIR", help="DICOM folder of films to calibrate int8 on, e.g. validation images (never test images).")] = None,
    calibration_n: Annotated[int, typer.Option(help="How many --calibrate films (the first N by name). 96 kept 99% of the demo's classifier decisions where 32 kept 98.5% (docs/experiments.md, E9).")] = 96,
) -> None:
    """Export both models to ONNX (dynamic batch, height and width) for `predict --backend onnx` or `openvino`.

    onnx.json beside them records each model's input size, normalisation, tensor names, opset,
    precision (and for int8 the films it was calibrated on), source checkpoint and the
    post-processing (the segmenter run's postprocess.json). A CV folder exports one file per fold."""
    from pneumoseg.export import export_onnx as run_export
    from pneumoseg.export import render_export
    from pneumoseg.export.quantize import calibration_films, check_precision

    if checkpoint not in {"auto", "best", "swa"}:
        raise PneumosegError(f"--checkpoint must be auto, best or swa, not {checkpoint!r}")
    check_precision(precision)
    at_least("--calibration-n", calibration_n)
    films = None
    if precision == "int8":
        if calibrate is None:
            raise PneumosegError("--precision int8 calibrates on real films: give --calibrate DIR (validation images)")
        from pneumoseg.data.index import find_dicoms

        films = calibration_films(find_dicoms(calibrate), calibration_n)
    elif calibrate is not None:
        raise PneumosegError("--calibrate is for --precision int8")
    with bundle_runs(model, cls, seg, both=True) as (cls, seg):
        manifest = run_export(cls, seg, out, seg_checkpoint=checkpoint, opset=opset, precision=precision,
                              calibration=films)
    typer.echo(render_export(manifest, out))



@app.command()
def tune(
    images: ImagesOpt,
    labels: LabelsOpt,
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`).")] = None,
    cls: Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder: tune the two-stage pipeline (postprocess.json). Without it: tune segmentation alone (postprocess-seg-only.json).")] = None,
    cv: Annotated[Optional[str], typer.Option("--cv", metavar="CLS_CV,SEG_CV", help="Tune on the out-of-fold outputs of two `pneumoseg cv train` folders (two-stage), or of one segmenter CV (segmentation alone), instead of --cls/--seg; saved in the segmenter CV folder.")] = None,
    rule: Annotated[str, typer.Option(help="Rule to tune: best (compare both), threshold or triplet.")] = "best",
    checkpoint: Annotated[str, typer.Option(help="Segmenter checkpoint: auto (SWA if present), swa or best.")] = "auto",
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or hflip.")] = "none",
    fold: FoldEvalOpt = 0,
    splits: SplitsEvalOpt = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Choose the post-processing by SIIM mean Dice, for one system: on the validation split,
    or with --cv on every training image, each predicted by the fold that did not see it.

    With --cls: classifier threshold, pixel threshold and min_area of the two-stage pipeline,
    saved as postprocess.json next to the segmenter run (used by predict). Without --cls:
    segmentation alone, saved as postprocess-seg-only.json (used by predict --seg-only)."""
    from pneumoseg.infer.tune import save_postprocess, tune_postprocess

    if rule not in {"best", "threshold", "triplet"}:
        raise PneumosegError(f"--rule must be best, threshold or triplet, not {rule!r}")
    if cv is not None:
        if cls is not None or seg is not None:
            raise PneumosegError("--cv replaces --cls and --seg; give one or the other")
        from pneumoseg.cli.cv import cv_folders

        cls, seg = cv_folders(cv)
        outputs, source = _oof_for_tuning(cls, seg, images, labels, checkpoint, tta_flag(tta), device_name(device))
    else:
        from pneumoseg.evaluate.validation import outputs_from_runs, validation_samples

        if seg is None:
            raise PneumosegError("give --seg RUN (and --cls RUN for the two-stage pipeline), or --cv CLS_CV,SEG_CV")
        samples = validation_samples(seg, images, labels, splits_path=splits, fold=fold, cls_run=cls)
        outputs, source = outputs_from_runs(cls, seg, samples, checkpoint=checkpoint, tta=tta_flag(tta),
                                            device=device_name(device), desc="validation inference"), None
    result = tune_postprocess(outputs, rule=rule, gated=cls is not None)
    result.source = source
    path = save_postprocess(result, seg)
    typer.echo(result.render())
    typer.echo(f"saved {path}")


def _oof_for_tuning(cls: Path | None, seg: Path, images: Path, labels: Path, checkpoint: str, tta: bool, device: str):
    """The out-of-fold outputs of the checkpoint (and TTA) predict will use, and their source."""
    from pneumoseg.evaluate.cv import oof_outputs, oof_source

    variants = oof_outputs(cls, seg, images, labels, device=device)
    final = "swa" if "swa" in variants and checkpoint != "best" else "best"
    key = f"{final}+tta" if tta else final
    if key not in variants:
        raise PneumosegError(f"no out-of-fold outputs for checkpoint {final}{' with TTA' if tta else ''}")
    return variants[key], oof_source(seg, variants[key].size)


def _input_files(images: list[Path] | None, dicomweb: str | None, study: str | None,
                 out: Path) -> tuple[list[Path], dict[Path, str]]:
    """The DICOM files to read and the unreadable ones with reasons: from --images, or fetched
    from --dicomweb (the files stay beside OUT, so a rerun fetches only what is missing)."""
    from pneumoseg.data.index import scan_dicoms

    if (dicomweb is None) == (not images):
        raise PneumosegError("give --images DIR, or --dicomweb URL --study UID (one of the two)")
    if dicomweb is not None:
        from pneumoseg.infer.dicomweb import fetch_study
        from pneumoseg.infer.predict import safe_name

        if not study:
            raise PneumosegError("--dicomweb reads one study: give --study StudyInstanceUID")
        fetched = fetch_study(dicomweb, study, out.parent / f"{out.stem}-dicomweb" / safe_name(study))
        typer.echo(fetched.render(study))
        if not fetched.paths:
            raise PneumosegError(f"{dicomweb}: study {study} has no radiographs to read")
        return fetched.paths, {}
    if study is not None:
        raise PneumosegError("--study is for --dicomweb URL")
    scans = [scan_dicoms(root) for root in images]
    paths = [p for scan in scans for p in scan.paths]
    unreadable = {p: reason for scan in scans for p, reason in scan.problems.items()}
    if not paths and not unreadable:
        raise PneumosegError(f"no .dcm files found under {', '.join(shown(root) for root in images)}")
    return paths, unreadable


def _store_results(url: str, dicom, study: str | None, paths: list[Path]) -> None:
    """STOW-RS the DICOM outputs of the studies just read (with --dicomweb: of --study)."""
    from pneumoseg.data.dicom import read_header
    from pneumoseg.errors import DicomReadError
    from pneumoseg.infer.dicomweb import store_study_results

    studies = {study} if study else set()
    for path in paths if not study else ():
        try:
            studies.add(str(read_header(path).get("StudyInstanceUID", "")))
        except DicomReadError:  # listed in errors.csv already
            pass
    typer.echo(f"stored {store_study_results(url, dicom, studies)} DICOM objects at {url}")


def _build_pipeline(backend: str, cls: Path | None, seg: Path | None, onnx_dir: Path | None, *, seg_only: bool,
                    checkpoint: str, tta: bool, device: str):
    """The prediction pipeline: --backend torch (run folders), onnx or openvino (an `export-onnx` folder);
    ``device`` is already resolved for torch (:func:`device_name`)."""
    if backend in ("onnx", "openvino"):
        if onnx_dir is None:
            raise PneumosegError(f"--backend {backend} needs --onnx DIR (a folder written by `pneumoseg export-onnx`)")
        if cls is not None or seg is not None:
            raise PneumosegError("--cls/--seg are for --backend torch; the --onnx folder holds both models")
        from pneumoseg.infer.onnx_backend import build_onnx_pipeline, onnx_providers

        if backend == "openvino":
            if device.startswith("cuda"):
                raise PneumosegError("--backend openvino runs on the CPU: use --device cpu, or --backend onnx/torch on a GPU")
            return build_onnx_pipeline(onnx_dir, seg_only=seg_only, tta=tta, runtime="openvino")
        return build_onnx_pipeline(onnx_dir, seg_only=seg_only, tta=tta, providers=onnx_providers(device))
    if backend != "torch":
        raise PneumosegError(f"--backend must be torch, onnx or openvino, not {backend!r}")
    if onnx_dir is not None:
        raise PneumosegError("--onnx DIR needs --backend onnx or openvino")
    if seg is None:
        raise PneumosegError("give --seg RUN (or --backend onnx --onnx DIR)")
    if not seg_only and cls is None:
        raise PneumosegError("give --cls RUN, or --seg-only to segment without the classifier gate")
    from pneumoseg.infer.pipeline import build_torch_pipeline

    return build_torch_pipeline(None if seg_only else cls, seg, seg_checkpoint=checkpoint, tta=tta, device=device)
