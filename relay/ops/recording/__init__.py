"""Call recordings: a per-call folder written by one writer thread, crash-safe.

- :mod:`.recorder`: the observer (policy, bounded queue, lifetime, admin helpers);
- :mod:`.writer`: the writer thread that does all file IO;
- :mod:`.callfiles`: one call's open files (audio, events, transcripts, metadata);
- :mod:`.timeline`: audio placed on the wall clock, both speakers in step;
- :mod:`.wav`: the WAV writer whose header stays true, and its repair;
- :mod:`.store`: folders, metadata, crash recovery, retention and listing.
"""

from .recorder import Recorder
from .store import (
    AUDIO_FILE,
    EVENTS_FILE,
    FILES,
    METADATA_FILE,
    TRANSCRIPT_JSONL,
    TRANSCRIPT_TXT,
    finalise_unfinished,
    is_safe_id,
    read_metadata,
    sweep_retention,
)
from .wav import WavWriter, repair_wav
from .writer import WriterTiming

__all__ = [
    "AUDIO_FILE",
    "EVENTS_FILE",
    "FILES",
    "METADATA_FILE",
    "TRANSCRIPT_JSONL",
    "TRANSCRIPT_TXT",
    "Recorder",
    "WavWriter",
    "WriterTiming",
    "finalise_unfinished",
    "is_safe_id",
    "read_metadata",
    "repair_wav",
    "sweep_retention",
]
