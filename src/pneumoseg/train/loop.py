"""The training loop both stages share, readable top to bottom.

Per epoch: (un)freeze the encoder, train with Adam and a per-step cosine schedule with warm
restarts, fold the weights into the SWA average inside the SWA window, validate, keep the
best checkpoint by the stage's metric, and save the full training state for ``--resume``.
After the last epoch the SWA model gets fresh BatchNorm statistics, is validated and saved.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from torch.optim.swa_utils import AveragedModel, update_bn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from pneumoseg.config import Config, StageConfig
from pneumoseg.data.preprocess import IMAGENET, Normalisation
from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_write_text
from pneumoseg.runtime import use_autocast
from pneumoseg.train import distributed
from pneumoseg.runs.checkpoint import flatten_optimizer, load_tensors, save_model, save_tensors, unflatten_optimizer
from pneumoseg.runs.run_info import write_run_config

STATE_FILE = "last-state.safetensors"


class Meter(Protocol):
    def update(self, logits: torch.Tensor, batch: dict[str, Any]) -> None: ...
    def aggregate(self) -> dict[str, float]: ...


@dataclass
class Stage:
    """What differs between the classifier and the segmenter; the loop does the rest."""

    kind: str
    model: nn.Module
    cfg: StageConfig
    loss_fn: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]
    new_meter: Callable[[], Meter]
    select_metric: str
    frozen_epochs: int = 0
    set_frozen: Callable[[nn.Module, bool], None] | None = None
    swa_window: tuple[int, int] | None = None
    normalisation: Normalisation = IMAGENET
    """The encoder's input normalisation, saved in every checkpoint (:mod:`pneumoseg.models.normalisation`)."""


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float = -math.inf

    def row(self, epoch: int | str) -> dict[str, Any]:
        return next(r for r in self.history if r["epoch"] == epoch)


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, seed: int, workers: int,
                info: distributed.DistInfo) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): the sampler is re-seeded every epoch."""
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=train, seed=seed,
                                 drop_last=False)
    drop_last = train and len(dataset) >= 2 * batch_size * info.world_size
    # Training workers are not persistent: a persistent worker keeps the dataset copy it got at
    # the first epoch, so ``set_epoch`` would never reach it and every epoch would repeat the
    # first epoch's augmentation.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      persistent_workers=workers > 0 and not train, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed))


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a loader worker from torch's per-worker seed (itself drawn
    from the loader's seeded generator), so anything a transform draws outside its own seeded
    RNG repeats too."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, stage: Stage, device: torch.device, *, amp: bool,
             channels_last: bool, progress: bool) -> dict[str, float]:
    model.eval()
    meter, total, count = stage.new_meter(), 0.0, 0
    for batch in tqdm(loader, desc="validate", leave=False, disable=not progress, unit="batch"):
        batch = _to_device(batch, device, channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch["image"])
        logits = logits.float()
        total += stage.loss_fn(logits, batch).item() * len(logits)
        count += len(logits)
        meter.update(logits, batch)
    return {"val_loss": total / max(count, 1), **meter.aggregate()}


class Trainer:
    """Holds the model, optimizer, scheduler and SWA average of one training run."""

    def __init__(self, stage: Stage, train_set: Dataset, val_set: Dataset, config: Config, run_dir: Path,
                 *, progress: bool = True):
        self.stage, self.config, self.run_dir = stage, config, Path(run_dir)
        self.info, self.device = distributed.setup(config.runtime.device)
        self.amp = use_autocast(config.runtime, self.device)
        self.channels_last = config.runtime.channels_last
        self.progress = progress and self.info.is_main
        cfg = stage.cfg
        self.model = stage.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        workers = config.data.num_workers
        self.train_loader = make_loader(train_set, cfg.batch_size, train=True, seed=config.seed, workers=workers,
                                        info=self.info)
        self.val_loader = make_loader(val_set, cfg.batch_size, train=False, seed=config.seed, workers=workers,
                                      info=distributed.DistInfo())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_cycle = max(1, (cfg.cycle_epochs or cfg.epochs) * len(self.train_loader))
        self.scheduler = CosineAnnealingWarmRestarts(self.optimizer, T_0=steps_per_cycle, eta_min=cfg.lr_min)
        self.swa_model = AveragedModel(self.model) if stage.swa_window else None
        self.result = FitResult(self.run_dir)
        self.start_epoch = 1
        self._wrapped: nn.Module | None = None
        self._wrapped_frozen: bool | None = None

    # -- state -----------------------------------------------------------------------------
    def save_state(self, epoch: int) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_plain = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":  # dropout on the GPU draws from the CUDA generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta: dict[str, Any] = {
            "kind": self.stage.kind, "epoch": epoch, "optimizer": optim_plain,
            "scheduler": self.scheduler.state_dict(), "history": self.result.history,
            "best_epoch": self.result.best_epoch, "best_metric": self.result.best_metric,
            "config": self.config.model_dump(mode="json"),
        }
        if self.swa_model is not None:
            tensors.update({f"swa.{k}": v for k, v in self.swa_model.state_dict().items()})
        save_tensors(self.run_dir / STATE_FILE, tensors, meta)

    def load_state(self) -> bool:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return False
        tensors, meta = load_tensors(path)
        self._check_resumable(path, meta)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        self.scheduler.load_state_dict(meta["scheduler"])
        if self.swa_model is not None:
            self.swa_model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("swa.")})
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.result.history = meta["history"]
        self.result.best_epoch = meta["best_epoch"]
        self.result.best_metric = meta["best_metric"] if meta["best_metric"] is not None else -math.inf
        self.start_epoch = meta["epoch"] + 1
        return True

    def _check_resumable(self, path: Path, meta: dict[str, Any]) -> None:
        """Refuse a state saved by the other stage or under other training settings: the
        scheduler, SWA window and frozen epochs would silently no longer match the config."""
        kind = self.stage.kind
        if meta.get("kind") != kind:
            raise PneumosegError(f"{path}: saved by the {meta.get('kind')} stage, cannot resume the {kind} from it")
        saved, current = meta.get("config") or {}, self.config.model_dump(mode="json")
        changed = ["seed"] if saved.get("seed") != current["seed"] else []
        saved_stage = saved.get(kind) or {}
        changed += [f"{kind}.{k}" for k, v in current[kind].items() if saved_stage.get(k) != v]
        if changed:
            raise PneumosegError(f"{path}: cannot resume with changed training settings ({', '.join(changed)}); "
                                 f"resume with the run's own config, or train into a new --out folder")

    def _checkpoint_meta(self, epoch: int | str, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"kind": self.stage.kind, "epoch": epoch, "metrics": metrics, "config": self.config.model_dump(mode="json"),
                "normalisation": self.stage.normalisation.to_json()}

    # -- training --------------------------------------------------------------------------
    def _train_model(self, frozen: bool) -> nn.Module:
        """The module to call: DDP-wrapped under torchrun, re-wrapped when the frozen set changes."""
        if self.stage.set_frozen is not None:
            self.stage.set_frozen(self.model, frozen)
        if not self.info.enabled:
            return self.model
        if self._wrapped is None or self._wrapped_frozen != frozen:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._wrapped, self._wrapped_frozen = DistributedDataParallel(self.model, device_ids=ids), frozen
        return self._wrapped

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training data; returns the mean loss and the last learning rate used."""
        cfg = self.stage.cfg
        model = self._train_model(frozen=epoch <= self.stage.frozen_epochs)
        model.train()
        _set_epoch(self.train_loader, epoch)
        bar = tqdm(self.train_loader, desc=f"{self.stage.kind} epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not self.progress, leave=False)
        total, count, lr = 0.0, 0, self.scheduler.get_last_lr()[0]
        for batch in bar:
            batch = _to_device(batch, self.device, self.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = model(batch["image"])
            loss = self.stage.loss_fn(logits.float(), batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(logits)
            count += len(logits)
            bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{lr:.2e}")
        return total / max(count, 1), lr

    def _validate(self, model: nn.Module) -> dict[str, float]:
        metrics = None
        if self.info.is_main:
            metrics = validate(model, self.val_loader, self.stage, self.device, amp=self.amp,
                               channels_last=self.channels_last, progress=self.progress)
        return distributed.broadcast_object(self.info, metrics)

    def _log(self, row: dict[str, Any], note: str = "") -> None:
        if not self.info.is_main:
            return
        shown = " ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k not in {"lr", "seconds"})
        tqdm.write(f"{self.stage.kind} epoch {row['epoch']}: {shown} lr {row.get('lr', 0):.2e} "
                   f"{row.get('seconds', 0):.1f}s{note}")

    def in_swa_window(self, epoch: int) -> bool:
        window = self.stage.swa_window
        return window is not None and window[0] <= epoch <= window[1]

    def run_epoch(self, epoch: int) -> None:
        started = time.perf_counter()
        train_loss, lr = self.train_epoch(epoch)
        if self.swa_model is not None and self.in_swa_window(epoch):
            self.swa_model.update_parameters(self.model)
        metrics = self._validate(self.model)
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, **metrics,
               "seconds": time.perf_counter() - started}
        self.result.history.append(row)
        score = metrics.get(self.stage.select_metric, math.nan)
        improved = not math.isnan(score) and score > self.result.best_metric
        if self.info.is_main:
            if improved:
                save_model(self.run_dir / "best.safetensors", self.model, self._checkpoint_meta(epoch, metrics))
            note = "  (best)" if improved else ""
            note += "  (SWA +1)" if self.in_swa_window(epoch) and self.swa_model is not None else ""
            self._log(row, note)
        if improved:
            self.result.best_epoch, self.result.best_metric = epoch, score
        if self.info.is_main:
            self.save_state(epoch)
            write_metrics_csv(self.run_dir / "metrics.csv", self.result.history)
        distributed.barrier(self.info)

    def finish_swa(self) -> None:
        """Recompute BatchNorm statistics of the averaged weights, validate and save them.

        Rank 0 makes one pass over *every* training image with a plain single-process sampler
        (under DDP its own train loader holds only its share), in the order and augmentation a
        one-process run would use; without gradients (``update_bn`` runs under ``no_grad``)."""
        if self.swa_model is None or int(self.swa_model.n_averaged) == 0 or not self.info.is_main:
            return
        bn_loader = make_loader(self.train_loader.dataset, self.stage.cfg.batch_size, train=True, seed=self.config.seed,
                                workers=self.train_loader.num_workers, info=distributed.DistInfo())
        _set_epoch(bn_loader, self.stage.cfg.epochs + 1)
        self.swa_model.train()
        seen = [0]

        def images():
            for batch in bn_loader:
                seen[0] += len(batch["image"])
                yield batch["image"]

        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            update_bn(images(), self.swa_model, device=self.device)
        if self.progress:
            tqdm.write(f"SWA BatchNorm statistics: one pass over {seen[0]} training images on rank 0")
        swa_net = self.swa_model.module
        metrics = validate(swa_net, self.val_loader, self.stage, self.device, amp=self.amp,
                           channels_last=self.channels_last, progress=self.progress)
        row = {"epoch": "swa", "n_averaged": int(self.swa_model.n_averaged), **metrics}
        self.result.history = [r for r in self.result.history if r["epoch"] != "swa"] + [row]
        save_model(self.run_dir / "swa.safetensors", swa_net, self._checkpoint_meta("swa", metrics))
        self._log(row)
        write_metrics_csv(self.run_dir / "metrics.csv", self.result.history)

    def fit(self, *, resume: bool = False) -> FitResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:  # before config.yaml is rewritten: a refused resume leaves the run folder as it was
            resumed = self.load_state()
            if self.info.is_main:
                tqdm.write(f"resuming {self.stage.kind} after epoch {self.start_epoch - 1}" if resumed
                           else f"no saved state in {self.run_dir}; starting from epoch 1")
        if self.info.is_main:
            write_run_config(self.run_dir, self.config)
        _set_epoch(self.train_loader, self.start_epoch)
        for epoch in range(self.start_epoch, self.stage.cfg.epochs + 1):
            self.run_epoch(epoch)
        _set_epoch(self.train_loader, self.stage.cfg.epochs + 1)
        self.finish_swa()
        if self.info.is_main:
            plot_curves(self.result.history, self.stage.select_metric, self.run_dir / "curves.png")
        distributed.barrier(self.info)
        distributed.shutdown(self.info)
        return self.result


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def plot_curves(history: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Loss, validation metric and learning rate per epoch, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pneumoseg.io import atomic_save

    epochs = [r for r in history if isinstance(r["epoch"], int)]
    xs = [r["epoch"] for r in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(xs, [r["train_loss"] for r in epochs], "o-", label="train")
    axes[0].plot(xs, [r["val_loss"] for r in epochs], "o-", label="validation")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(xs, [r.get(metric, math.nan) for r in epochs], "o-", color="tab:green", label=metric)
    swa = next((r for r in history if r["epoch"] == "swa"), None)
    if swa is not None and metric in swa:
        axes[1].axhline(swa[metric], color="tab:purple", ls="--", label=f"SWA {swa[metric]:.3f}")
    axes[1].set_title(f"validation {metric}")
    axes[1].legend()
    axes[2].plot(xs, [r["lr"] for r in epochs], "o-", color="tab:orange")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate (last step of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
