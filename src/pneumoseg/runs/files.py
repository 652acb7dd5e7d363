"""Reading a run-folder file through its pydantic model: one line naming the file and the
field when it does not fit."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pneumoseg.config import format_validation_error
from pneumoseg.errors import PneumosegError
from pneumoseg.io import check_seal

Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Any, where: str) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PneumosegError(format_validation_error(where, exc)) from None


def checked_document(data: Any, where: str, *, fmt: str, version: int | tuple[int, ...], what: str,
                     advice: str = "") -> dict:
    """``data`` (a parsed JSON manifest) when it is a ``fmt`` document of ``version`` (or one of
    them) whose own checksum holds; otherwise one line naming ``where`` (``advice`` is appended
    to a version mismatch, e.g. "; export again")."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise PneumosegError(f"{where}: not a {what}")
    versions = version if isinstance(version, tuple) else (version,)
    if data.get("format_version") not in versions:
        raise PneumosegError(f"{where}: format version {data.get('format_version')} is not supported "
                             f"(this pneumoseg reads {' and '.join(map(str, versions))}){advice}")
    check_seal(data, where)
    return data
