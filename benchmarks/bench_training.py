"""Training: step time and images/s per model at 256 and 512, and the share of a step spent waiting for data."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.bench_loading import samples
from benchmarks.timing import Timing, row
from pneumoseg.config import load_config
from pneumoseg.data.augment import build_train_transform
from pneumoseg.data.cache import ImageCache
from pneumoseg.data.datasets import XrayDataset
from pneumoseg.models import build_classifier, build_segmenter
from pneumoseg.train.losses import DiceBCELoss


def _steps(model: nn.Module, loss_fn, loader: DataLoader, n_steps: int, warmup: int, kind: str):
    """Time ``n_steps`` optimiser steps after ``warmup``; per step: total and time blocked on the loader."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    totals, waits = [], []
    it = iter(loader)
    for step in range(warmup + n_steps):
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        got = time.perf_counter()
        logits = model(batch["image"])
        target = batch["label"] if kind == "classifier" else batch["mask"]
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        end = time.perf_counter()
        if step >= warmup:
            totals.append(end - start)
            waits.append(got - start)
    return Timing(totals, warmup), sum(waits) / sum(totals)


def run(ctx) -> dict[str, Any]:
    cfg = load_config(ctx.config_name)
    sizes = [64] if ctx.quick else [256, 512]
    n_steps, warmup, batch = (1, 1, 2) if ctx.quick else (3, 1, 2)
    rows = []
    for kind in ("classifier", "segmenter"):
        stage = cfg.classifier if kind == "classifier" else cfg.segmenter
        torch.manual_seed(0)
        model = build_classifier(stage) if kind == "classifier" else build_segmenter(stage)
        loss_fn = nn.BCEWithLogitsLoss() if kind == "classifier" else DiceBCELoss()
        for size in sizes:
            dataset = XrayDataset(samples(ctx.sample_dir), ImageCache(size, ctx.tmp / "cache"),
                                  build_train_transform(stage.augment.model_copy(update={"crop": None})), with_mask=kind == "segmenter")
            for i in range(len(dataset)):  # fill the cache: training reads it from the second epoch on
                dataset[i]
            loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
            t, wait = _steps(model, loss_fn, loader, n_steps, warmup, kind)
            rows.append(row(f"train step {kind} {size}² batch {batch} (0 workers, cached)", t, unit="s/step",
                            images_per_s=round(batch / t.median, 2), data_wait_share=round(wait, 4)))
    notes = ["Adam step in float32 and NCHW on the CPU (the trainer itself adds bf16 autocast and channels_last where "
             "the CPU has native bf16: 3.8x per step at 256², docs/experiments.md); no training crop; "
             "batch 2, the loader in the main process reading the preprocessing cache with the recipe's "
             "augmentation, so the data-wait share is the whole data cost of a step."]
    return {"rows": rows, "targets": [], "notes": notes}
