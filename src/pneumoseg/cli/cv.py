"""Cross-validation: train a stage on every fold, then tune, report and predict on the folds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import ConfigOpt, ImagesOpt, LabelsOpt, PretrainedOpt, SetOpt, allow_weight_downloads, app
from pneumoseg.cli.options import at_least
from pneumoseg.errors import PneumosegError

cv_app = typer.Typer(help="K-fold cross-validation: `pneumoseg cv train seg|cls --folds K ...`, then `pneumoseg tune --cv`, "
                          "`pneumoseg cv report`, and `predict --cls CV_DIR --seg CV_DIR` (a fold ensemble).",
                     no_args_is_help=True)
app.add_typer(cv_app, name="cv")
cv_train_app = typer.Typer(help="Train one stage on every fold of a stratified k-fold split.", no_args_is_help=True)
cv_app.add_typer(cv_train_app, name="train")

CvOutOpt = Annotated[Path, typer.Option(help="CV folder: cv.json, config.yaml, splits.json and a run folder per fold (created; a rerun skips finished folds).")]
FoldsOpt = Annotated[int, typer.Option("--folds", help="Number of stratified folds.")]
CvResumeOpt = Annotated[bool, typer.Option(help="Continue an interrupted fold from its last saved epoch (finished folds are always kept).")]
ParallelOpt = Annotated[int, typer.Option(help="Train N folds at once as separate processes (one per GPU when there are GPUs; on a CPU they share its cores).")]
PretrainedCvOpt = Annotated[Optional[Path], typer.Option(help="Start fold K from fold K of this CV folder (e.g. the classifier from the segmenter CV's encoder, as the demo does), never from a model that saw fold K's validation images.")]


def cv_folders(text: str) -> tuple[Path | None, Path]:
    """``CLS_CV,SEG_CV`` or ``SEG_CV``: the CV folders, checked to be what they are said to be."""
    from pneumoseg.runs.cv import is_cv_folder, read_cv

    parts = [Path(p.strip()) for p in text.split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise PneumosegError(f"--cv {text!r}: give CLS_CV,SEG_CV (two-stage) or SEG_CV (segmentation alone)")
    for path, stage in zip(parts, ["classifier", "segmenter"][-len(parts):]):
        if not is_cv_folder(path):
            raise PneumosegError(f"{path}: not a CV folder (no cv.json); make it with `pneumoseg cv train`")
        if read_cv(path).stage != stage:
            raise PneumosegError(f"{path}: a {read_cv(path).stage} CV, expected the {stage} CV here")
    return (parts[0] if len(parts) == 2 else None), parts[-1]


def _cv_train(kind: str, images: Path, labels: Path, out: Path, folds: int, config: str, overrides: list[str] | None,
              pretrained: Path | None, pretrained_cv: Path | None, resume: bool, fold_parallel: int) -> None:
    from pneumoseg.config import load_config
    from pneumoseg.train.cv import train_cv

    at_least("--folds", folds, 2)
    at_least("--fold-parallel", fold_parallel)
    if pretrained is not None and str(pretrained) == "imagenet":
        allow_weight_downloads()
    plan = train_cv(kind, images, labels, load_config(config, overrides or []), out, n_folds=folds,
                    pretrained=pretrained, pretrained_cv=pretrained_cv, resume=resume, parallel=fold_parallel)
    trained = ", ".join(map(str, plan.todo)) or "none (all were finished)"
    typer.echo(f"done: {folds} folds in {out}; trained now: {trained}")


@cv_train_app.command("seg")
def cv_train_seg(images: ImagesOpt, labels: LabelsOpt, out: CvOutOpt, folds: FoldsOpt = 5, config: ConfigOpt = "demo",
                 set_: SetOpt = None, pretrained: PretrainedOpt = None, pretrained_cv: PretrainedCvOpt = None,
                 resume: CvResumeOpt = False, fold_parallel: ParallelOpt = 1) -> None:
    """Train the segmenter on every fold (each fold as `pneumoseg train seg --fold K`)."""
    _cv_train("seg", images, labels, out, folds, config, set_, pretrained, pretrained_cv, resume, fold_parallel)


@cv_train_app.command("cls")
def cv_train_cls(images: ImagesOpt, labels: LabelsOpt, out: CvOutOpt, folds: FoldsOpt = 5, config: ConfigOpt = "demo",
                 set_: SetOpt = None, pretrained: PretrainedOpt = None, pretrained_cv: PretrainedCvOpt = None,
                 resume: CvResumeOpt = False, fold_parallel: ParallelOpt = 1) -> None:
    """Train the classifier on every fold. The split is made from the same images and seed as
    the segmenter CV's, so both CVs share their folds (checked when they are used together)."""
    _cv_train("cls", images, labels, out, folds, config, set_, pretrained, pretrained_cv, resume, fold_parallel)


@cv_app.command("report")
def cv_report(
    cls: Annotated[Path, typer.Option("--cls", help="Classifier CV folder (from `pneumoseg cv train cls`).")],
    seg: Annotated[Path, typer.Option("--seg", help="Segmenter CV folder (from `pneumoseg cv train seg`).")],
    images: ImagesOpt,
    labels: LabelsOpt,
    out: Annotated[Path, typer.Option(help="Report folder: report.md/json (the ablation), cv.md/json (folds and ensemble), plots.")],
    test_images: Annotated[Optional[Path], typer.Option(help="Held-out test images: the ensemble's rows and each fold alone are scored there.")] = None,
    test_labels: Annotated[Optional[Path], typer.Option(help="Labels of --test-images.")] = None,
    eval_size: Annotated[Optional[int], typer.Option(help="Resolution of the out-of-fold and test maps, px (min_area is scaled from 1024²) [default: 256, or the segmenter's input size when smaller].")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """The ablation on a cross-validation: each system tuned for itself on the out-of-fold
    outputs (computed once, kept in the segmenter CV's oof/), scored on the test split as the
    fold ensemble; per-fold metrics, the spread across folds, and the ensemble against the mean
    single fold with a paired bootstrap CI (cv.md)."""
    from pneumoseg.cli.options import device_name
    from pneumoseg.evaluate.report.cv import build_cv_report, cv_markdown

    if (test_images is None) != (test_labels is None):
        raise PneumosegError("give --test-images and --test-labels together")
    if eval_size is not None:
        at_least("--eval-size", eval_size, 32)
    cls_cv, seg_cv = cv_folders(f"{cls},{seg}")
    report, summary, _ = build_cv_report(cls_cv, seg_cv, images, labels, out, test_images=test_images,
                                      test_labels=test_labels, size=eval_size, device=device_name(device))
    typer.echo(report.render())
    typer.echo(cv_markdown(summary))
    typer.echo(f"wrote {report.markdown_path}, {out / 'cv.md'}")
