"""JSON for what observers hand on: events' data are read-only mappings, which
:func:`json.dumps` does not take as objects by itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def json_default(value: object) -> object:
    """``json.dumps``' ``default``: any mapping as an object, anything else as its str."""
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def to_json(data: Any) -> str:
    """``data`` as compact JSON text, non-ASCII kept as is."""
    return json.dumps(data, ensure_ascii=False, default=json_default)
