"""Session policy: what a browser holding a client secret may do on its call.

The app backend mints a client secret with a session config; what it set there is
locked for the call. The browser may send the events a voice client needs, and
``session.update`` of the fields the backend left open; anything else gets an OpenAI
``error`` event (code ``relay_policy_denied``, ``param`` naming the field) and is never
forwarded. The backend widens or narrows this per secret with the relay extension field
``session.relay`` (stripped before the session goes upstream)::

    "relay": {
      "allowed_client_events": ["input_audio_buffer.append", ...],  # replaces the default
      "allowed_server_events": ["*", "-response.function_call_arguments.*"],  # default: all
      "locked_fields": ["instructions", "tools", "audio.output.voice"],  # replaces the default
      "allowed_client_items": ["message", "function_call_output"],  # default: ["message"]
      "user_id": "u_123"  # optional: the app's signed-in user (see below)
    }

Event patterns: an exact type, ``prefix.*``, or ``*``; a leading ``-`` excludes (last
match wins). Locked fields are dotted session paths; by default: ``type``, ``model``,
``instructions``, ``tools``, ``tool_choice``, ``prompt`` and every field the backend set
(``audio.input.*`` and ``audio.output.*`` one level down; ``tracing`` only when the backend
set it, as OpenAI's clients send ``tracing: "auto"`` by default). A locked field may be
sent again with the value it has (a client re-sending the backend's voice is fine).

Items the browser adds (``conversation.item.create``, ``response.create``'s ``input``)
are user messages only, unless ``allowed_client_items`` also names
``function_call_output``: a backend whose tools run in the browser (OpenAI's browser SDKs
answer tool calls this way) lets the browser answer them, and only them: the output must
name the ``call_id`` of a function call the model made on this call.

Hiding ``response.function_call_arguments.done`` from the browser also hides the items
of function calls and their outputs (``conversation.item.*``, ``response.output_item.*``)
and removes them from ``response.done``: tool calls then reach only the sideband.

``user_id`` (optional; up to 128 of ``A-Z a-z 0-9 . _ : @ -``) is an opaque name the app
gives its signed-in user: the call's recording carries it, and a client secret with the
same ``user_id`` reads that user's past conversations (:mod:`relay.http.conversation_routes`)."""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest

#: The key of the relay's extension in a minted session (never sent upstream).
RELAY_FIELD = "relay"
DENIED = "relay_policy_denied"

