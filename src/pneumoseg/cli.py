"""The ``pneumoseg`` command line: a thin layer that parses options, calls a stage function
and prints a summary. Every error caused by the input is printed on one line (no traceback)."""

from __future__ import annotations

import os

USER_CHOSE_OFFLINE = "HF_HUB_OFFLINE" in os.environ
"""Whether the user set HF_HUB_OFFLINE; if not, the CLI is offline except where weights are asked for."""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli_options import at_least, device_name, output_file, output_folder, rle_format, tta_flag
from pneumoseg.errors import PneumosegError

app = typer.Typer(
    name="pneumoseg",
    help="Find and outline pneumothorax on chest X-rays (SIIM-ACR two-stage recipe).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into (created).")],
    n: Annotated[int, typer.Option("--n", help="Number of training images.")] = 200,
    test_n: Annotated[int, typer.Option("--test-n", help="Number of held-out test images (0: none).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same dataset.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels (the SIIM release is 1024).")] = 1024,
    positive_rate: Annotated[float, typer.Option(help="Share of images with pneumothorax.")] = 0.23,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in OUT.")] = False,
) -> None:
    """Generate a synthetic dataset in the SIIM-ACR release layout (DICOM + train-rle.csv)."""
    from pneumoseg.data.synth import generate_dataset

    summary = generate_dataset(out, n, test_n=test_n, seed=seed, size=size, positive_rate=positive_rate,
                               overwrite=overwrite)
    typer.echo(summary.render())


@app.command("check-data")
def check_data(
    images: Annotated[Path, typer.Option(help="Folder searched recursively for *.dcm.")],
    labels: Annotated[Optional[Path], typer.Option(help="SIIM label CSV (train-rle.csv).")] = None,
    quick: Annotated[bool, typer.Option(help="Read headers only instead of decoding every image.")] = False,
) -> None:
    """Check a SIIM-layout dataset: counts, unmatched labels/images, duplicates, unreadable files.

    Exits with status 1 when a problem is found."""
    from pneumoseg.data.index import check_data as run_check

    report = run_check(images, labels, decode=not quick)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Submission CSV (ImageId,EncodedPixels).")],
    truth: Annotated[Path, typer.Option(help="Ground-truth label CSV.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON here.")] = None,
    per_image: Annotated[Optional[Path], typer.Option(help="Write per-image scores as CSV here.")] = None,
    size: Annotated[int, typer.Option(help="Mask side the RLE refers to.")] = 1024,
    rle: Annotated[str, typer.Option(help="RLE flavour: relative (SIIM) or standard.")] = "relative",
) -> None:
    """Score a submission with the SIIM mean Dice (1 for an image where both masks are empty).

    Truth images missing from the submission count as empty predictions and are reported."""
    from pneumoseg.evaluate.scoring import evaluate_submission, format_summary
    from pneumoseg.io import atomic_write_json, atomic_write_text

    at_least("--size", size)
    rle_format(rle)
    output_file("--json", json_out)
    output_file("--per-image", per_image)
    result = evaluate_submission(pred, truth, shape=(size, size), fmt=rle)
    for warning in result.warnings(pred):
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    summary = result.summary()
    typer.echo(format_summary(summary))
    if json_out:
        atomic_write_json(json_out, summary)
    if per_image:
        atomic_write_text(per_image, result.per_image.to_csv(index=False))


def _allow_weight_downloads() -> None:
    """Let the libraries download weights, unless the user set HF_HUB_OFFLINE themselves."""
    if not USER_CHOSE_OFFLINE:
        from huggingface_hub import constants

        os.environ["HF_HUB_OFFLINE"] = "0"
        constants.HF_HUB_OFFLINE = False


weights_app = typer.Typer(help="Pretrained weights for air-gapped machines.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch")
def weights_fetch(
    out: Annotated[Path, typer.Option(help="Folder for the weight files (created).")],
    config: Annotated[str, typer.Option("--config", help="Preset name (demo, siim) or a YAML file.")] = "siim",
) -> None:
    """Download both stages' ImageNet weights through timm/smp (filling their caches) and save
    them as files that `train --pretrained FILE` accepts: run it where there is internet, copy
    the folder to the training server."""
    from pneumoseg.config import load_config
    from pneumoseg.models.imagenet import fetch_weights

    _allow_weight_downloads()
    for path in fetch_weights(load_config(config), out, config):
        typer.echo(f"wrote {path}")


train_app = typer.Typer(help="Train the classifier (cls) or the segmenter (seg).", no_args_is_help=True)
app.add_typer(train_app, name="train")

