"""Operations: observers of every call (metrics, recording, monitor, webhooks) and
their app-lifetime wiring. Nothing here can end, stall or slow a call: each observer is
called through :class:`relay.taps.TapBus`, which guards it."""
