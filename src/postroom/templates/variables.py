"""A template's declared variables and the check of ``templateData`` against them.

Each declaration is ``{name, type, required, default, example, description}``. Data is
checked when mail is enqueued, so a caller hears about a missing or mistyped variable
(all of them at once) before anything is queued, not when the worker renders.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from postroom.schemas.base import ApiModel

VariableType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is(kind: str, value: Any) -> bool:
    match kind:
        case "string":
            return isinstance(value, str)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
    return True


#: the OpenAPI form of ``Variable._check``: ``default`` and ``example`` are of ``type``
_TYPED_VALUES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {
                "properties": {
                    "default": {"type": [kind, "null"]},
                    "example": {"type": [kind, "null"]},
                }
            },
        }
        for kind in ("string", "number", "integer", "boolean", "object", "array")
    ]
    + [
        {  # no type given: a string
            "if": {"not": {"required": ["type"]}},
            "then": {
                "properties": {
                    "default": {"type": ["string", "null"]},
                    "example": {"type": ["string", "null"]},
                }
            },
        }
    ]
}


class Variable(ApiModel):
    model_config = ConfigDict(json_schema_extra=_TYPED_VALUES)

    name: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": _NAME.pattern})
    type: VariableType = "string"
    required: bool = True
    default: Any = None
    example: Any = None
    description: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _check(self) -> Variable:
        if not _NAME.match(self.name):
            raise ValueError(
                f"variable name {self.name!r} must be a letter or _ then letters, digits, _"
            )
        for what in ("default", "example"):
            value = getattr(self, what)
            if value is not None and not _is(self.type, value):
                raise ValueError(f"variable {self.name!r}: {what} is not of type {self.type}")
        return self


def check_declarations(variables: Sequence[Variable]) -> None:
    names = [v.name for v in variables]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variables declared more than once: {', '.join(repeated)}")


def problems(
    variables: Sequence[Mapping[str, Any]], data: Mapping[str, Any], *, prefix: str
) -> list[dict[str, str]]:
    """Every missing required variable and every value of the wrong type."""
    out: list[dict[str, str]] = []
    for var in variables:
        name = var["name"]
        kind = var.get("type", "string")
        if name not in data or data[name] is None:
            if var.get("required", True) and var.get("default") is None:
                out.append({"field": f"{prefix}.{name}", "message": "required variable is missing"})
        elif not _is(kind, data[name]):
            got = type(data[name]).__name__
            out.append(
                {"field": f"{prefix}.{name}", "message": f"must be of type {kind}, got {got}"}
            )
    return out


#: the exact Python types JSON gives a value of each kind (anything else goes through _is)
_EXACT: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
}


def checker(
    variables: Sequence[Mapping[str, Any]],
) -> Callable[[Mapping[str, Any], str], list[dict[str, str]]]:
    """``problems`` with the declarations read once, for checking many recipients'
    data against one version: data whose every value is present and of its kind's
    exact JSON type costs one lookup and one set test a variable; any other data
    gets ``problems`` itself, which says what is wrong."""
    specs = [
        (
            v["name"],
            v.get("type", "string"),
            bool(v.get("required", True)) and v.get("default") is None,
            _EXACT.get(v.get("type", "string"), frozenset()),
        )
        for v in variables
    ]

    def check(data: Mapping[str, Any], prefix: str) -> list[dict[str, str]]:
        for name, kind, required, exact in specs:
            value = data.get(name)
            if value is None:
                if required:
                    return problems(variables, data, prefix=prefix)
            elif type(value) not in exact and not _is(kind, value):
                return problems(variables, data, prefix=prefix)
        return []

    return check


def filler(variables: Sequence[Mapping[str, Any]]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """``effective`` with the defaults worked out once (a bulk send fills them in for
    every recipient)."""
    defaults = {v["name"]: v.get("default") for v in variables}

    def fill(data: Mapping[str, Any]) -> dict[str, Any]:
        if None not in data.values():
            return {**defaults, **data}
        return {**defaults, **{k: v for k, v in data.items() if v is not None}}

    return fill


def effective(variables: Sequence[Mapping[str, Any]], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the declared defaults filled in where it has no value (an optional
    variable without a default is None, so ``{% if name %}`` works under StrictUndefined)."""
    out = {v["name"]: v.get("default") for v in variables}
    out.update({k: v for k, v in data.items() if v is not None})
    return out


def examples(variables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Data for a preview: each variable's example, else its default."""
    out: dict[str, Any] = {}
    for v in variables:
        value = v.get("example") if v.get("example") is not None else v.get("default")
        if value is not None:
            out[v["name"]] = value
    return out
