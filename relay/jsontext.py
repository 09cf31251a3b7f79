"""Strict JSON in: what the relay accepts from a client, HTTP body or data-channel
event, can be written out again as JSON by anyone downstream (a recording, a monitor,
a webhook, OpenAI): no ``NaN``/``Infinity`` (not JSON, though Python reads them), no
number too large for a float, no lone surrogate, nothing nested absurdly deep."""

from __future__ import annotations

import json
import math
from typing import Any

#: Deepest nesting of arrays and objects accepted (OpenAI's own nest a handful).
MAX_DEPTH = 64


class NotStrictJson(ValueError):
    """What the text is instead of strict JSON, as a phrase ("not valid JSON")."""


def _no_constant(name: str) -> Any:
    raise NotStrictJson(f"not valid JSON ({name} is not a JSON number)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJson(f"not valid JSON ({text[:20]} is out of range)")
    return value


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed value, or :class:`NotStrictJson` saying why not."""
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except NotStrictJson:
        raise
    except RecursionError:
        raise NotStrictJson(f"nested more than {max_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError):
        raise NotStrictJson("not valid JSON") from None
    if _depth(value, max_depth) > max_depth:
        raise NotStrictJson(f"nested more than {max_depth} levels deep")
    try:  # a lone surrogate written as a JSON escape ("\\ud800") ends here
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotStrictJson("not valid Unicode text (a lone surrogate)") from None
    return value


def _depth(value: object, limit: int) -> int:
    """Nesting depth of parsed JSON, counting no further than ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > limit:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest
