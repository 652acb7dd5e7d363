"""Commands that produce evidence: the whole demo, the ablation report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import ClsRunOpt, ConfigOpt, FoldEvalOpt, ImagesOpt, LabelsOpt, SetOpt, SplitsEvalOpt, app
from pneumoseg.cli.bundle import bundle_runs
from pneumoseg.cli.options import at_least, device_name


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the synthetic data, runs, predictions and report.")] = Path("demo-output"),
    n_train: Annotated[int, typer.Option(help="Synthetic training images.")] = 700,
    n_test: Annotated[int, typer.Option(help="Synthetic held-out test images.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for the dataset.")] = 0,
    config: ConfigOpt = "demo",
    set_: SetOpt = None,
    folds: Annotated[Optional[int], typer.Option(help="The winners' workflow instead: both stages on K folds, post-processing tuned out of fold, the fold ensemble on the test split beside each fold alone (OUT/cv-summary.md). About K times the training time: 3 folds took 49 min on 2 cores (docs/experiments.md, E8).")] = None,
) -> None:
    """The whole job on synthetic data: synth, train both stages, tune (two-stage and segmentation
    alone), predict, evaluate, report on the held-out test; writes OUT/summary.md and summary.json.

    Steps already finished in OUT (data, training, CV folds) are skipped when run again."""
    from pneumoseg.config import load_config
    from pneumoseg.demo import run_cv_demo, run_demo

    if folds is not None:
        at_least("--folds", folds, 2)
        result = run_cv_demo(out, n_folds=folds, n_train=n_train, n_test=n_test, seed=seed,
                             config=load_config(config, set_ or []))
        typer.echo(result.render())
        return

    result = run_demo(out, n_train=n_train, n_test=n_test, seed=seed, config=load_config(config, set_ or []),
                      command=shlex.join(["pneumoseg", *sys.argv[1:]]))
    typer.echo(result.render())


@app.command()
def report(
    images: ImagesOpt,
    labels: LabelsOpt,
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the PNG plots (created).")],
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`).")] = None,
    cls: ClsRunOpt = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="A model bundle (from `pneumoseg export-model`), instead of --cls/--seg; give --splits too, the bundle records the split's fingerprint only.")] = None,
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

    with bundle_runs(model, cls, seg, both=True) as (cls, seg):
        result = build_report(cls, seg, images, labels, out, test_images=test_images, test_labels=test_labels,
                              splits_path=splits, fold=fold, device=device_name(device), tta=tta)
    typer.echo(result.render())
    typer.echo(f"report: {result.markdown_path}")
