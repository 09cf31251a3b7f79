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


#: Python type -> JSON type name; bool before int, as a bool is an int too.
_JSON_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "boolean"),
    (int, "integer"),
    (float, "decimal"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_type(value: object) -> str:
    """The JSON type name OpenAI uses in ``invalid_type`` messages."""
    names = (name for kind, name in _JSON_TYPE_NAMES if isinstance(value, kind))
    return next(names, type(value).__name__)


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


def _length_error(path: str, noun: str, size: int, limit: int, too_long: bool) -> ApiError:
    """``string_above_max_length``, ``array_above_max_length``, ``..._below_min_length``."""
    word, bound, code = (
        ("long", "maximum", "above_max") if too_long else ("short", "minimum", "below_min")
    )
    return ApiError(
        f"Invalid '{path}': {noun} too {word}. Expected {_a(noun)} with {bound} length "
        f"{limit}, but got {_a(noun)} with length {size} instead.",
        f"{noun}_{code}_length",
        path,
    )


class Spec:
    """A node of a schema. ``check`` returns the (copied) value or raises ApiError:
    ``invalid_type`` unless the value has one of ``json_types``, then whatever
    :meth:`refine` finds."""

    #: JSON types this node accepts; lets :class:`OneOf` pick a branch by type.
    json_types: frozenset[str] = frozenset()
    expected = "a value"

    def check(self, value: Json, path: str) -> Json:
        if not self.accepts_type(value):
            raise invalid_type(path, self.expected, value)
        return self.refine(value, path)

    def refine(self, value: Json, path: str) -> Json:
        """The checks beyond the JSON type (``value`` has the right one)."""
        return value

    def accepts_type(self, value: Json) -> bool:
        kind = json_type(value)
        return kind in self.json_types or (kind == "integer" and "decimal" in self.json_types)


class AnyValue(Spec):
    json_types = frozenset({"null", "boolean", "integer", "decimal", "string", "array", "object"})


class AnyObject(Spec):
    """A free-form JSON object (JSON schema parameters, metadata)."""

    json_types = frozenset({"object"})
    expected = "an object"


class Bool(Spec):
    json_types = frozenset({"boolean"})
    expected = "a boolean"


class Str(Spec):
    json_types = frozenset({"string"})
    expected = "a string"

    def __init__(self, max_length: int | None = None, min_length: int = 0) -> None:
        self.max_length = max_length
        self.min_length = min_length

    def refine(self, value: Json, path: str) -> Json:
        if self.max_length is not None and len(value) > self.max_length:
            raise _length_error(path, "string", len(value), self.max_length, too_long=True)
        if len(value) < self.min_length:
            raise _length_error(path, "string", len(value), self.min_length, too_long=False)
        return value


class Enum(Spec):
    json_types = frozenset({"string"})
    expected = "a string"

    def __init__(self, *values: str) -> None:
        self.values = values

    def refine(self, value: Json, path: str) -> Json:
        if value not in self.values:
            raise invalid_value(path, value, self.values)
        return value


class Num(Spec):
    """A number within optional bounds (an integer is a number too)."""

    json_types = frozenset({"decimal"})
    expected = "a number"
    #: How OpenAI's messages and codes name it (``decimal_below_min_value``...).
    number_kind = "decimal"

    def __init__(self, minimum: float | None = None, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def refine(self, value: Json, path: str) -> Json:
        kind = self.number_kind
        if self.minimum is not None and value < self.minimum:
            problem, relation = "below minimum", f">= {self.minimum}"
            code = f"{kind}_below_min_value"
        elif self.maximum is not None and value > self.maximum:
            problem, relation = "above maximum", f"<= {self.maximum}"
            code = f"{kind}_above_max_value"
        else:
            return value
        raise ApiError(
            f"Invalid '{path}': {kind} {problem} value. Expected a value {relation}, but got "
            f"{value} instead.",
            code,
            path,
        )


class Int(Num):
    json_types = frozenset({"integer"})
    expected = "an integer"
    number_kind = "integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        super().__init__(minimum, maximum)

    def check(self, value: Json, path: str) -> Json:
        # JSON has no int/float distinction on the wire, but 3.0 parses as a float here;
        # OpenAI accepts integral decimals for integer fields.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super().check(value, path)


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

    def refine(self, value: Json, path: str) -> Json:
        if self.max_items is not None and len(value) > self.max_items:
            raise _length_error(path, "array", len(value), self.max_items, too_long=True)
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

    def refine(self, value: Json, path: str) -> Json:
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

    def refine(self, value: Json, path: str) -> Json:
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
