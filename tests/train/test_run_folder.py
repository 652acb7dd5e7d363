"""What training writes into its run folder, read back through the run layer."""

from __future__ import annotations

import torch

from pneumoseg.config import load_config
from pneumoseg.models import build_segmenter
from pneumoseg.runs.checkpoint import load_model_state, load_tensors
from pneumoseg.train.loop import STATE_FILE


def test_run_checkpoints_carry_config_epoch_and_metrics(seg_run):
    out = seg_run.out
    state, meta = load_tensors(out / "best.safetensors")
    assert meta["kind"] == "segmenter"
    assert meta["epoch"] == seg_run.result.best_epoch
    assert set(meta["metrics"]) >= {"val_loss", "iou", "f1", "f2"}
    assert meta["metrics"]["iou"] == seg_run.result.row(meta["epoch"])["iou"]
    assert meta["config"] == seg_run.config.model_dump(mode="json")
    model = build_segmenter(load_config(out / "config.yaml").segmenter)
    load_model_state(model, out / "best.safetensors")

    tensors, state_meta = load_tensors(out / STATE_FILE)
    assert state_meta["epoch"] == seg_run.config.segmenter.epochs
    assert {k.split(".")[0] for k in tensors} == {"model", "optim", "swa", "rng"}
    assert state_meta["scheduler"]["T_0"] == len(seg_run.trainer.train_loader)  # cycle_epochs=1
    assert [r["epoch"] for r in state_meta["history"]] == [1, 2, 3]
    last = seg_run.trainer.snapshots[3]
    assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in last.items())
