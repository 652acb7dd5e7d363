"""Reading a run-folder file through its pydantic model: one line naming the file and the
field when it does not fit."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pneumoseg.config import format_validation_error
from pneumoseg.errors import PneumosegError

Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Any, where: str) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PneumosegError(format_validation_error(where, exc)) from None
