"""The GPU benchmark (``python -m benchmarks --gpu``): what the full recipe costs on one GPU.

- Training step images/s of both recipe models (Xception classifier, FPN-InceptionResNetV2) at
  512² and 1024², bf16 autocast and channels_last as the trainer runs them, with and without
  ``torch.compile``.
- The data loader's images/s (preprocessing cache + the recipe's augmentation) with N workers.
- Inference images/s of each model at 1024².
- A projected SIIM epoch (12,047 classifier images; the segmenter on the 2,669 positives) and
  the 20-epoch recipe, from the measured rates.

Runs in a few minutes on one GPU. Without a GPU, ``--quick`` runs the same code on the CPU
with the demo preset's small models at 64² (its numbers mean nothing).
"""

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

SIIM_IMAGES, SIIM_POSITIVES, RECIPE_EPOCHS = 12_047, 2_669, 20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device, n: int, warmup: int) -> Timing:
    times = []
    for i in range(warmup + n):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return Timing(times, warmup)


def _model(kind: str, cfg) -> nn.Module:
    torch.manual_seed(0)
    return build_classifier(cfg.classifier) if kind == "classifier" else build_segmenter(cfg.segmenter)


def _train_step(model: nn.Module, kind: str, batch: int, size: int, device: torch.device):
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch, 1, device=device) if kind == "classifier"
              else (torch.rand(batch, 1, size, size, device=device) > 0.9).float())
    loss_fn = nn.BCEWithLogitsLoss() if kind == "classifier" else DiceBCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _training_rows(cfg, device, sizes, batch, n, warmup, compile_modes, compile_backend: str = "inductor"
                   ) -> tuple[list, dict, list[str]]:
    rows, rates, notes = [], {}, []
    for kind in ("classifier", "segmenter"):
        for compiled in compile_modes:
            model = _model(kind, cfg).to(device, memory_format=torch.channels_last).train()
            if compiled:
                try:
                    model = torch.compile(model, backend=compile_backend)
                except Exception as exc:  # no compiler toolchain here: say so, keep measuring
                    notes.append(f"torch.compile unavailable for the {kind}: {type(exc).__name__}")
                    continue
            for size in sizes:
                try:
                    t = _timed(_train_step(model, kind, batch, size, device), device, n, warmup)
                except Exception as exc:  # compile errors surface on the first call
                    notes.append(f"{kind} {size}² {'compiled ' if compiled else ''}failed: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
                    continue
                rate = batch / t.median
                rates[(kind, size, compiled)] = rate
                rows.append(row(f"train step {kind} {size}² batch {batch} bf16 channels_last"
                                f"{' torch.compile' if compiled else ''}", t, unit="s/step",
                                images_per_s=round(rate, 2)))
            del model
    return rows, rates, notes


def _loader_rows(ctx, cfg, size: int, workers_list: list[int], batch: int) -> list:
    rows = []
    dataset = XrayDataset(samples(ctx.sample_dir), ImageCache(size, ctx.tmp / "cache"),
                          build_train_transform(cfg.segmenter.augment.model_copy(update={"crop": None})), with_mask=True)
    for i in range(len(dataset)):  # fill the cache, as the first epoch does
        dataset[i]
    for workers in workers_list:
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False,
                            persistent_workers=workers > 0)
        iterator_passes = 3

        def one_pass() -> None:
            for _ in loader:
                pass

        t = _timed(one_pass, torch.device("cpu"), iterator_passes, 1)
        rows.append(row(f"data loader {size}² {workers} workers (cache + augmentation)", t, unit="s/pass",
                        images_per_s=round(len(dataset) / t.median, 1)))
    return rows


def _inference_rows(cfg, device, size: int, batch: int, n: int) -> tuple[list, dict]:
    rows, rates = [], {}
    for kind in ("classifier", "segmenter"):
        model = _model(kind, cfg).to(device, memory_format=torch.channels_last).eval()
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

        @torch.inference_mode()
        def forward() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                model(x)

        t = _timed(forward, device, n, 1)
        rates[kind] = batch / t.median
        rows.append(row(f"inference {kind} {size}² batch {batch} bf16", t, unit="s/batch",
                        images_per_s=round(rates[kind], 2)))
    return rows, rates


def projection(rates: dict, size: int, compiled: bool) -> dict[str, float] | None:
    """Minutes per SIIM epoch (classifier on every image, segmenter on the positives) and for the recipe."""
    cls, seg = rates.get(("classifier", size, compiled)), rates.get(("segmenter", size, compiled))
    if not cls or not seg:
        return None
    epoch_min = (SIIM_IMAGES / cls + SIIM_POSITIVES / seg) / 60
    return {"epoch_min": round(epoch_min, 1), "recipe_h": round(epoch_min * RECIPE_EPOCHS / 60, 2)}


def run(ctx) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(ctx.config_name)
    if ctx.quick:
        sizes, batch, n, warmup, workers, inf_size = [64], 2, 1, 1, [0, 1], 64
    else:
        sizes, batch, n, warmup, workers, inf_size = [512, 1024], 8, 5, 2, [0, 4, 8], 1024
    # --quick traces with dynamo but skips inductor's code generation (minutes of C++ builds on a CPU)
    backend = "eager" if ctx.quick else "inductor"
    rows, rates, notes = _training_rows(cfg, device, sizes, batch, n, warmup, (False, True), backend)
    rows += _loader_rows(ctx, cfg, sizes[0], workers, batch)
    inference, _ = _inference_rows(cfg, device, inf_size, batch, n)
    rows += inference
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    notes.insert(0, f"device: {name}; models: the {cfg.name} preset; random weights (speed does not depend on "
                    f"them); torch.compile backend {backend}.")
    for size in sizes:
        for compiled in (False, True):
            p = projection(rates, size, compiled)
            if p:
                notes.append(f"projected at {size}²{' with torch.compile' if compiled else ''}: one SIIM epoch "
                             f"{p['epoch_min']} min ({SIIM_IMAGES:,} classifier + {SIIM_POSITIVES:,} segmenter "
                             f"images), the {RECIPE_EPOCHS}-epoch recipe {p['recipe_h']} h per stage pair, "
                             "validation and data loading not included")
    return {"rows": rows, "targets": [], "notes": notes, "device": name}
