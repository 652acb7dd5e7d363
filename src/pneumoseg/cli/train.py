"""Commands that make models: fetch pretrained weights, train either stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pneumoseg.cli.base import (ConfigOpt, FoldOpt, ImagesOpt, LabelsOpt, OutOpt, PretrainedOpt, ResumeOpt, SetOpt,
                                 SplitsOpt, allow_weight_downloads, app)


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

    allow_weight_downloads()
    for path in fetch_weights(load_config(config), out, config):
        typer.echo(f"wrote {path}")


train_app = typer.Typer(help="Train the classifier (cls) or the segmenter (seg).", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _train(kind: str, images: Path, labels: Path, config: str, overrides: list[str] | None, out: Path, fold: int,
           pretrained: Path | None, resume: bool, splits: Path | None) -> None:
    from pneumoseg.config import load_config
    from pneumoseg.train.distributed import env_info
    from pneumoseg.train.stages import train_classifier, train_segmenter

    cfg = load_config(config, overrides or [])
    if pretrained is not None and str(pretrained) == "imagenet":
        allow_weight_downloads()
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