ImagesOpt = Annotated[Path, typer.Option(help="Folder searched recursively for *.dcm (e.g. dicom-images-train).")]
LabelsOpt = Annotated[Path, typer.Option(help="SIIM label CSV (train-rle.csv).")]
ConfigOpt = Annotated[str, typer.Option("--config", help="Preset name (demo, siim) or a YAML file.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field, e.g. --set segmenter.epochs=3 (repeatable).")]
OutOpt = Annotated[Path, typer.Option(help="Run folder for checkpoints, metrics.csv, curves.png and config.yaml.")]
FoldOpt = Annotated[int, typer.Option(help="Which fold of splits.json to train (k-fold: data.n_folds).")]
PretrainedOpt = Annotated[Optional[Path], typer.Option(help="Local weight file (.safetensors/.pth, timm/smp state dict or a pneumoseg checkpoint), or 'imagenet': the recipe's ImageNet weights through timm/smp's own cache, downloaded when there is internet and HF_HUB_OFFLINE is not set (`pneumoseg weights fetch` saves them as files). Without it training starts from scratch.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the run folder's last saved epoch.")]
SplitsOpt = Annotated[Optional[Path], typer.Option(help="splits.json to reuse or create (default: splits.json in the run folder; give the second stage the same file).")]


def _train(kind: str, images: Path, labels: Path, config: str, overrides: list[str] | None, out: Path, fold: int,
           pretrained: Path | None, resume: bool, splits: Path | None) -> None:
    from pneumoseg.config import load_config
    from pneumoseg.train.distributed import env_info
    from pneumoseg.train.stages import train_classifier, train_segmenter

    cfg = load_config(config, overrides or [])
    if pretrained is not None and str(pretrained) == "imagenet":
        _allow_weight_downloads()
    train = train_classifier if kind == "cls" else train_segmenter
    result = train(images, labels, cfg, out, fold=fold, pretrained=pretrained, resume=resume, splits_path=splits)
    metric = "mcc" if kind == "cls" else "iou"
    best = f"best {metric} {result.best_metric:.4f} at epoch {result.best_epoch}" if result.best_epoch else "no best epoch"
    if env_info().is_main:  # once, not once per torchrun process
        typer.echo(f"done: {best}; checkpoints, metrics.csv and curves.png in {out}")


@train_app.command("cls")
def train_cls(images: ImagesOpt, labels: LabelsOpt, out: OutOpt, config: ConfigOpt = "demo", set_: SetOpt = None,
              fold: FoldOpt = 0, pretrained: PretrainedOpt = None, resume: ResumeOpt = False,
              splits: SplitsOpt = None) -> None:
    """Train the pneumothorax classifier (stage 1; best checkpoint by validation MCC)."""
    _train("cls", images, labels, config, set_, out, fold, pretrained, resume, splits)


@train_app.command("seg")
def train_seg(images: ImagesOpt, labels: LabelsOpt, out: OutOpt, config: ConfigOpt = "demo", set_: SetOpt = None,
              fold: FoldOpt = 0, pretrained: PretrainedOpt = None, resume: ResumeOpt = False,
              splits: SplitsOpt = None) -> None:
    """Train the segmenter (stage 2; frozen-encoder warm-up, cosine warm restarts, SWA; best by IoU)."""
    _train("seg", images, labels, config, set_, out, fold, pretrained, resume, splits)


ClsRunOpt = Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`).")]
SegRunOpt = Annotated[Path, typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`).")]


