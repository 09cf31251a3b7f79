"""The operator components of one relay process (metrics, recording, monitor, webhooks)
built from the settings, and their lifetime: started with the app, subscribers ended at
shutdown, everything closed at cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Secret, Settings
from ..taps import CallDirectory
from .metrics import LoopLagProbe, MetricsObserver, RelayMetrics
from .monitor import MonitorHub, SnapshotOf
from .recording import Recorder
from .webhooks import WebhookDispatcher

DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[2] / "web"


class Ops:
    """The operator components of one app, and their lifetime."""

    def __init__(
        self,
        *,
        directory: CallDirectory,
        metrics: RelayMetrics,
        hub: MonitorHub,
        recorder: Recorder | None = None,
        webhooks: WebhookDispatcher | None = None,
        admin_token: Secret | None = None,
        metrics_token: Secret | None = None,
        max_calls: int = 0,
        max_loop_load: float = 0.0,
        loop_lag_interval_secs: float = 0.1,
        web_root: Path | None = None,
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.metrics_observer = MetricsObserver(metrics)
        self.hub = hub
        self.recorder = recorder
        self.webhooks = webhooks
        self.admin_token = admin_token
        self.metrics_token = metrics_token
        self.web_root = web_root or DEFAULT_WEB_ROOT
        self.loop_lag = LoopLagProbe(metrics, loop_lag_interval_secs)
        #: Admission control's bound on the event loop's load (0: none; see
        #: ``CallRegistry.limit_loop_load``), wired by the routes' setup.
        self.max_loop_load = max_loop_load
        metrics.calls_capacity.set(max_calls)

    def register_observers(self) -> None:
        """Tap every call started from now on (metrics first: it is the cheapest)."""
        self.directory.add_observer(self.metrics_observer)
        if self.recorder is not None:
            self.directory.add_observer(self.recorder)
        self.directory.add_observer(self.hub)
        if self.webhooks is not None:
            self.directory.add_observer(self.webhooks)

    async def start(self) -> None:
        if self.recorder is not None:
            await self.recorder.open()
        if self.webhooks is not None:
            await self.webhooks.start()
        self.loop_lag.start()

    async def close(self) -> None:
        """Idempotent: ends subscriptions, stops the probe, drains webhooks, closes the
        recorder (which finalises what is still open)."""
        self.hub.close()
        await self.loop_lag.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.recorder is not None:
            await self.recorder.close()


def build_ops(settings: Settings, directory: CallDirectory) -> Ops:
    """Metrics, recording, monitoring and webhooks as ``settings`` ask for them."""
    metrics = RelayMetrics()
    recorder = None
    if settings.recording_policy != "off":
        recorder = Recorder(
            Path(settings.recording_dir),
            policy=settings.recording_policy,
            retention_days=settings.recording_retention_days,
            metrics=metrics,
        )
    webhooks = None
    if settings.webhook_urls:
        webhooks = WebhookDispatcher(
            settings.webhook_urls,
            secret=settings.webhook_secret,
            metrics=metrics,
            events=settings.webhook_events,
            max_attempts=settings.webhook_max_attempts,
            timeout_secs=settings.webhook_timeout_secs,
        )
    return Ops(
        directory=directory,
        metrics=metrics,
        hub=MonitorHub(_snapshots_of(directory), metrics),
        recorder=recorder,
        webhooks=webhooks,
        admin_token=settings.admin_token,
        metrics_token=settings.metrics_token,
        max_calls=settings.max_calls,
        max_loop_load=settings.max_loop_load,
        web_root=Path(settings.web_root) if settings.web_root else None,
    )


def _snapshots_of(directory: CallDirectory) -> SnapshotOf:
    """The live snapshot of a call by id, for the monitor's ``relay.snapshot``."""

    def snapshot_of(call_id: str) -> dict[str, Any] | None:
        call = directory.get(call_id)
        return call.snapshot() if call is not None else None

    return snapshot_of
