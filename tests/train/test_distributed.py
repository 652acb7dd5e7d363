"""Data loading for one or several processes, and a real 2-process CPU run under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from pneumoseg.train import distributed
from pneumoseg.runs.checkpoint import load_tensors
from pneumoseg.train.distributed import DistInfo
from pneumoseg.train.loop import STATE_FILE, _set_epoch, make_loader
from tests.helpers import TINY_OVERRIDES


class Indexed(Dataset):
    """Items record their index and the epoch the dataset copy that made them was told."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.zeros(1), "index": index, "epoch": self.epoch}


def epoch_indices(loader, epoch: int) -> list[list[int]]:
    _set_epoch(loader, epoch)
    return [batch["index"].tolist() for batch in loader]


@pytest.mark.parametrize("n", [7, 8, 9, 10, 11, 17])
def test_every_rank_gets_the_same_number_of_batches(n):
    """DDP hangs if one rank runs a batch more than another: the sampler pads, the loader drops alike."""
    loaders = [make_loader(Indexed(n), 2, train=True, seed=0, workers=0, info=DistInfo(rank, 2)) for rank in (0, 1)]
    batches = [epoch_indices(loader, 1) for loader in loaders]
    assert len(batches[0]) == len(batches[1]) == len(loaders[0]) == len(loaders[1]) > 0
    seen = [i for rank in batches for batch in rank for i in batch]
    if n >= 2 * 2 * 2:  # drop_last: at most one incomplete batch per rank dropped
        assert all(len(batch) == 2 for rank in batches for batch in rank)
        assert len(set(seen)) >= n - 2
    else:  # too small to drop anything: every image is seen
        assert set(seen) == set(range(n))


def test_order_depends_on_seed_and_epoch_only():
    make = lambda seed: make_loader(Indexed(12), 3, train=True, seed=seed, workers=0, info=DistInfo())  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    assert epoch_indices(a, 1) == epoch_indices(b, 1)
    assert epoch_indices(a, 1) != epoch_indices(a, 2)
    assert epoch_indices(a, 2) == epoch_indices(b, 2)
    assert epoch_indices(a, 1) != epoch_indices(c, 1)
    assert sorted(i for batch in epoch_indices(a, 3) for i in batch) == list(range(12))  # 12 = 4 full batches


def test_validation_order_is_fixed_and_complete():
    loader = make_loader(Indexed(7), 3, train=False, seed=0, workers=0, info=DistInfo())
    assert epoch_indices(loader, 1) == epoch_indices(loader, 5) == [[0, 1, 2], [3, 4, 5], [6]]


def test_workers_see_the_current_epoch():
    """Augmentation is seeded by epoch: a worker must not keep the dataset copy of epoch 1."""
    loader = make_loader(Indexed(4), 2, train=True, seed=0, workers=1, info=DistInfo())
    for epoch in (1, 2, 3):
        _set_epoch(loader, epoch)
        assert {int(e) for batch in loader for e in batch["epoch"]} == {epoch}


def test_single_process_setup(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info, device = distributed.setup("cpu")
    assert info == DistInfo() and not info.enabled and info.is_main and device.type == "cpu"
    assert distributed.broadcast_object(info, {"a": 1}) == {"a": 1}
    distributed.barrier(info)  # a no-op without a process group


# --------------------------------------------------------------------------- torchrun, 2 CPU processes

WRITE_LOG = """
    import os
    if os.environ.get("PNEUMOSEG_WRITE_LOG"):
        import pneumoseg.io as io
        _original = io.atomic_path

        def atomic_path(path):
            log = os.path.join(os.environ["PNEUMOSEG_WRITE_LOG"], f"rank{os.environ.get('RANK', '0')}.txt")
            with open(log, "a") as fh:
                fh.write(f"{os.path.abspath(path)}\\n")
            return _original(path)

        io.atomic_path = atomic_path
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["cls", "seg"])
def test_torchrun_two_cpu_processes(tiny_data, tmp_path, stage):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside the interpreter")
    hooks, logs, out = tmp_path / "hooks", tmp_path / "writes", tmp_path / "run"
    hooks.mkdir()
    logs.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(WRITE_LOG))  # records every file each rank writes
    labels = Path(shutil.copy(tiny_data.labels, tmp_path / "train-rle.csv"))
    # seg: epoch 1 frozen, epoch 2 not (the DDP re-wrap), SWA over epoch 2; cls: one epoch
    overrides = [*TINY_OVERRIDES, "classifier.epochs=1", "segmenter.batch_size=2"]
    env = {**os.environ, "PNEUMOSEG_WRITE_LOG": str(logs),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))}
    env.pop("WORLD_SIZE", None)
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pneumoseg.cli", "train", stage,
           "--images", str(tiny_data.images), "--labels", str(labels), "--out", str(out),
           *[arg for o in overrides for arg in ("--set", o)]]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr

    epochs = 1 if stage == "cls" else 2
    kind = "classifier" if stage == "cls" else "segmenter"
    expected = {"best.safetensors", "best.json", "last-state.safetensors", "last-state.json", "metrics.csv",
                "curves.png", "config.yaml", "run.json", "splits.json"}
    if stage == "seg":
        expected |= {"swa.safetensors", "swa.json"}
    assert {p.name for p in out.iterdir()} == expected
    _, meta = load_tensors(out / STATE_FILE)
    assert meta["epoch"] == epochs
    assert output.count("done: ") == 1  # printed by rank 0 only
    for epoch in range(1, epochs + 1):
        assert output.count(f"{kind} epoch {epoch}: ") == 1
    record = json.loads((out / "run.json").read_text())
    assert record["stage"] == kind
    if stage == "seg":  # the SWA BatchNorm pass saw every training image, not one rank's half
        bn_images = int(output.split("SWA BatchNorm statistics: one pass over ")[1].split()[0])
        assert record["n_train"] - 2 < bn_images <= record["n_train"]  # batch 2: at most one image dropped

    rank0 = (logs / "rank0.txt").read_text().splitlines()
    rank1 = (logs / "rank1.txt").read_text().splitlines() if (logs / "rank1.txt").exists() else []
    assert any(p.startswith(str(out)) for p in rank0)
    assert not [p for p in rank1 if p.startswith(str(out))], "rank 1 wrote into the run folder"
    assert 1 <= rank0.count(str(out / "best.safetensors")) <= epochs  # at most once an epoch, by rank 0
