"""What one monitor subscriber receives: a drop-oldest queue from the hub to its
WebSocket (:class:`relay.queues.DropOldestQueue`), so a slow subscriber loses its oldest
items, counted, and the call never waits for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

import numpy as np

from relay.queues import DropOldestQueue
from relay.taps import Speaker

ListenTrack = Literal["caller", "agent", "both"]
ListenFormat = Literal["pcm16", "twilio"]
LISTEN_TRACKS: Final[tuple[ListenTrack, ...]] = ("caller", "agent", "both")
LISTEN_FORMATS: Final[tuple[ListenFormat, ...]] = ("pcm16", "twilio")
#: A listen-in item: whose audio (a speaker, or "mix"), samples, wall clock.
AudioItem = tuple[str, np.ndarray, float]
SubscriptionKind = Literal["events", "listen"]


class EventSubscription(DropOldestQueue[dict[str, Any]]):
    """JSON messages for ``/api/calls/{id}/events``: a snapshot first, then live."""

    kind: Final[SubscriptionKind] = "events"

    def __init__(self, call_id: str, max_items: int, on_drop: Callable[[], None]) -> None:
        super().__init__(max_items, on_drop)
        self.call_id = call_id


class ListenSubscription(DropOldestQueue[AudioItem]):
    """Audio frames for ``/api/calls/{id}/listen``."""

    kind: Final[SubscriptionKind] = "listen"

    def __init__(
        self,
        call_id: str,
        track: ListenTrack,
        fmt: ListenFormat,
        max_items: int,
        on_drop: Callable[[], None],
    ) -> None:
        super().__init__(max_items, on_drop)
        self.call_id = call_id
        self.track: ListenTrack = track
        self.format: ListenFormat = fmt

    @property
    def mixed(self) -> bool:
        """Whether this subscriber gets the two speakers mixed into one stream."""
        return self.track == "both" and self.format == "pcm16"

    def takes(self, speaker: Speaker) -> bool:
        """Whether this subscriber gets ``speaker``'s own frames (not the mix)."""
        return self.track == speaker or (self.track == "both" and self.format == "twilio")


Subscription = EventSubscription | ListenSubscription
