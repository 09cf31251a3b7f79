"""A small declarative validator that fails the way OpenAI's API does.

OpenAI reports the *first* problem it finds, with a JSON-path-like ``param``
(``session.tools[3].description``) and a specific ``code`` (``unknown_parameter``,
``invalid_value``, ``integer_below_min_value``...). pydantic's errors have neither
shape, so the emulator describes its request bodies with these few node types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ApiError

Json = Any


def json_type(value: object) -> str:
    """The JSON type name OpenAI uses in ``invalid_type`` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}


def _a(kind: str) -> str:
    return _ARTICLE.get(kind, f"a {kind}")


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def invalid_type(path: str, expected: str, value: object) -> ApiError:
    return ApiError(
        f"Invalid type for '{path}': expected {expected}, but got {_a(json_type(value))} instead.",
        "invalid_type",
        path,
    )


def invalid_value(path: str, value: object, supported: Sequence[object]) -> ApiError:
    options = [f"'{s}'" for s in supported]
    if len(options) > 1:
        listed = ", ".join(options[:-1]) + (", and " if len(options) > 2 else " and ")
        listed += options[-1]
    else:
        listed = "".join(options)
    return ApiError(
        f"Invalid value: '{value}'. Supported values are: {listed}.", "invalid_value", path
    )


def unknown_parameter(path: str) -> ApiError:
    return ApiError(f"Unknown parameter: '{path}'.", "unknown_parameter", path)


def missing_parameter(path: str) -> ApiError:
    return ApiError(f"Missing required parameter: '{path}'.", "missing_required_parameter", path)


class Spec:
    """A node of a schema. ``check`` returns the (copied) value or raises ApiError."""

    #: JSON types this node accepts; lets :class:`OneOf` pick a branch by type.
    json_types: frozenset[str] = frozenset()
    expected = "a value"

    def check(self, value: Json, path: str) -> Json:
        raise NotImplementedError

    def accepts_type(self, value: Json) -> bool:
        kind = json_type(value)
        return kind in self.json_types or (kind == "integer" and "decimal" in self.json_types)


class AnyValue(Spec):
    json_types = frozenset({"null", "boolean", "integer", "decimal", "string", "array", "object"})

    def check(self, value: Json, path: str) -> Json:
        return value


class AnyObject(Spec):
    """A free-form JSON object (JSON schema parameters, metadata)."""

    json_types = frozenset({"object"})
    expected = "an object"

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, dict):
            raise invalid_type(path, self.expected, value)
        return value


class Str(Spec):
    json_types = frozenset({"string"})
    expected = "a string"

    def __init__(self, max_length: int | None = None, min_length: int = 0) -> None:
        self.max_length = max_length
        self.min_length = min_length

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, str):
            raise invalid_type(path, self.expected, value)
        if self.max_length is not None and len(value) > self.max_length:
            raise ApiError(
                f"Invalid '{path}': string too long. Expected a string with maximum length "
                f"{self.max_length}, but got a string with length {len(value)} instead.",
                "string_above_max_length",
                path,
            )
        if len(value) < self.min_length:
            raise ApiError(
                f"Invalid '{path}': string too short. Expected a string with minimum length "
                f"{self.min_length}, but got a string with length {len(value)} instead.",
                "string_below_min_length",
                path,
            )
        return value


class Bool(Spec):
    json_types = frozenset({"boolean"})
    expected = "a boolean"

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, bool):
            raise invalid_type(path, self.expected, value)
        return value


class Int(Spec):
    json_types = frozenset({"integer"})
    expected = "an integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Json, path: str) -> Json:
        # JSON has no int/float distinction on the wire, but 3.0 parses as a float here;
        # OpenAI accepts integral decimals for integer fields.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_type(path, self.expected, value)
        if self.minimum is not None and value < self.minimum:
            raise ApiError(
                f"Invalid '{path}': integer below minimum value. Expected a value >= "
                f"{self.minimum}, but got {value} instead.",
                "integer_below_min_value",
                path,
            )
        if self.maximum is not None and value > self.maximum:
            raise ApiError(
                f"Invalid '{path}': integer above maximum value. Expected a value <= "
                f"{self.maximum}, but got {value} instead.",
                "integer_above_max_value",
                path,
            )
        return value


