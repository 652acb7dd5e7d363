"""Read chest X-ray DICOM files as grey images in [0, 1], air dark.

:func:`read_dicom` decodes the first frame of any image pydicom can decode (native or
compressed transfer syntaxes, through pydicom's decoder plugins), checks that the header
describes the pixel data it holds, and turns stored values into display grey
(:mod:`pneumoseg.data.intensity`: Modality LUT, VOI LUT or window, Presentation LUT Shape,
MONOCHROME1, PALETTE COLOR; pixel spacing). A multi-frame file gives its first frame (with a
logged warning).

Errors
------
Every failure raises :class:`pneumoseg.errors.DicomReadError` with a one-line message
``"<path>: <reason>"``: not a DICOM file, a truncated or corrupt file, no Pixel Data, an
unsupported transfer syntax, a compressed transfer syntax whose decoder is not installed
(the reason lists the packages to ``pip install``, as pydicom's plugins declare them), pixel
data that fails to decode, or a header that disagrees with the pixel data (Rows × Columns,
samples per pixel or length; the compressed stream's own dimensions).
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
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import as_pixel_options, get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import JPEGBaseline8Bit, UID

from pneumoseg.data.intensity import display_grey, pixel_spacing
from pneumoseg.errors import DicomReadError
from pneumoseg.io import shown

logger = logging.getLogger(__name__)

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
    spacing: tuple[float, float] | None  # (row, column) mm at the patient where known
    dataset: pydicom.Dataset  # the full header, kept to build DICOM SEG objects on it
    spacing_source: str | None = None  # which header gave ``spacing`` (intensity.Spacing.source)

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
    photometric = str(props["photometric_interpretation"])
    try:
        pixels = display_grey(frame, ds, photometric, int(props["bits_stored"]), bool(props["pixel_representation"]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _read_error(path, _one_line(exc)) from None
    spacing = pixel_spacing(ds)
    return DicomImage(path=path, pixels=pixels, image_id=_image_id(ds, path), spacing=spacing.mm if spacing else None,
                      dataset=ds, spacing_source=spacing.source if spacing else None)


def read_header(path: str | PathLike[str]) -> Dataset:
    """The header without the pixel data (fast); a :class:`DicomReadError` when unreadable."""
    return _read_dataset(Path(path), stop_before_pixels=True)


def read_image_id(path: str | PathLike[str]) -> str:
    """The SOPInstanceUID (or file stem when absent), reading only the header."""
    path = Path(path)
    ds = _read_dataset(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return _image_id(ds, path)


def _read_error(path: Path, reason: str) -> DicomReadError:
    return DicomReadError(f"{shown(path)}: {reason}")


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
    except Exception as exc:  # a missing or malformed pixel-description tag
        raise _read_error(path, f"bad image pixel description: {_one_line(exc)}") from exc
    missing = [keyword for key, keyword in _PIXEL_MODULE.items() if options.get(key) is None]
    if missing:  # as_pixel_options leaves out what the header lacks
        raise _read_error(path, f"bad image pixel description: no {', '.join(missing)} in the header")
    _check_stored_size(ds, options, decoder, path)
    try:
        frame, props = decoder.as_array(ds, index=0, decoding_plugin=_plugin_for(decoder), **options)
    except Exception as exc:  # any failure of the plugins or header validation
        reason = f"cannot decode {decoder.UID.name} pixel data: {_one_line(exc)}"
        raise _read_error(path, reason) from exc
    if options["number_of_frames"] > 1:
        logger.warning("%s: %s frames, using the first", path, options["number_of_frames"])
    _check_frame_shape(frame, options, path)
    return frame, props


_PIXEL_MODULE = {"rows": "Rows", "columns": "Columns", "samples_per_pixel": "SamplesPerPixel",
                 "bits_allocated": "BitsAllocated", "bits_stored": "BitsStored",
                 "pixel_representation": "PixelRepresentation",
                 "photometric_interpretation": "PhotometricInterpretation"}
"""The Image Pixel module's Type 1 elements, by the names of pydicom's pixel options."""


def _header_size(options: dict) -> str:
    samples = int(options["samples_per_pixel"])
    return f"{options['rows']}×{options['columns']}" + (f"×{samples}" if samples > 1 else "")


def _check_stored_size(ds: Dataset, options: dict, decoder: Decoder, path: Path) -> None:
    """The header's Rows × Columns (× samples) against what the Pixel Data holds: the byte count
    of native data, the codestream's own dimensions for compressed data that Pillow can parse
    (JPEG, JPEG 2000). pydicom would otherwise reshape or truncate silently."""
    rows, columns, samples = int(options["rows"]), int(options["columns"]), int(options["samples_per_pixel"])
    if decoder.is_native:
        bits = int(options["bits_allocated"])
        if bits % 8:
            return  # 1-bit data: no radiograph
        expected = rows * columns * samples * (bits // 8) * int(options["number_of_frames"])
        actual = len(ds.PixelData)
        if actual > expected + 1:  # one byte of padding to an even length is allowed
            raise _read_error(path, f"the header says {_header_size(options)} pixels ({expected:,} bytes) but the "
                                    f"Pixel Data holds {actual:,} bytes")
        return
    stream = next(generate_frames(ds.PixelData, number_of_frames=int(options["number_of_frames"])), None)
    try:
        with Image.open(io.BytesIO(stream or b"")) as image:
            width, height, bands = image.width, image.height, len(image.getbands())
    except (OSError, ValueError):  # a codestream Pillow does not parse (JPEG-LS, RLE): pydicom checks those
        return
    if (height, width) != (rows, columns) or (samples == 1 and bands != 1):
        raise _read_error(path, f"the header says {_header_size(options)} pixels but its {decoder.UID.name} stream "
                                f"is {height}×{width}" + (f"×{bands}" if bands > 1 else ""))


def _check_frame_shape(frame: np.ndarray, options: dict, path: Path) -> None:
    samples = int(options["samples_per_pixel"])
    expected = (int(options["rows"]), int(options["columns"])) + ((samples,) if samples > 1 else ())
    if frame.shape != expected:
        raise _read_error(path, f"the header says {_header_size(options)} pixels but they decode to "
                                f"{'×'.join(map(str, frame.shape))}")


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


def _image_id(ds: Dataset, path: Path) -> str:
    return str(ds.get("SOPInstanceUID") or shown(path.stem))