#: What a browser voice client needs (OpenAI's client events minus takeovers).
DEFAULT_CLIENT_EVENTS: tuple[str, ...] = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
#: Locked whether or not the backend set them.
ALWAYS_LOCKED: tuple[str, ...] = (
    "type",
    "model",
    "instructions",
    "tools",
    "tool_choice",
    "prompt",
)
#: Server events that carry a function call's arguments.
_ARGUMENTS_DONE = "response.function_call_arguments.done"
_FUNCTION_ITEMS = ("function_call", "function_call_output")
#: Fields of ``response.create``'s ``response`` that are not session fields.
_RESPONSE_OWN = ("conversation", "metadata", "input")
_MISSING = object()
_POLICY_KEYS = (
    "allowed_client_events",
    "allowed_server_events",
    "locked_fields",
    "allowed_client_items",
    "user_id",
)
#: The item types a browser may be allowed to add.
CLIENT_ITEM_TYPES = ("message", "function_call_output")
#: An app's name for its signed-in user (``relay.user_id``): short and opaque.
USER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class PolicyDenied(Exception):
    """A client event the policy refuses: ``param`` names the field."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _matches(patterns: Iterable[str], name: str) -> bool:
    allowed = False
    for pattern in patterns:
        negate = pattern.startswith("-")
        body = pattern[1:] if negate else pattern
        if body == "*" or body == name or (body.endswith(".*") and name.startswith(body[:-1])):
            allowed = not negate
    return allowed


def _lookup(tree: Any, path: str) -> Any:
    """The value at a dotted path, ``_MISSING`` if absent (a non-object on the way
    counts as absent)."""
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _blocking_prefix(tree: Any, path: str) -> str | None:
    """The first prefix of ``path`` that ``tree`` sets to something other than an
    object (``audio.output: null`` wipes a locked ``audio.output.voice``)."""
    parts = path.split(".")
    for depth in range(1, len(parts)):
        prefix = ".".join(parts[:depth])
        value = _lookup(tree, prefix)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            return prefix
    return None


def default_locked(session: Mapping[str, Any]) -> list[str]:
    """The default locked fields of a minted session: ALWAYS_LOCKED and what it set."""
    locked = list(ALWAYS_LOCKED)
    for key, value in session.items():
        if key == RELAY_FIELD:
            continue
        if key == "audio" and isinstance(value, dict):
            for side, fields in value.items():
                names = fields.keys() if isinstance(fields, dict) else [None]
                for name in names:
                    path = f"audio.{side}" if name is None else f"audio.{side}.{name}"
                    if path not in locked:
                        locked.append(path)
        elif key not in locked:
            locked.append(key)
    return locked


@dataclass(frozen=True)
class SessionPolicy:
    """What a browser may send and see on one call (a client secret's policy)."""

    allowed_client_events: tuple[str, ...]
    allowed_server_events: tuple[str, ...]
    locked_fields: tuple[str, ...]
    #: The minted session: locked fields may be re-sent with these values.
    session: Mapping[str, Any]
    allowed_client_items: tuple[str, ...] = ("message",)
    #: The app's signed-in user (``relay.user_id``), recorded with the call.
    user_id: str | None = None

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "allowed_client_events": list(self.allowed_client_events),
            "allowed_server_events": list(self.allowed_server_events),
            "locked_fields": list(self.locked_fields),
            "allowed_client_items": list(self.allowed_client_items),
        }

    # -- client events -----------------------------------------------------------------

    def check_client(self, event: Mapping[str, Any], calls: Container[str] = ()) -> None:
        """Raise :class:`PolicyDenied` unless the browser may send ``event``; ``calls``:
        the ids of the function calls the model made on this call."""
        kind = str(event.get("type"))
        if not _matches(self.allowed_client_events, kind):
            raise PolicyDenied(
                f"The relay does not forward '{kind}' events from this client.", "type"
            )
        if kind == "session.update":
            self.check_session(event.get("session"), "session")
        elif kind == "response.create":
            response = event.get("response")
            if response is not None:
                self._check_response(response, calls)
        elif kind == "conversation.item.create":
            self._check_item(event.get("item"), "item", calls)

    def check_session(self, update: Any, where: str) -> None:
        """A session change (``session.update``, a call's ``session`` part) must leave
        every locked field as the backend set it."""
        if update is None:
            return
        if not isinstance(update, dict):
            raise PolicyDenied(f"'{where}' must be an object.", where)
        for path in self.locked_fields:
            self._check_locked(update, path, where)

    def _check_locked(self, update: Mapping[str, Any], path: str, where: str) -> None:
        blocking = _blocking_prefix(update, path)
        if blocking is not None:
            raise PolicyDenied(
                f"'{where}.{blocking}' would change '{path}', which the app set for this call.",
                f"{where}.{blocking}",
            )
        value = _lookup(update, path)
        if value is not _MISSING and value != _lookup(self.session, path):
            raise PolicyDenied(
                f"'{where}.{path}' is set by the app for this call and cannot be changed.",
                f"{where}.{path}",
            )

    def _check_response(self, response: Any, calls: Container[str]) -> None:
        if not isinstance(response, dict):
            raise PolicyDenied("'response' must be an object.", "response")
        session_like = {k: v for k, v in response.items() if k not in _RESPONSE_OWN}
        self.check_session(session_like, "response")
        items = response.get("input")
        if items is None:
            return
        if not isinstance(items, list):
            raise PolicyDenied("'response.input' must be an array.", "response.input")
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                continue
            self._check_item(item, f"response.input[{index}]", calls)

    def _check_item(self, item: Any, where: str, calls: Container[str]) -> None:
        """User messages, and outputs of this call's function calls where allowed; no
        system or assistant turns."""
        if not isinstance(item, dict):
            raise PolicyDenied(f"'{where}' must be an object.", where)
        kind = item.get("type", "message")
        if kind not in self.allowed_client_items:
            allowed = " or ".join(f"'{k}'" for k in self.allowed_client_items)
            raise PolicyDenied(
                f"This client may only add {allowed} items, not '{kind}' ones.", f"{where}.type"
            )
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or call_id not in calls:
                raise PolicyDenied(
                    "A function_call_output must answer a function call the model made "
                    "on this call.",
                    f"{where}.call_id",
                )
            return
        if item.get("role") != "user":
            raise PolicyDenied(
                f"This client may only add user messages, not '{item.get('role')}' ones.",
                f"{where}.role",
            )

    # -- server events -----------------------------------------------------------------

    @property
    def filters_server_events(self) -> bool:
        return tuple(self.allowed_server_events) != ("*",)

    def server_view(self, event: Mapping[str, Any], text: str) -> str | None:
        """What the browser gets of a server event: ``text``, a redacted copy, or
        ``None`` (hidden)."""
        kind = str(event.get("type"))
        if not _matches(self.allowed_server_events, kind):
            return None
        if _matches(self.allowed_server_events, _ARGUMENTS_DONE):
            return text
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") in _FUNCTION_ITEMS:
            return None
        if kind == "response.output_item.added" or kind == "response.output_item.done":
            return None if _is_function(event.get("item")) else text
        if kind == "response.done":
            return _without_function_outputs(event, text)
        return text


