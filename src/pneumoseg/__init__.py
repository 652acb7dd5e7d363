"""pneumoseg: two-stage pneumothorax detection and segmentation on chest X-rays."""

from pneumoseg.data.dicom import DicomImage, read_dicom
from pneumoseg.data.rle import rle_decode, rle_encode
from pneumoseg.errors import DicomReadError, LabelFileError, PneumosegError

__version__ = "0.1.0"

__all__ = [
    "DicomImage",
    "DicomReadError",
    "LabelFileError",
    "PneumosegError",
    "__version__",
    "read_dicom",
    "rle_decode",
    "rle_encode",
]
