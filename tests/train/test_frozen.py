"""Frozen-encoder warm-up: the encoder (weights and BatchNorm statistics) stays fixed while the
decoder trains, then everything trains."""

from __future__ import annotations

import torch


def _split(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    rest = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    assert encoder and rest
    return encoder, rest


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_encoder_is_bit_identical_during_the_frozen_epoch(seg_run):
    assert seg_run.config.segmenter.frozen_epochs == 1
    snapshots = seg_run.trainer.snapshots
    encoder_0, decoder_0 = _split(snapshots[0])
    encoder_1, decoder_1 = _split(snapshots[1])
    assert _changed(encoder_0, encoder_1) == []  # parameters, running_mean/var, num_batches_tracked
    changed = _changed(decoder_0, decoder_1)
    assert any(k.startswith("decoder.") for k in changed)
    assert any(k.startswith("segmentation_head.") for k in changed)


def test_encoder_trains_after_the_frozen_epochs(seg_run):
    snapshots = seg_run.trainer.snapshots
    encoder_1, _ = _split(snapshots[1])
    encoder_2, _ = _split(snapshots[2])
    changed = _changed(encoder_1, encoder_2)
    params = {f"encoder.{k}" for k, _ in seg_run.trainer.model.encoder.named_parameters()}
    weights = [k for k in changed if k in params]
    stats = [k for k in changed if k.endswith("running_mean")]
    assert len(weights) == len(params)  # every encoder parameter moved
    assert stats  # and BatchNorm statistics are updated again
    assert all(p.requires_grad for p in seg_run.trainer.model.parameters())


def test_frozen_encoder_has_no_optimizer_state_until_released(tiny_data, tiny_config, tmp_path, monkeypatch):
    """Adam never touches the frozen encoder (no state, so no weight decay or momentum drift)."""
    from pneumoseg.train import stages
    from tests.train.recording import recorded_fit

    config = tiny_config("segmenter.epochs=2", "segmenter.frozen_epochs=1", "segmenter.weight_decay=0.1")
    run = recorded_fit(monkeypatch, stages.train_segmenter, tiny_data.images, tiny_data.labels, config, tmp_path)
    trainer = run.trainer
    encoder_params = {id(p) for p in trainer.model.encoder.parameters()}
    frozen, released = trainer.with_optimizer_state[1], trainer.with_optimizer_state[2]
    assert frozen and not encoder_params & frozen
    assert encoder_params <= released
    encoder_0, _ = _split(trainer.snapshots[0])
    encoder_1, _ = _split(trainer.snapshots[1])
    assert _changed(encoder_0, encoder_1) == []
