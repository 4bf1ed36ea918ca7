"""The building blocks of the job's config models: a Section refuses unknown keys and booleans given for
numbers; a PathText refuses NUL; pydantic's errors become one line per key (`train.run.x: must be >= 1`).

Shared by trainer/config/train_config.py (the `train` section) and the launcher's `cluster` models.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator


def _leaf_types(annotation: Any) -> set:
    """The plain types an annotation accepts (through Annotated, Optional and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_leaf_types(a) for a in typing.get_args(annotation)))
    return {annotation}


@functools.cache
def _numeric_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, info in model.model_fields.items()
                     if (kinds := _leaf_types(info.annotation)) & {int, float} and bool not in kinds)


def refuse_bool_numbers(model: type[BaseModel], value: Any, field: str | None) -> Any:
    """pydantic reads true as 1 for an int or float field; in a job file `nodes: true` is a mistake."""
    if isinstance(value, bool) and field in _numeric_fields(model):
        raise ValueError("Input should be a number, not a boolean")
    return value


def _no_nul(path: str) -> str:
    if "\x00" in path:
        raise ValueError("a path cannot hold a NUL character")
    return path


PathText = Annotated[str, AfterValidator(_no_nul)]  # a file or directory (or hub id): no OS takes a NUL in one


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_numbers(cls, value, info.field_name)


USERINFO = re.compile(r"(://)[^/@\s'\"]*@")


def _without_userinfo(text: str) -> str:
    """A URL's user:password@ part is never echoed back into a terminal or a CI log."""
    return USERINFO.sub(r"\1***@", text)


def describe_validation_error(exc: Exception, prefix: str = "") -> list[str]:
    """Pydantic errors as lines like `train.run.micro_batch_size: must be >= 1 (got 0)`."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return [str(exc)]
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {_without_userinfo(repr(err['input']))})"
        lines.append(f"{path}: {msg}" if path else msg)
    return lines
