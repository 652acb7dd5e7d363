"""The learning-rate schedule the Trainer builds: cosine annealing per batch with warm restarts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from pneumoseg.train.loop import Stage, Trainer
from tests.train.recording import RecordingTrainer


class ToyData(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        image = torch.full((3, 4, 4), float(index % 3))
        return {"image": image, "label": torch.tensor([float(index % 2)]), "index": index}


class LossMeter:
    def update(self, logits, batch) -> None:
        pass

    def aggregate(self) -> dict[str, float]:
        return {"score": 0.0}


def toy_trainer(config, cfg, tmp_path, n_train: int, trainer_cls=Trainer) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 1))
    bce = nn.BCEWithLogitsLoss()
    stage = Stage(kind="classifier", model=model, cfg=cfg, loss_fn=lambda logits, batch: bce(logits, batch["label"]),
                  new_meter=LossMeter, select_metric="score")
    return trainer_cls(stage, ToyData(n_train), ToyData(4), config, tmp_path, progress=False)


def closed_form(step: int, period: int, lr: float, lr_min: float) -> float:
    t = step % period
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t / period)) / 2


@pytest.mark.parametrize(
    ("epochs", "cycle_epochs", "n_train", "batch_size", "steps_per_epoch"),
    [
        (4, 1, 10, 2, 5),  # a restart every epoch (the segmenter recipe)
        (6, 2, 9, 2, 4),  # restarts every 2 epochs; the last partial batch is dropped
        (3, None, 7, 4, 2),  # one cycle over the whole run (the classifier recipe); a partial batch kept
    ],
)
def test_lr_follows_the_closed_form_with_restarts(tiny_config, tmp_path, epochs, cycle_epochs, n_train, batch_size,
                                                  steps_per_epoch):
    cycle = "null" if cycle_epochs is None else cycle_epochs
    config = tiny_config(f"classifier.epochs={epochs}", f"classifier.cycle_epochs={cycle}",
                         f"classifier.batch_size={batch_size}", "classifier.lr=0.01", "classifier.lr_min=0.0001")
    cfg = config.classifier
    trainer = toy_trainer(config, cfg, tmp_path, n_train, RecordingTrainer)
    assert len(trainer.train_loader) == steps_per_epoch
    result = trainer.fit()

    period = (cycle_epochs or epochs) * steps_per_epoch
    expected = [closed_form(t, period, cfg.lr, cfg.lr_min) for t in range(epochs * steps_per_epoch)]
    assert trainer.lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # every cycle starts at the full learning rate again
    restarts = [t for t in range(len(expected)) if t % period == 0]
    assert [trainer.lrs[t] for t in restarts] == pytest.approx([cfg.lr] * len(restarts))
    assert len(restarts) == math.ceil(epochs / (cycle_epochs or epochs))
    # the metrics row reports the learning rate of the epoch's last step
    logged = [row["lr"] for row in result.history]
    assert logged == pytest.approx([expected[(e + 1) * steps_per_epoch - 1] for e in range(epochs)])
