"""The open files of one call's recording, written by the recorder's writer thread only.

- ``audio.wav``: stereo PCM16 at 24 kHz, caller left and agent right, on the wall
  clock of ``metadata.json``'s ``started_at`` (see :mod:`.timeline`).
- ``events.jsonl``: ``{"t": wallclock, "direction": "client"|"server", "event": {...}}``
  per data-channel event, both directions, same clock; the event is the text relayed.
- ``transcript.jsonl`` (``{"t", "role", "item_id", "text"}``) and ``transcript.txt``.
- ``metadata.json``: written at start with ``status: "recording"``, rewritten at the end
  (``complete``); :mod:`.store` marks what a crash left ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from relay.taps import CANONICAL_RATE, Speaker, TappedEvent, TranscriptEntry

from .store import (
    AUDIO_FILE,
    EVENTS_FILE,
    METADATA_FILE,
    TRANSCRIPT_JSONL,
    TRANSCRIPT_TXT,
    files_of,
    write_json_atomic,
)
from .timeline import Timeline
from .wav import WavWriter


class CallFiles:
    """One call's recording folder and its open files."""

    def __init__(
        self,
        folder: Path,
        metadata: dict[str, Any],
        tolerance_samples: int,
        on_bytes: Callable[[int], None],
    ) -> None:
        self.folder, self.metadata = folder, metadata
        self._t0 = float(metadata["started_at"])
        self.timeline = Timeline(self._t0, tolerance_samples)
        self._on_bytes = on_bytes
        folder.mkdir(parents=True, exist_ok=True)
        # The stack owns every file from the moment it is opened, so a failure half-way
        # through opening closes what was already open.
        with contextlib.ExitStack() as stack:
            self.wav = WavWriter(folder / AUDIO_FILE)
            stack.callback(self.wav.close)
            self._events = stack.enter_context(self._open_text(EVENTS_FILE))
            self._transcript_jsonl = stack.enter_context(self._open_text(TRANSCRIPT_JSONL))
            self._transcript_txt = stack.enter_context(self._open_text(TRANSCRIPT_TXT))
            self.write_metadata()
            self._files = stack.pop_all()

    def _open_text(self, name: str) -> TextIO:
        return (self.folder / name).open("a", encoding="utf-8")

    def add_audio(self, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        self.timeline.add(speaker, pcm, wallclock)

    def add_event(self, event: TappedEvent) -> None:
        """One line of ``events.jsonl``, holding the event's own text as relayed (no
        re-encoding). JSON allows a raw line break only between tokens, where a space
        means the same: one event stays one line."""
        text = event.text
        if "\n" in text or "\r" in text:
            text = text.replace("\r", " ").replace("\n", " ")
        head = json.dumps({"t": event.wallclock, "direction": event.direction})
        self._write(self._events, f'{head[:-1]}, "event": {text}}}')

    def add_transcript(self, entry: TranscriptEntry) -> None:
        line = {"t": entry.t, "role": entry.role, "item_id": entry.item_id, "text": entry.text}
        self._write(self._transcript_jsonl, json.dumps(line, ensure_ascii=False))
        offset = max(0.0, entry.t - self._t0)
        stamp = f"{int(offset // 60):02d}:{offset % 60:06.3f}"
        self._write(self._transcript_txt, f"[{stamp}] {entry.role}: {entry.text}")

    def _write(self, file: TextIO, line: str) -> None:
        data = line + "\n"
        file.write(data)
        self._on_bytes(len(data.encode()))

    def render_until(self, sample: int) -> None:
        """Write both channels up to ``sample``; silence where no frame was."""
        for block in self.timeline.render(sample):
            self._on_bytes(self.wav.write(block))

    def flush(self) -> None:
        self.wav.flush()
        for file in (self._events, self._transcript_jsonl, self._transcript_txt):
            file.flush()

    def finish(self, outcome: str, ended_at: float, dropped: int) -> None:
        """Render everything received up to the end, close the files and write the
        final metadata. Frames stamped after the end (a bogus clock) are cut, beyond
        a second's grace."""
        timeline = self.timeline
        last = timeline.sample_at(ended_at)
        end = max(last, min(timeline.pending_end(), last + CANONICAL_RATE))
        try:
            self.render_until(end)
        finally:
            self.close_files()
        self.metadata.update(
            status="complete",
            outcome=outcome,
            ended_at=ended_at,
            duration_secs=round(self.wav.frames / CANONICAL_RATE, 3),
            dropped_items=dropped,
            late_samples=timeline.late_samples,
        )
        self.metadata["audio"]["frames"] = self.wav.frames
        self.metadata["files"] = files_of(self.folder)
        self.write_metadata()

    def fail(self, ended_at: float) -> None:
        """Close what is open and say ``failed`` in the metadata, if the disk still lets us."""
        self.close_files()
        self.metadata.update(status="failed", ended_at=ended_at)
        with contextlib.suppress(OSError):
            write_json_atomic(self.folder / METADATA_FILE, self.metadata)

    def write_metadata(self) -> None:
        self._on_bytes(write_json_atomic(self.folder / METADATA_FILE, self.metadata))

    def close_files(self) -> None:
        """Close every file (idempotent); a failing close does not stop the others."""
        with contextlib.suppress(OSError):
            self._files.close()
