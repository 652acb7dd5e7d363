"""What every command module shares: the Typer app, option types and offline defaults."""

from __future__ import annotations

import os

USER_CHOSE_OFFLINE = "HF_HUB_OFFLINE" in os.environ
"""Whether the user set HF_HUB_OFFLINE; if not, the CLI is offline except where weights are asked for."""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402  (after the environment: the libraries read it on import)
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402

app = typer.Typer(
    name="pneumoseg",
    help="Find and outline pneumothorax on chest X-rays (SIIM-ACR two-stage recipe).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def allow_weight_downloads() -> None:
    """Let the libraries download weights, unless the user set HF_HUB_OFFLINE themselves."""
    if not USER_CHOSE_OFFLINE:
        from huggingface_hub import constants

        os.environ["HF_HUB_OFFLINE"] = "0"
        constants.HF_HUB_OFFLINE = False



ImagesOpt = Annotated[Path, typer.Option(help="Folder searched recursively for *.dcm (e.g. dicom-images-train).")]
LabelsOpt = Annotated[Path, typer.Option(help="SIIM label CSV (train-rle.csv).")]
ConfigOpt = Annotated[str, typer.Option("--config", help="Preset name (demo, siim) or a YAML file.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field, e.g. --set segmenter.epochs=3 (repeatable).")]
OutOpt = Annotated[Path, typer.Option(help="Run folder for checkpoints, metrics.csv, curves.png and config.yaml.")]
FoldOpt = Annotated[int, typer.Option(help="Which fold of splits.json to train (k-fold: data.n_folds).")]
PretrainedOpt = Annotated[Optional[Path], typer.Option(help="Local weight file (.safetensors/.pth, timm/smp state dict or a pneumoseg checkpoint), or 'imagenet': the recipe's ImageNet weights through timm/smp's own cache, downloaded when there is internet and HF_HUB_OFFLINE is not set (`pneumoseg weights fetch` saves them as files). Without it training starts from scratch.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the run folder's last saved epoch.")]
SplitsOpt = Annotated[Optional[Path], typer.Option(help="splits.json to reuse or create (default: splits.json in the run folder; give the second stage the same file).")]
ClsRunOpt = Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`).")]
FoldEvalOpt = Annotated[int, typer.Option(help="Fold of splits.json whose validation images are used.")]
SplitsEvalOpt = Annotated[Optional[Path], typer.Option(help="splits.json (default: the one the segmenter was trained with).")]
