"""What the emulator hears: English speech recognition, offline, with Moonshine.

``moonshine-cpp`` bundles Moonshine's English *base* model and its ONNX runtime. It
runs in one worker process per emulator process (this file run as a script, started on
the first utterance; it loads the model once, ~0.4 s), fed by one thread: the event
loop never waits on it, and utterances of all calls are recognised one at a time (the
model uses every core while it runs). The worker is replaced every
:data:`TASKS_PER_WORKER` pieces of speech (moonshine-cpp 0.1.4 leaks ~13 MB per second
of audio it recognises, so a long-lived emulator would otherwise only grow), and ended
after :data:`IDLE_SECS` without any (its ~0.6 GB freed). Speech is recognised in
pieces of at most :data:`CHUNK_SECS`, cut at pauses (its memory also grows with the
input's length: ~0.6 GB at 3 s, ~1.7 GB at 15 s).

A recognition that takes longer than its timeout is abandoned, and its worker killed
(the next utterance starts another); pending work is capped, beyond which an
utterance is not recognised at all. Without the package (or if its model fails to
load) :func:`recognize` returns ``None`` and the emulator falls back to its "I spoke
for N seconds" transcripts; the log says so once per process.

Also here: :func:`answer`, the agent's short deterministic reply to what it heard.

This module imports only the standard library and numpy: the worker runs it as a
script (``python -P hearing.py``), outside the package.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

import numpy as np

log = logging.getLogger(__name__)

#: Moonshine's input rate.
MODEL_RATE = 16000
#: Longer utterances are cut to their last 30 s.
MAX_UTTERANCE_SECS = 30.0
#: Recognised in pieces of at most this, cut at pauses.
CHUNK_SECS = 8.0
#: Utterances waiting for the worker, all calls together; more are not recognised.
MAX_PENDING = 4
#: Pieces of speech a worker process recognises before it is replaced (bounds its leak
#: to ~1 GB over the model's ~0.5 GB).
TASKS_PER_WORKER = 16
#: A worker idle this long is ended (its ~0.6 GB freed); the next utterance starts one.
IDLE_SECS = 60.0


def resample(pcm: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """``pcm`` (int16 or float) as float32 in [-1, 1] at ``to_rate``: a windowed-sinc
    low-pass below the lower Nyquist frequency, then linear interpolation."""
    x = pcm.astype(np.float32)
    if pcm.dtype == np.int16:
        x /= 32768.0
    if rate == to_rate or x.size == 0:
        return x
    if to_rate < rate:
        cutoff = 0.45 * to_rate / rate  # cycles per input sample
        taps = np.arange(-32, 33)
        kernel = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.hamming(taps.size)
        x = np.convolve(x, (kernel / kernel.sum()).astype(np.float32), mode="same")
    n = int(x.size * to_rate / rate)
    out: np.ndarray = np.interp(np.arange(n) * (rate / to_rate), np.arange(x.size), x)
    return out.astype(np.float32)


def chunks(audio: np.ndarray, rate: int = MODEL_RATE) -> list[np.ndarray]:
    """``audio`` cut into pieces of at most :data:`CHUNK_SECS`, each cut at the
    quietest 100 ms of the last third of its span (a pause between words)."""
    limit = int(CHUNK_SECS * rate)
    window = rate // 10
    pieces = []
    while audio.size > limit:
        search = audio[limit * 2 // 3 : limit]
        n = search.size // window
        energy = (search[: n * window].reshape(n, window) ** 2).mean(axis=1)
        cut = limit * 2 // 3 + int(np.argmin(energy)) * window + window // 2
        pieces.append(audio[:cut])
        audio = audio[cut:]
    return [*pieces, audio]


# -- the worker process --


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The worker's loop: a request is a little-endian uint32 sample count and that
    many float32 samples at 16 kHz; a reply one JSON line ``{text, load_secs, error}``
    (``text`` null if the model is unavailable, ``error`` saying why)."""
    model: Any = None
    library: Any = None
    load_secs: float | None = None
    error: str | None = None
    while header := requests.read(4):
        count = int.from_bytes(header, "little")
        audio = np.frombuffer(requests.read(count * 4), dtype=np.float32)
        if model is None and error is None:
            started = time.monotonic()
            try:
                moonshine_cpp = importlib.import_module("moonshine_cpp")  # untyped
                model = moonshine_cpp.MoonshineModel(suppress_copyright_notice=True)
                library = moonshine_cpp.moonshine_lib
                load_secs = time.monotonic() - started
            except Exception as exc:  # ImportError, OSError (shared libraries), MemoryError
                error = f"{type(exc).__name__}: {exc}"
        text = None
        if model is not None:
            result = ctypes.c_char_p()
            # The C API directly: moonshine-cpp 0.1.4's Python ``transcribe`` is broken.
            status = library.moonshine_transcribe(
                model.model_handle,
                audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                audio.size,
                ctypes.byref(result),
            )
            text = ""
            if status == 0:
                text = (result.value or b"").decode("utf-8", "replace").strip()
                library.moonshine_free_text(result)
        reply = {"text": text, "load_secs": load_secs, "error": error}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()


