"""Checkpoints: safetensors + a JSON sidecar (config, epoch, metrics, versions, SHA-256)."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pneumoseg.errors import PneumosegError
from pneumoseg.runs.checkpoint import (
    flatten_optimizer,
    load_model_state,
    load_tensors,
    save_model,
    save_tensors,
    unflatten_optimizer,
)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(1))


def flip_byte(path, offset_from_end: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_and_load_model_round_trip_with_sidecar(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "model.safetensors"
    save_model(path, model, {"kind": "classifier", "epoch": 3, "metrics": {"mcc": 0.5}, "config": {"seed": 1}})
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["epoch"] == 3 and meta["metrics"] == {"mcc": 0.5} and meta["config"] == {"seed": 1}
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["weights"] == "model.safetensors" and meta["saved_at"]
    assert meta["versions"]["torch"] == metadata.version("torch")
    assert {"python", "pneumoseg", "timm", "segmentation-models-pytorch"} <= set(meta["versions"])
    other = nn.Linear(3, 2)
    assert load_model_state(other, path)["epoch"] == 3
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    # a plain safetensors file: readable by any tool, no pickle involved
    assert set(load_file(str(path))) == {"weight", "bias"}


def test_a_tampered_weights_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(path, nn.Linear(3, 2), {"epoch": 1})
    flip_byte(path)
    load_file(str(path))  # still a well-formed safetensors file: only the checksum can tell
    with pytest.raises(PneumosegError, match="checksum"):
        load_tensors(path)
    with pytest.raises(PneumosegError, match="checksum"):
        load_model_state(nn.Linear(3, 2), path)


def test_truncated_checkpoints_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(path, nn.Linear(3, 2), {"epoch": 1})
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(PneumosegError, match="truncated"):
        load_tensors(path)
    path.write_bytes(b"")
    with pytest.raises(PneumosegError, match="truncated or damaged"):
        load_tensors(path)


def test_the_file_alone_is_the_checkpoint_the_sidecar_is_for_people(tmp_path):
    """Metadata and checksum live in the safetensors header: a missing or stale sidecar (a
    process killed between the two renames) does not matter."""
    path = tmp_path / "model.safetensors"
    model = nn.Linear(3, 2)
    save_model(path, model, {"epoch": 2})
    with safe_open(str(path), "pt") as fh:
        assert json.loads(fh.metadata()["pneumoseg"])["epoch"] == 2
    (tmp_path / "model.json").unlink()
    assert load_tensors(path)[1]["epoch"] == 2
    (tmp_path / "model.json").write_text("{not json")
    assert load_model_state(nn.Linear(3, 2), path)["epoch"] == 2


def test_a_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    """Without the metadata in its header a file is refused, whatever JSON lies beside it."""
    path = tmp_path / "model.safetensors"
    save_file(nn.Linear(3, 2).state_dict(), str(path))
    (tmp_path / "model.json").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(PneumosegError, match="not a pneumoseg checkpoint"):
        load_tensors(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(path, nn.Linear(3, 2), {"epoch": 1})
    with pytest.raises(PneumosegError, match="do not fit"):
        load_model_state(nn.Linear(4, 2), path)


def test_optimizer_state_survives_flattening(tmp_path):
    def trained(model, optimizer, steps):
        x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
        for _ in range(steps):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()

    model = small_model()
    model(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    trained(model, optimizer, 3)
    tensors, plain = flatten_optimizer(optimizer.state_dict())
    save_tensors(tmp_path / "s.safetensors", {**tensors, **{f"model.{k}": v for k, v in model.state_dict().items()}},
                 {"optimizer": plain})
    loaded, meta = load_tensors(tmp_path / "s.safetensors")

    clone = small_model()
    clone(torch.zeros(1, 3, 6, 6))
    clone.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("model.")})
    clone_opt = torch.optim.Adam(clone.parameters(), lr=1e-2, weight_decay=1e-3)
    clone_opt.load_state_dict(unflatten_optimizer(loaded, json.loads(json.dumps(meta["optimizer"]))))
    trained(model, optimizer, 2)
    trained(clone, clone_opt, 2)
    for a, b in zip(model.state_dict().values(), clone.state_dict().values()):
        assert torch.equal(a, b)


def test_an_edited_config_in_the_header_is_refused(tiny_runs, tmp_path):
    """The issue's case: one byte of the embedded config changed (image_size 64 -> 96, same
    length, so the file stays a well-formed safetensors file) must not load."""
    import shutil

    from pneumoseg.runs.trained import load_trained

    run = tmp_path / "cls"
    shutil.copytree(tiny_runs.cls, run)
    path = run / "best.safetensors"
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    header = data[:header_end]
    assert header.count(b'\\"image_size\\":64') >= 1
    path.write_bytes(header.replace(b'\\"image_size\\":64', b'\\"image_size\\":96', 1) + data[header_end:])
    assert safe_open(str(path), "pt").metadata()  # still readable: only the checksum can tell
    with pytest.raises(PneumosegError, match="checksum of the weights and header does not match"):
        load_trained(run, "best")


def test_a_checkpoint_whose_checksum_covers_only_the_tensors_is_refused(tmp_path):
    """Older files carried a tensor-only checksum: their header could be edited unseen."""
    path = tmp_path / "old.safetensors"
    tensors = {"weight": torch.ones(2)}
    save_file(tensors, str(path), metadata={"pneumoseg": json.dumps({"kind": "segmenter", "tensors_sha256": "x"})})
    with pytest.raises(PneumosegError, match="older pneumoseg whose checksum did not cover the header"):
        load_tensors(path)