@app.command()
def predict(
    images: Annotated[list[Path], typer.Option(help="DICOM folder (searched recursively) or files; repeatable.")],
    out: Annotated[Path, typer.Option(help="Submission CSV to write (ImageId,EncodedPixels).")],
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`); --backend torch.")] = None,
    cls: ClsRunOpt = None,
    backend: Annotated[str, typer.Option(help="Run the models in torch (run folders) or onnx (an export-onnx folder).")] = "torch",
    onnx: Annotated[Optional[Path], typer.Option("--onnx", metavar="DIR", help="Folder written by `pneumoseg export-onnx` (--backend onnx).")] = None,
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
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 4,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Predict pneumothorax masks for DICOM images and write a SIIM submission CSV.

    The classifier gates; only positives are segmented; the mask is thresholded, small
    components are removed and the 1024x1024 mask is run-length encoded. Post-processing
    values come from the segmenter run's postprocess.json (written by `pneumoseg tune --cls`;
    with --seg-only: postprocess-seg-only.json, written by `pneumoseg tune` without --cls)
    unless given here. Exit status: 0 all images predicted; 1 some files could not be read (listed
    in errors.csv beside OUT; every readable image still has its row); 2 bad input (one-line error).
    A killed run rerun with the same --out resumes from OUT.partial."""
    from pneumoseg.config import updated_postprocess
    from pneumoseg.data.index import find_dicoms
    from pneumoseg.infer.predict import predict_files

    at_least("--batch-size", batch_size)
    rle_format(rle)
    output_file("--out", out)
    for option, folder in (("--overlays", overlays), ("--probs", probs), ("--dicom-seg", dicom_seg)):
        output_folder(option, folder)
    device = device_name(device) if backend == "torch" else device
    paths = [p for root in images for p in find_dicoms(root)]
    if not paths:
        raise PneumosegError(f"no .dcm files found under {', '.join(str(root) for root in images)}")
    pipeline = _build_pipeline(backend, cls, seg, onnx, seg_only=seg_only, checkpoint=checkpoint, tta=tta_flag(tta),
                               device=device)
    updates = {"rule": rule, "cls_threshold": cls_threshold, "pixel_threshold": pixel_threshold, "min_area": min_area}
    pipeline.post = updated_postprocess(pipeline.post, updates, "command line")
    summary = predict_files(pipeline, paths, out, batch_size=batch_size, rle_fmt=rle, overlays=overlays, probs=probs,
                            dicom_seg=dicom_seg)
    typer.echo(summary.render())
    if summary.errors:
        raise typer.Exit(1)


@app.command("export-onnx")
def export_onnx(
    cls: Annotated[Path, typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`; best checkpoint).")],
    seg: SegRunOpt,
    out: Annotated[Path, typer.Option(help="Folder for classifier.onnx, segmenter.onnx and onnx.json (created).")],
    checkpoint: Annotated[str, typer.Option(help="Segmenter checkpoint: auto (SWA if present), swa or best.")] = "auto",
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
) -> None:
    """Export both models to ONNX (dynamic batch, height and width) for `predict --backend onnx`.

    onnx.json beside them records each model's input size, normalisation, tensor names, opset,
    source checkpoint and the post-processing (the segmenter run's postprocess.json)."""
    from pneumoseg.export import export_onnx as run_export
    from pneumoseg.export import render_export

    if checkpoint not in {"auto", "best", "swa"}:
        raise PneumosegError(f"--checkpoint must be auto, best or swa, not {checkpoint!r}")
    manifest = run_export(cls, seg, out, seg_checkpoint=checkpoint, opset=opset)
    typer.echo(render_export(manifest, out))


FoldEvalOpt = Annotated[int, typer.Option(help="Fold of splits.json whose validation images are used.")]
SplitsEvalOpt = Annotated[Optional[Path], typer.Option(help="splits.json (default: the one the segmenter was trained with).")]