def _worker_main() -> None:
    # Ctrl-C is the emulator's to handle: the worker ends when its requests do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Replies go on a private copy of stdout; the native libraries' prints go to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, replies)


# -- the emulator's side --


class _Worker:
    """The worker process, driven from one thread (:data:`_thread`)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.tasks = 0
        self.last_used = 0.0
        self._idle: threading.Timer | None = None

    def recognise(self, audio: np.ndarray) -> dict[str, Any]:
        """One piece of 16 kHz float32 speech, recognised (blocking)."""
        proc = self.proc
        if proc is None or proc.poll() is not None or self.tasks >= TASKS_PER_WORKER:
            self.stop()
            proc = self.proc = subprocess.Popen(
                [sys.executable, "-P", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            self.tasks = 0
        assert proc.stdin is not None and proc.stdout is not None
        self.tasks += 1
        try:
            proc.stdin.write(audio.size.to_bytes(4, "little") + audio.astype(np.float32).tobytes())
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, ValueError):  # killed meanwhile (:meth:`kill`)
            line = b""
        if not line:
            self.proc = None if self.proc is proc else self.proc
            self._close(proc)
            raise RuntimeError(f"the speech recognition worker exited ({proc.returncode})")
        reply: dict[str, Any] = json.loads(line)
        self.last_used = time.monotonic()
        if self._idle is not None:
            self._idle.cancel()
        self._idle = threading.Timer(IDLE_SECS + 1.0, self._check_idle)
        self._idle.daemon = True
        self._idle.start()
        return reply

    def _check_idle(self) -> None:
        with contextlib.suppress(RuntimeError):  # the thread pool has shut down
            _thread.submit(self.stop_if_idle)

    def stop_if_idle(self) -> None:
        """In the hearing thread: end the worker if it has been idle for
        :data:`IDLE_SECS`."""
        if time.monotonic() - self.last_used >= IDLE_SECS:
            self.stop()

    def kill(self) -> None:
        """End a recognition in progress (from any thread): the hearing thread sees
        the worker exit, and the next utterance starts another."""
        proc = self.proc
        if proc is not None:
            proc.kill()

    def stop(self) -> None:
        """End the worker (in the hearing thread, or at exit)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self._close(proc)

    @staticmethod
    def _close(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


_worker = _Worker()
atexit.register(_worker.stop)
_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearing")
_pending = 0
#: Why recognition is unavailable in this process (``None``: it works, or is untried).
_unavailable: str | None = None
#: Seconds the worker took to load the model (``None`` before the first recognition).
load_secs: float | None = None


def _mark_unavailable(reason: str) -> None:
    global _unavailable
    if _unavailable is None:
        log.warning(
            "speech recognition unavailable (%s): transcripts fall back to 'I spoke for N seconds'",
            reason,
        )
    _unavailable = reason


def recognize_sync(pcm: np.ndarray, rate: int) -> str | None:
    """The words in ``pcm`` (mono, int16 or float at ``rate``); ``None`` if recognition
    is unavailable. Blocking: runs in the hearing thread."""
    global load_secs
    audio = resample(pcm, rate, MODEL_RATE)[-int(MAX_UTTERANCE_SECS * MODEL_RATE) :]
    texts = []
    for piece in chunks(audio):
        if piece.size < MODEL_RATE // 10:
            continue
        try:
            reply = _worker.recognise(piece)
        except OSError as exc:  # no interpreter, no pipes
            _mark_unavailable(f"{type(exc).__name__}: {exc}")
            return None
        if reply["text"] is None:
            _mark_unavailable(str(reply["error"]))
            return None
        if reply["load_secs"] is not None and reply["load_secs"] != load_secs:
            load_secs = float(reply["load_secs"])
            log.info("speech recognition: Moonshine base (en) loaded in %.2f s", load_secs)
        texts.append(reply["text"])
    return " ".join(t for t in texts if t)


def _finished(future: asyncio.Future[str | None]) -> None:
    global _pending
    _pending -= 1
    if not future.cancelled():
        future.exception()  # retrieved here if its caller gave up on it


async def recognize(pcm: np.ndarray, rate: int, timeout_secs: float = 15.0) -> str | None:
    """The words in ``pcm`` (mono, int16 or float at ``rate``), recognised off the
    event loop. ``None``: recognition is unavailable, busy (too much pending work),
    failed, or took longer than ``timeout_secs`` (its worker is then ended)."""
    global _pending
    if _unavailable is not None:
        return None
    if _pending >= MAX_PENDING:
        log.warning("speech recognition busy: an utterance was not recognised")
        return None
    future = asyncio.get_running_loop().run_in_executor(_thread, recognize_sync, pcm, rate)
    _pending += 1
    future.add_done_callback(_finished)  # counts until the thread is done with it
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout_secs)
    except TimeoutError:
        log.warning("speech recognition took longer than %.1f s: abandoned", timeout_secs)
        _worker.kill()
        return None
    except (RuntimeError, ValueError) as exc:  # the worker died, or replied nonsense
        log.warning("speech recognition failed: %s", exc)
        return None


