"""The real Trainer with recording hooks, and a way to run a stage's training through it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from pneumoseg.config import Config
from pneumoseg.train import stages
from pneumoseg.train.loop import FitResult, Trainer


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class RecordingTrainer(Trainer):
    """The real Trainer, keeping a copy of the weights after every epoch (key 0: before training)
    and of the SWA average as it stood before ``finish_swa``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {0: state_copy(self.model)}
        self.with_optimizer_state: dict[int, set[int]] = {}
        """Epoch → ids of the parameters Adam holds state for after it."""
        self.swa_before_finish: dict[str, torch.Tensor] | None = None
        self.lrs: list[float] = []
        step = self.optimizer.step

        def recording_step(*a, **kw):
            self.lrs.append(self.optimizer.param_groups[0]["lr"])
            return step(*a, **kw)

        self.optimizer.step = recording_step

    def run_epoch(self, epoch: int) -> None:
        super().run_epoch(epoch)
        self.snapshots[epoch] = state_copy(self.model)
        self.with_optimizer_state[epoch] = {id(p) for p in self.optimizer.state}

    def finish_swa(self) -> None:
        if self.swa_model is not None:
            self.swa_before_finish = state_copy(self.swa_model)
        super().finish_swa()


@dataclass
class RecordedRun:
    config: Config
    out: Path
    result: FitResult
    trainer: RecordingTrainer
    trainers: list[RecordingTrainer] = field(default_factory=list)


def recorded_fit(monkeypatch: pytest.MonkeyPatch, train: Callable[..., FitResult], *args, **kwargs) -> RecordedRun:
    """Call ``stages.train_classifier``/``train_segmenter`` with the Trainer swapped for RecordingTrainer."""
    trainers: list[RecordingTrainer] = []

    class Recorder(RecordingTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            trainers.append(self)

    monkeypatch.setattr(stages, "Trainer", Recorder)
    result = train(*args, progress=False, **kwargs)
    return RecordedRun(config=args[2], out=Path(args[3]), result=result, trainer=trainers[-1], trainers=trainers)
