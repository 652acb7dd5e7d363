"""``pneumoseg cv train``: one stage on every fold of one stratified k-fold split.

Folds already finished (``fold-K.done.json``) are skipped, so a killed run, started again,
trains only what is missing; ``resume`` continues the interrupted fold from its last epoch.
With ``parallel`` > 1 the folds run as separate ``pneumoseg train`` processes, N at a time,
each logging to ``fold-K.log`` (on a machine with N GPUs, one per GPU through
``CUDA_VISIBLE_DEVICES``). DDP within a fold stays available: run ``pneumoseg train ... --fold
K --splits CV_DIR/splits.json --out CV_DIR/fold-K`` under torchrun and the fold counts as done
once ``cv train`` is run again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from pneumoseg.config import Config, config_to_yaml, load_config
from pneumoseg.data.split_samples import SPLITS_FILE, load_split
from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_text, sha256_of
from pneumoseg.runs.checkpoint import read_metadata
from pneumoseg.runs.cv import (CvManifest, FoldDone, fold_done, fold_run, is_cv_folder, mark_fold_done, read_cv,
                               write_cv)
from pneumoseg.runs.trained import checkpoint_path
from pneumoseg.train.stages import train_classifier, train_segmenter

STAGES = {"cls": "classifier", "seg": "segmenter"}


@dataclass
class CvPlan:
    cv_dir: Path
    kind: str
    config: Config
    splits: Path
    todo: list[int]
    skipped: list[int]


def _config_path(cv_dir: Path) -> Path:
    return cv_dir / "config.yaml"


def prepare_cv(kind: str, images: Path, labels: Path, config: Config, cv_dir: Path, n_folds: int) -> CvPlan:
    """Write (or check) the CV folder's config, split file and manifest; which folds remain."""
    cv_dir = Path(cv_dir)
    config = config.model_copy(update={"data": config.data.model_copy(update={"n_folds": n_folds})})
    wanted = config_to_yaml(config)
    if is_cv_folder(cv_dir):
        manifest = read_cv(cv_dir)
        if manifest.stage != STAGES[kind] or manifest.n_folds != n_folds:
            raise PneumosegError(f"{cv_dir} holds a {manifest.n_folds}-fold {manifest.stage} CV, not a {n_folds}-fold "
                                 f"{STAGES[kind]} one; use another --out")
        saved = yaml.safe_load(_config_path(cv_dir).read_text())
        if saved != yaml.safe_load(wanted):
            changed = sorted(f"{section}.{key}" for section, values in yaml.safe_load(wanted).items()
                             if isinstance(values, dict) for key in values
                             if saved.get(section, {}).get(key) != values[key])
            raise PneumosegError(f"{cv_dir} was trained with other settings ({', '.join(changed[:3]) or 'config'}); "
                                 "give the same --config/--set, or another --out")
    cv_dir.mkdir(parents=True, exist_ok=True)
    splits = cv_dir / SPLITS_FILE
    load_split(images, labels, config.data, splits, create=True)  # creates it once; validates the images and labels
    if not is_cv_folder(cv_dir):
        atomic_write_text(_config_path(cv_dir), wanted)
        write_cv(cv_dir, CvManifest(stage=STAGES[kind], n_folds=n_folds, splits_sha256=sha256_of(splits)))
    elif read_cv(cv_dir).splits_sha256 != sha256_of(splits):
        raise PneumosegError(f"{splits} changed since {cv_dir} was started; its folds no longer match it")
    done = [k for k in range(n_folds) if fold_done(cv_dir, k) is not None]
    return CvPlan(cv_dir, kind, config, splits, [k for k in range(n_folds) if k not in done], done)


def fold_pretrained(fold: int, pretrained: Path | None, pretrained_cv: Path | None) -> Path | None:
    """One start for every fold (``pretrained``), or fold K of another CV (``pretrained_cv``):
    the demo's classifier starts from the segmenter trained on the same fold, never on images
    that are this fold's validation."""
    if pretrained_cv is None:
        return pretrained
    if pretrained is not None:
        raise PneumosegError("give --pretrained FILE or --pretrained-cv CV_DIR, not both")
    source = fold_run(pretrained_cv, fold)
    if fold_done(pretrained_cv, fold) is None:
        raise PneumosegError(f"{pretrained_cv}: fold {fold} is not trained; it is this fold's starting point")
    return checkpoint_path(source, "auto")


