"""Stochastic weight averaging: the average itself, and the Trainer's SWA window and BN refresh."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from pneumoseg.config import load_config
from pneumoseg.errors import ConfigError
from pneumoseg.models import build_segmenter
from pneumoseg.train import stages
from pneumoseg.runs.checkpoint import load_model_state, load_tensors
from tests.train.recording import recorded_fit


def test_averaged_model_is_the_mean_of_the_weights_it_was_given():
    model = nn.Linear(3, 2)
    swa = AveragedModel(model)  # as the loop builds it: a copy, updated once per SWA epoch
    epochs = [torch.full((2, 3), 1.0), torch.tensor([[2.0, -4, 0.5], [8, 0, 1]]), torch.arange(6.0).view(2, 3)]
    biases = [torch.tensor([1.0, 2]), torch.tensor([-1.0, 4]), torch.tensor([3.0, 3])]
    for weight, bias in zip(epochs, biases):
        with torch.no_grad():
            model.weight.copy_(weight)
            model.bias.copy_(bias)
        swa.update_parameters(model)
    assert int(swa.n_averaged) == 3
    torch.testing.assert_close(swa.module.weight, torch.stack(epochs).mean(0))
    torch.testing.assert_close(swa.module.bias, torch.stack(biases).mean(0))
    # the live model is untouched: it still holds the last epoch's weights
    assert torch.equal(model.weight.detach(), epochs[-1])


def _bn_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.endswith(("running_mean", "running_var"))]


def test_trainer_averages_exactly_the_epochs_of_the_window(seg_run):
    trainer = seg_run.trainer
    cfg = seg_run.config.segmenter
    window = range(cfg.swa_start, cfg.swa_end + 1)
    assert int(trainer.swa_model.n_averaged) == len(window) == 2
    averaged = trainer.swa_before_finish
    for key, value in trainer.model.named_parameters():
        expected = torch.stack([seg_run.trainer.snapshots[e][key] for e in window]).mean(0)
        torch.testing.assert_close(averaged[f"module.{key}"], expected, rtol=1e-5, atol=1e-6)


def test_swa_checkpoint_has_fresh_batchnorm_statistics(seg_run):
    out, trainer = seg_run.out, seg_run.trainer
    assert (out / "swa.safetensors").is_file() and (out / "swa.json").is_file()
    swa_state, meta = load_tensors(out / "swa.safetensors")
    assert meta["epoch"] == "swa" and "iou" in meta["metrics"]
    last = trainer.snapshots[seg_run.config.segmenter.epochs]
    before = {k.removeprefix("module."): v for k, v in trainer.swa_before_finish.items()}
    keys = _bn_keys(swa_state)
    assert keys, "the segmenter has BatchNorm layers"
    # update_bn ran: statistics differ from the last epoch's model and from what the average held
    assert any(not torch.equal(swa_state[k], last[k]) for k in keys)
    assert all(not torch.equal(swa_state[k], before[k]) for k in keys)
    # ...over exactly one pass of the training loader (momentum None: a cumulative average)
    n_batches = len(trainer.train_loader)
    tracked = {int(v) for k, v in swa_state.items() if k.endswith("num_batches_tracked")}
    assert tracked == {n_batches}
    # the parameters are the average, untouched by the BN refresh
    for key in trainer.model.state_dict():
        if key in dict(trainer.model.named_parameters()):
            assert torch.equal(swa_state[key], before[key])
    # and the file loads strictly into a segmenter built from the saved config
    model = build_segmenter(load_config(out / "config.yaml").segmenter)
    assert load_model_state(model, out / "swa.safetensors")["epoch"] == "swa"


def test_swa_row_in_history(seg_run):
    rows = seg_run.result.history
    assert [r["epoch"] for r in rows] == [1, 2, 3, "swa"]
    assert rows[-1]["n_averaged"] == 2
    assert 0.0 <= rows[-1]["iou"] <= 1.0


def test_a_swa_window_after_the_last_epoch_is_refused(tiny_config):
    """It would silently give no SWA checkpoint."""
    with pytest.raises(ConfigError, match=r"the SWA window 5\.\.6 must lie inside the epochs \(1\.\.2\)"):
        tiny_config("segmenter.swa_start=5", "segmenter.swa_end=6")


def test_mixed_precision_path_with_swa_runs_on_cpu_bfloat16(tiny_data, tiny_config, tmp_path, monkeypatch):
    """The CUDA-only code path (bf16 autocast, channels_last, update_bn under autocast), run on the
    CPU, which supports bf16 autocast too: losses stay finite and BN statistics stay float32."""
    from tests.train.recording import RecordingTrainer

    class MixedPrecision(RecordingTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.amp = self.channels_last = True
            self.model = self.model.to(memory_format=torch.channels_last)

    monkeypatch.setattr(stages, "Trainer", MixedPrecision)
    result = stages.train_segmenter(tiny_data.images, tiny_data.labels, tiny_config(), tmp_path, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, "swa"]
    assert all(math.isfinite(r["val_loss"]) for r in result.history)
    swa_state, _ = load_tensors(tmp_path / "swa.safetensors")
    assert all(swa_state[k].dtype == torch.float32 for k in _bn_keys(swa_state))
    assert all(torch.isfinite(v).all() for v in swa_state.values() if v.is_floating_point())
