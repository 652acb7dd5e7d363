"""From stored pixel values to what a radiologist sees: grey in [0, 1], air dark.

The DICOM grey pipeline (PS3.4 N.2), with pydicom's own functions for each step:

1. PALETTE COLOR images go through their colour LUT (``apply_color_lut``) and become grey by
   ITU-R BT.601 luminance; RGB images by luminance directly.
2. Monochrome: the Modality LUT (``apply_modality_lut``: Rescale Slope/Intercept or a Modality
   LUT Sequence), then the VOI LUT or the first window (``apply_voi_lut``; VOI LUT Function
   LINEAR, LINEAR_EXACT or SIGMOID), scaled from the VOI output range to [0, 1].
3. Without any VOI in the header, >8-bit data is stretched between its 0.5th and 99.5th
   percentiles (after the Modality LUT), as viewers do; 8-bit data (the SIIM release) is scaled
   by the range ``BitsStored`` allows, so those files decode exactly as before.
4. MONOCHROME1 (bright = air) is inverted; a MONOCHROME2 image whose Presentation LUT Shape is
   INVERSE is too. (For MONOCHROME1 the standard's INVERSE shape states the same inversion.)

Pixel spacing: PixelSpacing (at the patient), else ImagerPixelSpacing (at the detector) divided
by EstimatedRadiographicMagnificationFactor when it is given. Zero, blank or malformed values
mean unknown. :class:`Spacing` records which was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

# ITU-R BT.601 luma weights for R, G, B (Pillow's "L" mode and OpenCV's RGB2GRAY use them).
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)
STRETCH_PERCENTILES = (0.5, 99.5)
"""The robust range of a >8-bit image without a VOI: ignores collimator edges and burnt-in text."""


@dataclass(frozen=True)
class Spacing:
    row: float
    column: float
    source: str
    """"PixelSpacing", "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor" or
    "ImagerPixelSpacing (at the detector; no magnification factor)"."""

    @property
    def mm(self) -> tuple[float, float]:
        return self.row, self.column


def display_grey(frame: np.ndarray, ds: Dataset, photometric: str, bits_stored: int, signed: bool) -> np.ndarray:
    """The decoded ``frame`` as float32 grey in [0, 1], air dark. Raises ValueError for a layout
    it cannot show (the caller names the file)."""
    if photometric == "PALETTE COLOR" and frame.ndim == 2:
        rgb = apply_color_lut(frame, ds)
        top = float(2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)  # the LUT entries' bit depth
        return _clip(rgb.astype(np.float32) @ LUMINANCE / np.float32(top))
    if photometric == "RGB" and frame.ndim == 3 and frame.shape[-1] == 3:
        return _scale(frame.astype(np.float32) @ LUMINANCE, *_stored_range(frame, bits_stored, signed))
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or frame.ndim != 2:
        raise ValueError(f"unsupported image: {photometric} pixels of shape {frame.shape}")
    if has_voi(ds):
        values = apply_voi_lut(apply_modality_lut(frame, ds), ds, index=0)
        pixels = _scale(values, *voi_output_range(ds))
    elif bits_stored > 8:
        values = apply_modality_lut(frame, ds)
        pixels = _scale(values, *(float(v) for v in np.percentile(values, STRETCH_PERCENTILES)))
    else:
        pixels = _scale(frame, *_stored_range(frame, bits_stored, signed))
    return 1.0 - pixels if _inverted(ds, photometric) else pixels


def has_voi(ds: Dataset) -> bool:
    return bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds
                                              and ds.WindowCenter not in (None, "") and ds.WindowWidth not in (None, ""))


def voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The (low, high) values ``apply_voi_lut`` maps into: the VOI LUT's own bit depth, else the
    range pydicom's windowing writes (PS3.3 C.11.2.1.2: the Modality LUT's output range)."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif ds.get("PixelRepresentation", 0) == 0:
        low, high = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        low, high = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and not ds.get("ModalityLUTSequence"):
        low, high = sorted((low * float(slope) + float(intercept), high * float(slope) + float(intercept)))
    return low, high


def _inverted(ds: Dataset, photometric: str) -> bool:
    return photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"


def _stored_range(frame: np.ndarray, bits_stored: int, signed: bool) -> tuple[float, float]:
    """The range ``BitsStored`` allows; the pixels' actual range when they fall outside it (a
    wrong header: a compressed stream of higher precision)."""
    low = -(2.0 ** (bits_stored - 1)) if signed else 0.0
    high = low + 2.0**bits_stored - 1
    actual_low, actual_high = float(frame.min()), float(frame.max())
    if actual_low < low or actual_high > high:
        return actual_low, actual_high
    return low, high


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` mapped linearly from [low, high] to [0, 1] as float32 (zeros if flat)."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return _clip((values.astype(np.float32) - np.float32(low)) / np.float32(high - low))


def _clip(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0.0, 1.0, out=values)


def _pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    try:  # absent (None), one value, blank or not numbers: unknown
        row, column = (float(value) for value in ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None


def pixel_spacing(ds: Dataset) -> Spacing | None:
    """(row, column) mm at the patient where the header allows it; None when unknown."""
    if (at_patient := _pair(ds, "PixelSpacing")) is not None:
        return Spacing(*at_patient, "PixelSpacing")
    if (at_detector := _pair(ds, "ImagerPixelSpacing")) is None:
        return None
    try:
        magnification = float(ds.get("EstimatedRadiographicMagnificationFactor") or 0)
    except (TypeError, ValueError):
        magnification = 0.0
    if magnification > 0:
        return Spacing(at_detector[0] / magnification, at_detector[1] / magnification,
                       "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor")
    return Spacing(*at_detector, "ImagerPixelSpacing (at the detector; no magnification factor)")
