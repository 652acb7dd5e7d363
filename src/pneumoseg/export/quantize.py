"""int8 ONNX models: static QDQ quantisation with ONNX Runtime's own tools.

Weights become int8 per output channel, activations uint8 per tensor (the u8·s8 pairing x86
VNNI/AMX kernels take), with the activation ranges calibrated (MinMax) on real films fed
exactly as at inference: resized to the model's input size and normalised as its run records.
The films used are recorded in ``onnx.json``, so a calibration can be repeated.

A bf16 export holds the fp32 graphs and says so in ``onnx.json``: OpenVINO runs them in bf16 on a
CPU with native bf16 (``predict --backend openvino``). ONNX Runtime's CPU provider has no bf16
convolution kernels, so its back-end refuses such a folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pneumoseg.data.dicom import read_dicom
from pneumoseg.data.preprocess import Normalisation, resize_to_uint8, to_model_input
from pneumoseg.errors import DicomReadError, PneumosegError

PRECISIONS = ("fp32", "bf16", "int8")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PneumosegError(f"--precision must be fp32, bf16 or int8, not {precision!r}")
    return precision


def calibration_films(paths: list[Path], n: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` readable films of ``paths`` (sorted), as (image id, [0, 1] pixels)."""
    films = []
    for path in sorted(paths):
        try:
            image = read_dicom(path)
        except DicomReadError:
            continue
        films.append((image.image_id, image.pixels))
        if len(films) == n:
            break
    if not films:
        raise PneumosegError("no readable DICOM film to calibrate the int8 models on")
    return films


class _Inputs:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed films, with the range
    selection its strided calibration uses (one film at a time: the activations of one film are
    held, never those of all of them)."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name, self.batches = name, batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.pending = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.pending, None)
        return None if batch is None else {self.name: batch}


def quantize_int8(fp32_model: Path, out: Path, films: list[tuple[str, np.ndarray]], image_size: int,
                  normalisation: Normalisation, input_name: str) -> dict[str, Any]:
    """Write the int8 QDQ version of ``fp32_model`` to ``out``; what the manifest records of it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [to_model_input(resize_to_uint8(pixels, image_size)[None], normalisation).numpy()
               for _, pixels in films]
    with tempfile.TemporaryDirectory(prefix="pneumoseg-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Inputs(input_name, batches), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibStridedMinMax": 1})  # ranges merged film by film: bounded memory
    return {"precision": "int8", "format": "QDQ", "weights": "int8, per output channel",
            "activations": "uint8, per tensor", "calibration": {"method": "MinMax", "n_images": len(films),
                                                                 "image_ids": [image_id for image_id, _ in films]}}