@app.command()
def tune(
    seg: SegRunOpt,
    images: ImagesOpt,
    labels: LabelsOpt,
    cls: Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder: tune the two-stage pipeline (postprocess.json). Without it: tune segmentation alone (postprocess-seg-only.json).")] = None,
    rule: Annotated[str, typer.Option(help="Rule to tune: best (compare both), threshold or triplet.")] = "best",
    checkpoint: Annotated[str, typer.Option(help="Segmenter checkpoint: auto (SWA if present), swa or best.")] = "auto",
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or hflip.")] = "none",
    fold: FoldEvalOpt = 0,
    splits: SplitsEvalOpt = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Choose the post-processing on the validation split by SIIM mean Dice, for one system.

    With --cls: classifier threshold, pixel threshold and min_area of the two-stage pipeline,
    saved as postprocess.json next to the segmenter run (used by predict). Without --cls:
    segmentation alone, saved as postprocess-seg-only.json (used by predict --seg-only)."""
    from pneumoseg.evaluate.validation import outputs_from_runs, validation_samples
    from pneumoseg.infer.tune import save_postprocess, tune_postprocess

    if rule not in {"best", "threshold", "triplet"}:
        raise PneumosegError(f"--rule must be best, threshold or triplet, not {rule!r}")
    samples = validation_samples(seg, images, labels, splits_path=splits, fold=fold, cls_run=cls)
    outputs = outputs_from_runs(cls, seg, samples, checkpoint=checkpoint, tta=tta_flag(tta), device=device_name(device),
                                desc="validation inference")
    result = tune_postprocess(outputs, rule=rule, gated=cls is not None)
    path = save_postprocess(result, seg)
    typer.echo(result.render())
    typer.echo(f"saved {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the synthetic data, runs, predictions and report.")] = Path("demo-output"),
    n_train: Annotated[int, typer.Option(help="Synthetic training images.")] = 700,
    n_test: Annotated[int, typer.Option(help="Synthetic held-out test images.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for the dataset.")] = 0,
    config: ConfigOpt = "demo",
    set_: SetOpt = None,
) -> None:
    """The whole job on synthetic data: synth, train both stages, tune (two-stage and segmentation
    alone), predict, evaluate, report on the held-out test; writes OUT/summary.md and summary.json.

    Steps already finished in OUT (data, training) are skipped when run again."""
    from pneumoseg.config import load_config
    from pneumoseg.demo import run_demo

    import shlex

    result = run_demo(out, n_train=n_train, n_test=n_test, seed=seed, config=load_config(config, set_ or []),
                      command=shlex.join(["pneumoseg", *sys.argv[1:]]))
    typer.echo(result.render())


@app.command()
def report(
    seg: SegRunOpt,
    images: ImagesOpt,
    labels: LabelsOpt,
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the PNG plots (created).")],
    cls: ClsRunOpt,
    fold: FoldEvalOpt = 0,
    splits: SplitsEvalOpt = None,
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="Also evaluate the final model with hflip TTA (one more inference pass).")] = True,
    test_images: Annotated[Optional[Path], typer.Option(help="Held-out test DICOM folder: the headline table is scored there (with --test-labels).")] = None,
    test_labels: Annotated[Optional[Path], typer.Option(help="Label CSV of --test-images.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Write the talk's ablation for these runs: all-empty, segmentation alone, two-stage, + SWA,
    + TTA, each with its own post-processing tuned on the validation split, in SIIM mean Dice
    with paired-bootstrap 95% CIs, false positives on healthy films and Dice by size. With
    --test-images/--test-labels the headline table is on that held-out set (the validation table
    stays, labelled optimistic). Also classifier and segmenter metrics beside the talk's, ROC/PR
    curves, the Dice grid and best/median/worst cases."""
    from pneumoseg.evaluate.report import build_report

    result = build_report(cls, seg, images, labels, out, test_images=test_images, test_labels=test_labels,
                          splits_path=splits, fold=fold, device=device_name(device), tta=tta)
    typer.echo(result.render())
    typer.echo(f"report: {result.markdown_path}")


def _build_pipeline(backend: str, cls: Path | None, seg: Path | None, onnx_dir: Path | None, *, seg_only: bool,
                    checkpoint: str, tta: bool, device: str):
    """The prediction pipeline: --backend torch (run folders) or onnx (an `export-onnx` folder);
    ``device`` is already resolved for torch (:func:`device_name`)."""
    if backend == "onnx":
        if onnx_dir is None:
            raise PneumosegError("--backend onnx needs --onnx DIR (a folder written by `pneumoseg export-onnx`)")
        if cls is not None or seg is not None:
            raise PneumosegError("--cls/--seg are for --backend torch; the --onnx folder holds both models")
        from pneumoseg.export import build_onnx_pipeline, onnx_providers

        return build_onnx_pipeline(onnx_dir, seg_only=seg_only, tta=tta, providers=onnx_providers(device))
    if backend != "torch":
        raise PneumosegError(f"--backend must be torch or onnx, not {backend!r}")
    if onnx_dir is not None:
        raise PneumosegError("--onnx DIR needs --backend onnx")
    if seg is None:
        raise PneumosegError("give --seg RUN (or --backend onnx --onnx DIR)")
    if not seg_only and cls is None:
        raise PneumosegError("give --cls RUN, or --seg-only to segment without the classifier gate")
    from pneumoseg.infer.pipeline import build_torch_pipeline

    return build_torch_pipeline(None if seg_only else cls, seg, seg_checkpoint=checkpoint, tta=tta, device=device)


@app.command()
def serve(
    cls: Annotated[Path, typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`).")],
    seg: SegRunOpt,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest DICOM accepted, in MB.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Open the web viewer: drop a chest X-ray DICOM on the page to see the pneumothorax
    outlined, its probability and area, and download the overlay or a DICOM SEG.

    Needs the package's `serve` extra (fastapi, uvicorn, python-multipart)."""
    try:
        from pneumoseg.serve.app import serve as run_server
    except ImportError as exc:
        raise PneumosegError(f"the web viewer needs the serve extra ({exc.name} is missing): "
                             'pip install "pneumoseg[serve]"') from None
    typer.echo(f"pneumoseg viewer: open http://{host}:{port}/ (Ctrl+C to stop)")
    run_server(cls, seg, host, port, device=device_name(device), max_upload_mb=max_upload_mb)


def main() -> None:
    """Console-script entry point: run the app, turning input errors into one-line messages."""
    try:
        app()
    except PneumosegError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # `python -m pneumoseg.cli ...`, e.g. under `torchrun -m pneumoseg.cli`
    main()