# -- what the agent answers --

_PUNCTUATION = re.compile(r"[^\w\s']")
#: (pattern over the normalised words, reply): the first that matches wins.
_CANNED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bwhat time is it\b|\bwhat's the time\b|\bwhat is the time\b"), "{time}"),
    (re.compile(r"\bcan you hear me\b|\bdo you hear me\b"), "Yes, I can hear you clearly."),
    (re.compile(r"\bhow are you\b"), "I am fine, thank you. How can I help you?"),
    (re.compile(r"\b(thank you|thanks)\b"), "You are welcome."),
    (re.compile(r"\b(goodbye|bye)\b"), "Goodbye!"),
    (
        re.compile(r"^(hello|hi|hey|good (morning|afternoon|evening))\b"),
        "Hello! How can I help you?",
    ),
)
#: Replies are short, like a voice agent's.
MAX_ANSWER_CHARS = 200


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_NUMBER = re.compile(r"\d+")


def normalise(text: str) -> str:
    """Lower case, no punctuation, digits spelled one by one ("457", "4-5-7": "four
    five seven"), single spaces: as word error rates are scored."""
    text = _NUMBER.sub(lambda m: " " + " ".join(_DIGITS[int(d)] for d in m.group()) + " ", text)
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def answer(heard: str, now: float | None = None) -> str | None:
    """The agent's reply to ``heard`` (``None`` if it heard nothing): a canned answer
    to a few questions and greetings, else ``"You said: <words>."``."""
    words = normalise(heard)
    if not words:
        return None
    for pattern, reply in _CANNED:
        if pattern.search(words):
            if reply == "{time}":
                clock = time.gmtime(time.time() if now is None else now)
                return f"It is {clock.tm_hour}:{clock.tm_min:02d} UTC."
            return reply
    said = heard.strip().rstrip(".!?,;: ")
    reply = f"You said: {said}."
    return reply if len(reply) <= MAX_ANSWER_CHARS else reply[: MAX_ANSWER_CHARS - 3] + "..."


if __name__ == "__main__":
    _worker_main()