class Num(Spec):
    json_types = frozenset({"decimal"})
    expected = "a number"

    def __init__(self, minimum: float | None = None, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Json, path: str) -> Json:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_type(path, self.expected, value)
        if self.minimum is not None and value < self.minimum:
            raise ApiError(
                f"Invalid '{path}': decimal below minimum value. Expected a value >= "
                f"{self.minimum}, but got {value} instead.",
                "decimal_below_min_value",
                path,
            )
        if self.maximum is not None and value > self.maximum:
            raise ApiError(
                f"Invalid '{path}': decimal above maximum value. Expected a value <= "
                f"{self.maximum}, but got {value} instead.",
                "decimal_above_max_value",
                path,
            )
        return value


class Enum(Spec):
    json_types = frozenset({"string"})
    expected = "a string"

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, str):
            raise invalid_type(path, self.expected, value)
        if value not in self.values:
            raise invalid_value(path, value, self.values)
        return value


class Nullable(Spec):
    def __init__(self, inner: Spec) -> None:
        self.inner = inner
        self.json_types = inner.json_types | {"null"}
        self.expected = inner.expected

    def check(self, value: Json, path: str) -> Json:
        return None if value is None else self.inner.check(value, path)


class ListOf(Spec):
    json_types = frozenset({"array"})
    expected = "an array"

    def __init__(self, item: Spec, max_items: int | None = None) -> None:
        self.item = item
        self.max_items = max_items

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, list):
            raise invalid_type(path, self.expected, value)
        if self.max_items is not None and len(value) > self.max_items:
            raise ApiError(
                f"Invalid '{path}': array too long. Expected an array with maximum length "
                f"{self.max_items}, but got an array with length {len(value)} instead.",
                "array_above_max_length",
                path,
            )
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class Obj(Spec):
    """An object with known fields; unknown fields are ``unknown_parameter``."""

    json_types = frozenset({"object"})
    expected = "an object"

    def __init__(
        self,
        fields: Mapping[str, Spec],
        required: Sequence[str] = (),
        *,
        allow_extra: bool = False,
    ) -> None:
        self.fields = dict(fields)
        self.required = tuple(required)
        self.allow_extra = allow_extra

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, dict):
            raise invalid_type(path, self.expected, value)
        out: dict[str, Json] = {}
        for name, item in value.items():
            spec = self.fields.get(name)
            if spec is None:
                if not self.allow_extra:
                    raise unknown_parameter(child(path, name))
                out[name] = item
                continue
            out[name] = spec.check(item, child(path, name))
        for name in self.required:
            if name not in value:
                raise missing_parameter(child(path, name))
        return out


class Tagged(Spec):
    """An object whose ``tag`` field (``type``) selects the variant schema."""

    json_types = frozenset({"object"})
    expected = "an object"

    def __init__(self, variants: Mapping[str, Obj], tag: str = "type", default: str | None = None):
        self.variants = dict(variants)
        self.tag = tag
        self.default = default

    def check(self, value: Json, path: str) -> Json:
        if not isinstance(value, dict):
            raise invalid_type(path, self.expected, value)
        kind = value.get(self.tag, self.default)
        if kind is None:
            raise missing_parameter(child(path, self.tag))
        if not isinstance(kind, str):
            raise invalid_type(child(path, self.tag), "a string", kind)
        variant = self.variants.get(kind)
        if variant is None:
            raise invalid_value(child(path, self.tag), kind, list(self.variants))
        checked: dict[str, Json] = variant.check(value, path)
        return checked


class OneOf(Spec):
    """Alternatives told apart by JSON type (``"auto"`` or an object, ...)."""

    def __init__(self, *options: Spec) -> None:
        self.options = options
        self.json_types = frozenset().union(*(o.json_types for o in options))
        self.expected = " or ".join(o.expected for o in options)

    def check(self, value: Json, path: str) -> Json:
        for option in self.options:
            if option.accepts_type(value):
                return option.check(value, path)
        raise invalid_type(path, self.expected, value)