def _record(plan: CvPlan, fold: int, seconds: float) -> FoldDone:
    meta = read_metadata(checkpoint_path(fold_run(plan.cv_dir, fold), "best")) or {}
    done = FoldDone(fold=fold, seconds=round(seconds, 1), best={"epoch": meta.get("epoch"), **meta.get("metrics", {})})
    mark_fold_done(plan.cv_dir, done)
    return done


def _train_in_process(plan: CvPlan, fold: int, images: Path, labels: Path, pretrained: Path | None,
                      resume: bool, progress: bool) -> None:
    train = train_classifier if plan.kind == "cls" else train_segmenter
    train(images, labels, plan.config, fold_run(plan.cv_dir, fold), fold=fold, pretrained=pretrained, resume=resume,
          splits_path=plan.splits, progress=progress)


def _fold_command(plan: CvPlan, fold: int, images: Path, labels: Path, pretrained: Path | None,
                  resume: bool) -> list[str]:
    return [sys.executable, "-m", "pneumoseg.cli", "train", plan.kind, "--images", str(images), "--labels", str(labels),
            "--out", str(fold_run(plan.cv_dir, fold)), "--fold", str(fold), "--splits", str(plan.splits),
            "--config", str(_config_path(plan.cv_dir)), *(["--pretrained", str(pretrained)] if pretrained else []),
            *(["--resume"] if resume else [])]


def _run_parallel(plan: CvPlan, parallel: int, command: Callable[[int], list[str]],
                  say: Callable[[str], None]) -> None:
    """Folds as processes, ``parallel`` at a time; a failed fold stops the rest from starting."""
    gpus = torch.cuda.device_count()
    free, waiting, running = list(range(parallel)), list(plan.todo), {}
    failed: list[int] = []
    while running or (waiting and not failed):
        while free and waiting and not failed:
            slot, fold = free.pop(0), waiting.pop(0)
            env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else {})}
            log = open(plan.cv_dir / f"fold-{fold}.log", "w")
            running[fold] = (subprocess.Popen(command(fold), stdout=log, stderr=subprocess.STDOUT, env=env), slot, log,
                             time.perf_counter())
            say(f"fold {fold}: started (log {log.name})")
        for fold, (process, slot, log, start) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[fold]
            free.append(slot)
            if process.returncode == 0:
                _record(plan, fold, time.perf_counter() - start)
                say(f"fold {fold}: done")
            else:
                failed.append(fold)
                say(f"fold {fold}: failed (exit {process.returncode}); see {log.name}")
        time.sleep(0.5)
    if failed:
        raise PneumosegError(f"{plan.cv_dir}: fold(s) {', '.join(map(str, failed))} failed; see their fold-K.log, fix, "
                             "and run again (finished folds are kept)")


def train_cv(kind: str, images: Path, labels: Path, config: Config | str, cv_dir: Path, *, n_folds: int,
             pretrained: Path | None = None, pretrained_cv: Path | None = None, resume: bool = False,
             parallel: int = 1, progress: bool = True, say: Callable[[str], None] = tqdm.write) -> CvPlan:
    """Train every fold not yet finished; the plan (what was skipped, what was trained)."""
    if kind not in STAGES:
        raise PneumosegError(f"cv train: the stage is cls or seg, not {kind!r}")
    config = load_config(config) if isinstance(config, str) else config
    plan = prepare_cv(kind, images, labels, config, cv_dir, n_folds)
    if plan.skipped:
        say(f"folds already trained, kept: {', '.join(map(str, plan.skipped))}")
    starts = {k: fold_pretrained(k, pretrained, pretrained_cv) for k in plan.todo}
    if parallel > 1 and len(plan.todo) > 1:
        _run_parallel(plan, parallel, lambda k: _fold_command(plan, k, images, labels, starts[k], resume), say)
        return plan
    for fold in plan.todo:
        say(f"fold {fold} of {n_folds}")
        start = time.perf_counter()
        _train_in_process(plan, fold, images, labels, starts[fold], resume, progress)
        _record(plan, fold, time.perf_counter() - start)
    return plan