def _is_function(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") in _FUNCTION_ITEMS


def _without_function_outputs(event: Mapping[str, Any], text: str) -> str:
    response = event.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list) or not any(_is_function(item) for item in output):
        return text
    kept = [item for item in output if not _is_function(item)]
    return json.dumps({**event, "response": {**response, "output": kept}})  # type: ignore[dict-item]


# -- the relay extension field ----------------------------------------------------------


def _names(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected an array of strings.",
            code="invalid_type",
            param=param,
        )
    for index, name in enumerate(value):
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise InvalidRequest(
                f"Invalid type for '{param}[{index}]': expected a non-empty string.",
                code="invalid_type",
                param=f"{param}[{index}]",
            )
    if len(value) > 256:
        raise InvalidRequest(
            f"Invalid '{param}': at most 256 entries.", code="array_above_max_length", param=param
        )
    return tuple(value)


def normalise_relay_field(session: Mapping[str, Any], param: str = "session") -> dict[str, Any]:
    """The ``relay`` extension of a session being minted, checked and completed with
    the defaults (so the minted secret carries its whole policy)."""
    given = session.get(RELAY_FIELD)
    where = f"{param}.{RELAY_FIELD}"
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidRequest(
            f"Invalid type for '{where}': expected an object.", code="invalid_type", param=where
        )
    for key in given:
        if key not in _POLICY_KEYS:
            raise InvalidRequest(
                f"Unknown parameter: '{where}.{key}'.",
                code="unknown_parameter",
                param=f"{where}.{key}",
            )
    client = given.get("allowed_client_events", list(DEFAULT_CLIENT_EVENTS))
    server = given.get("allowed_server_events", ["*"])
    locked = given.get("locked_fields", default_locked(session))
    items = _names(given.get("allowed_client_items", ["message"]), f"{where}.allowed_client_items")
    for index, name in enumerate(items):
        if name not in CLIENT_ITEM_TYPES:
            raise InvalidRequest(
                f"Invalid value for '{where}.allowed_client_items[{index}]': expected one of "
                + ", ".join(f"'{t}'" for t in CLIENT_ITEM_TYPES)
                + ".",
                code="invalid_value",
                param=f"{where}.allowed_client_items[{index}]",
            )
    full: dict[str, Any] = {
        "allowed_client_events": list(_names(client, f"{where}.allowed_client_events")),
        "allowed_server_events": list(_names(server, f"{where}.allowed_server_events")),
        "locked_fields": list(_names(locked, f"{where}.locked_fields")),
        "allowed_client_items": list(items),
    }
    if "user_id" in given:
        full["user_id"] = _user_id(given["user_id"], f"{where}.user_id")
    return full


def _user_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not USER_ID.fullmatch(value):
        raise InvalidRequest(
            f"Invalid value for '{param}': expected 1 to 128 characters of "
            "A-Z, a-z, 0-9, '.', '_', ':', '@' and '-'.",
            code="invalid_value",
            param=param,
        )
    return value


def split_policy(session: Mapping[str, Any]) -> tuple[dict[str, Any], SessionPolicy | None]:
    """A session without its ``relay`` field, and the policy that field holds (``None``
    when it has none: a trusted caller's session)."""
    rest = {k: v for k, v in session.items() if k != RELAY_FIELD}
    relay = session.get(RELAY_FIELD)
    if relay is None:
        return rest, None
    full = normalise_relay_field(session)
    policy = SessionPolicy(
        tuple(full["allowed_client_events"]),
        tuple(full["allowed_server_events"]),
        tuple(full["locked_fields"]),
        rest,
        tuple(full["allowed_client_items"]),
        full.get("user_id"),
    )
    return rest, policy
