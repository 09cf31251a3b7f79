"""Failures a test can switch on, per emulator (settings) or per call, mid-call.

OpenAI's failure paths, as its server reports them, so that the relay's handling of
each can be tested:

* ``response_failed``: a response ends right after ``response.created`` with
  ``response.done`` of status ``failed`` (``status_details.error``: a ``server_error``);
* ``transcription_failed``: a committed utterance gets
  ``conversation.item.input_audio_transcription.failed`` instead of its transcript;
* ``server_error``: an ``error`` event of type ``server_error`` when a response starts
  (the session carries on: OpenAI's errors are not fatal).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FAULTS = ("response_failed", "transcription_failed", "server_error")
SERVER_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! (emulated failure)"
)


class Faults:
    """The faults switched on for one call (a test may change them mid-call)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.active: set[str] = set()
        for name in names:
            self.switch(name, True)

    def switch(self, name: str, on: bool) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown emulator fault {name!r} (known: {', '.join(FAULTS)})")
        if on:
            self.active.add(name)
        else:
            self.active.discard(name)

    def on(self, name: str) -> bool:
        return name in self.active


def server_error_body() -> dict[str, Any]:
    """The ``error`` object of an emulated server error."""
    return {
        "type": "server_error",
        "code": "server_error",
        "message": SERVER_ERROR_MESSAGE,
        "param": None,
    }


def transcription_error_body() -> dict[str, Any]:
    return {
        "type": "transcription_error",
        "code": "audio_unintelligible",
        "message": "The audio could not be transcribed. (emulated failure)",
        "param": None,
    }
