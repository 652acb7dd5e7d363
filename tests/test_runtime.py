"""Process-wide torch settings: thread count, determinism, when bf16 autocast is used."""

import torch

from pneumoseg import runtime
from pneumoseg.config import RuntimeConfig


def test_configure_torch_fixes_threads_and_determinism():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        runtime.configure_torch(RuntimeConfig(threads=1, deterministic=True))
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        assert runtime.describe_torch()["deterministic"] is True
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def test_autocast_follows_the_setting_and_the_hardware(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not runtime.use_autocast(RuntimeConfig(amp=False), cuda)
    assert runtime.use_autocast(RuntimeConfig(amp=True), cuda)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert not runtime.use_autocast(RuntimeConfig(amp=True), cpu)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.use_autocast(RuntimeConfig(amp=True), cpu)
    assert not runtime.use_autocast(RuntimeConfig(amp=False), cpu)
