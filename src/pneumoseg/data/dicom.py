"""Read chest X-ray DICOM files as grey images in [0, 1], air dark.

:func:`read_dicom` decodes the first frame of any image pydicom can decode (native or
compressed transfer syntaxes, through pydicom's decoder plugins) and normalises it:

- MONOCHROME1 (bright = air) is inverted, so air is always dark;
- values are scaled by the range ``BitsStored`` allows (0..255 for 8 bits, 0..4095 for
  12 bits); when pixels fall outside that range (a wrong header: a compressed stream of
  higher precision; pydicom masks native data to ``BitsStored``) their actual range is used;
- colour images become grey by ITU-R BT.601 luminance (the weights Pillow and OpenCV use);
  YCbCr data is converted to RGB by pydicom first;
- a multi-frame file gives its first frame (with a logged warning).

Rescale Slope/Intercept and VOI windows are ignored: for display-ready radiographs they are
linear maps that the range scaling undoes anyway.

Errors
------
Every failure raises :class:`pneumoseg.errors.DicomReadError` with a one-line message
``"<path>: <reason>"``: not a DICOM file, a truncated or corrupt file, no Pixel Data, an
unsupported transfer syntax, a compressed transfer syntax whose decoder is not installed
(the reason lists the packages to ``pip install``, as pydicom's plugins declare them), or
pixel data that fails to decode.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import as_pixel_options, get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import JPEGBaseline8Bit, UID

from pneumoseg.errors import DicomReadError

logger = logging.getLogger(__name__)

# ITU-R BT.601 luma weights for R, G, B (Pillow's "L" mode and OpenCV's RGB2GRAY use them).
_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# pydicom tries pylibjpeg before Pillow for JPEG Baseline. Pillow (libjpeg-turbo) is ~2.5x
# faster on the SIIM files and bit-identical to a plain JPEG decode (what PIL/OpenCV give
# for the same stream); pylibjpeg differs by one grey level on ~3% of pixels.
_PREFERRED_PLUGINS = {JPEGBaseline8Bit: "pillow"}

# pydicom names a dependency by its import name; pip needs these instead.
_PIP_NAMES = {"gdcm": "python-gdcm"}


@dataclass(frozen=True, eq=False)
class DicomImage:
    """A decoded DICOM image and its header.

    ``eq=False``: equality is identity, since comparing pixel arrays element-wise is
    ambiguous and datasets are large.
    """

    path: Path
    pixels: np.ndarray  # 2-D float32 in [0, 1], air dark
    image_id: str  # SOPInstanceUID, or the file stem when the tag is missing
    spacing: tuple[float, float] | None  # (row, column) mm
    dataset: pydicom.Dataset  # the full header, kept to build DICOM SEG objects on it

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the pixel array."""
        rows, columns = self.pixels.shape
        return rows, columns


def read_dicom(path: str | PathLike[str]) -> DicomImage:
    """Read and decode a DICOM image; raises :class:`DicomReadError` if it cannot."""
    path = Path(path)
    return _decode_image(_read_dataset(path), path)


def read_dicom_bytes(data: bytes, name: str = "upload.dcm") -> DicomImage:
    """:func:`read_dicom` for a file held in memory (an upload): nothing is written to disk.

    ``name`` stands in for the path: it begins error messages, becomes ``DicomImage.path``,
    and its stem is the image id when the file has no SOPInstanceUID."""
    path = Path(name)
    return _decode_image(_read_dataset(path, source=io.BytesIO(data)), path)


def _decode_image(ds: Dataset, path: Path) -> DicomImage:
    """The normalised first frame of a dataset read from ``path`` (named in errors)."""
    frame, props = _decode_first_frame(ds, path)
    low, high = _value_range(frame, int(props["bits_stored"]), bool(props["pixel_representation"]))
    grey = _to_grey(frame, str(props["photometric_interpretation"]), path)
    pixels = _scale_to_unit(grey, low, high)
    if props["photometric_interpretation"] == "MONOCHROME1":
        pixels = 1.0 - pixels
    return DicomImage(
        path=path,
        pixels=pixels,
        image_id=_image_id(ds, path),
        spacing=_pixel_spacing(ds),
        dataset=ds,
    )


