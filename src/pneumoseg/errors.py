"""Error types a user can act on.

Every error raised for bad input derives from :class:`PneumosegError`; the command line
prints its message on one line (no traceback) and exits non-zero. Messages name the file
(and row, where there is one) and say what is wrong.
"""


class PneumosegError(Exception):
    """An error caused by the user's input or environment, reported in one line."""


class DicomReadError(PneumosegError):
    """A file could not be read as a DICOM image (not DICOM, no pixels, missing codec)."""


class LabelFileError(PneumosegError):
    """A SIIM label CSV is malformed; the message names the file and the row."""


class ConfigError(PneumosegError):
    """A configuration file or override is invalid."""
