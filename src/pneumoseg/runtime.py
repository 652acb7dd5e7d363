"""Process-wide torch settings that decide whether a run can be repeated bit for bit.

Results on a CPU depend on the number of threads (the order of floating-point reductions) and
on which kernels the processor selects; on a GPU, on cuDNN's autotuner. ``configure_torch``
fixes what can be fixed: the thread count when the config names one, deterministic algorithms,
and no autotuning. The same command on the same machine then gives the same numbers; another
CPU model can still pick other kernels (see the README for how far the demo's numbers move).
"""

from __future__ import annotations

import os

import torch

from pneumoseg.config import RuntimeConfig


def configure_torch(runtime: RuntimeConfig) -> None:
    """Apply ``runtime.threads`` and ``runtime.deterministic`` to this process."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; harmless on the CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 in hardware (AVX512-BF16 / AMX), where bf16 autocast makes CPU
    training 2-4x faster; elsewhere it would be emulated and slower."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_autocast(runtime: RuntimeConfig, device: torch.device) -> bool:
    """bf16 autocast for training: on CUDA, and on CPUs with native bf16, when ``runtime.amp``."""
    if not runtime.amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def describe_torch() -> dict[str, object]:
    """The settings a result depends on, for summaries: threads, determinism, torch version."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_has_native_bf16()}


def log_to_stderr() -> None:
    """Show pneumoseg's INFO lines on stderr (the server's and the node's), next to their
    libraries' own, without touching the root logger."""
    import logging

    package_logger = logging.getLogger("pneumoseg")
    if not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False