def read_image_id(path: str | PathLike[str]) -> str:
    """The SOPInstanceUID (or file stem when absent), reading only the header."""
    path = Path(path)
    ds = _read_dataset(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return _image_id(ds, path)


def _read_error(path: Path, reason: str) -> DicomReadError:
    return DicomReadError(f"{path}: {reason}")


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (pydicom's decoder errors span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_dataset(path: Path, source: BinaryIO | None = None, **kwargs) -> Dataset:
    """``dcmread`` without ``force``, so that a non-DICOM file is rejected, not guessed at.

    Reads ``source`` (a file object) instead of ``path`` when given; ``path`` names it in errors."""
    try:
        return pydicom.dcmread(path if source is None else source, **kwargs)
    except InvalidDicomError:
        reason = "not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
        raise _read_error(path, reason) from None
    except OSError as exc:
        raise _read_error(path, exc.strerror or _one_line(exc)) from exc
    except Exception as exc:  # pydicom raises assorted errors on malformed or cut-off files
        raise _read_error(path, f"corrupt DICOM file ({_one_line(exc)})") from exc


def _decode_first_frame(ds: Dataset, path: Path) -> tuple[np.ndarray, dict[str, str | int]]:
    """The first frame as pydicom decodes it, and the pixel properties after decoding."""
    if "PixelData" not in ds:
        raise _read_error(path, "no Pixel Data element (the file is truncated, or is not an image)")
    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if tsyntax is None:
        raise _read_error(path, "no Transfer Syntax UID in the file meta information")
    decoder = _decoder_for(UID(tsyntax), path)
    try:
        options = as_pixel_options(ds)
        frame, props = decoder.as_array(ds, index=0, decoding_plugin=_plugin_for(decoder), **options)
    except Exception as exc:  # any failure of the plugins or header validation
        reason = f"cannot decode {decoder.UID.name} pixel data: {_one_line(exc)}"
        raise _read_error(path, reason) from exc
    if options["number_of_frames"] > 1:
        logger.warning("%s: %s frames, using the first", path, options["number_of_frames"])
    return frame, props


def _decoder_for(tsyntax: UID, path: Path) -> Decoder:
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise _read_error(path, f"unsupported transfer syntax {tsyntax} ({tsyntax.name})") from None
    if not decoder.is_available:
        raise _read_error(
            path,
            f"no decoder for {tsyntax.name} ({tsyntax}) is installed; "
            f"pip install one of: {_install_options(decoder)}",
        )
    return decoder


def _install_options(decoder: Decoder) -> str:
    """The packages each unavailable plugin needs, e.g. ``pylibjpeg>=2.0 pylibjpeg-openjpeg>=2.0``.

    Parsed from pydicom's ``missing_dependencies`` strings, of the form
    ``"<plugin> - requires <req>[, <req>...] and <req>"``.
    """
    options = []
    for line in decoder.missing_dependencies:
        _, _, requirements = line.partition(" - requires ")
        names = requirements.replace(" and ", ", ").split(", ")
        options.append(" ".join(_pip_name(name) for name in names if name))
    return " | ".join(option for option in options if option) or "(none known)"


def _pip_name(requirement: str) -> str:
    for import_name, pip_name in _PIP_NAMES.items():
        if requirement == import_name or requirement.startswith(f"{import_name}>"):
            return pip_name + requirement[len(import_name) :]
    return requirement


def _plugin_for(decoder: Decoder) -> str:
    """The preferred plugin if it is available, else "" (pydicom tries them all in turn)."""
    plugin = _PREFERRED_PLUGINS.get(decoder.UID, "")
    return plugin if plugin in decoder.available_plugins else ""


def _to_grey(frame: np.ndarray, photometric: str, path: Path) -> np.ndarray:
    """A 2-D array of stored values: monochrome as is, RGB by luminance."""
    if frame.ndim == 2 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        return frame
    if frame.ndim == 3 and frame.shape[-1] == 3 and photometric == "RGB":
        return frame.astype(np.float32) @ _LUMINANCE
    raise _read_error(path, f"unsupported image: {photometric} pixels of shape {frame.shape}")


def _value_range(frame: np.ndarray, bits_stored: int, signed: bool) -> tuple[float, float]:
    """The (low, high) stored values that map to 0 and 1: the range ``BitsStored`` allows.

    When pixels fall outside that range the header is wrong, and their actual range is used.
    """
    low = -(2.0 ** (bits_stored - 1)) if signed else 0.0
    high = low + 2.0**bits_stored - 1
    actual_low, actual_high = float(frame.min()), float(frame.max())
    if actual_low < low or actual_high > high:
        return actual_low, actual_high
    return low, high


def _scale_to_unit(grey: np.ndarray, low: float, high: float) -> np.ndarray:
    """``grey`` mapped linearly from [low, high] to [0, 1] as float32 (zeros if flat)."""
    if high == low:
        return np.zeros(grey.shape, dtype=np.float32)
    scaled = (grey.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def _image_id(ds: Dataset, path: Path) -> str:
    return str(ds.get("SOPInstanceUID") or path.stem)


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing, else None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:  # absent (None), one value, or not numbers: try the next
            row, column = (float(value) for value in ds.get(keyword))
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return row, column
    return None
