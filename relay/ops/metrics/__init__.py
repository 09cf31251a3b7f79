"""Prometheus metrics of the relay: the families (:class:`RelayMetrics`), their label
values (:mod:`.vocabulary`), the observer that feeds them from the tap bus
(:class:`MetricsObserver`) and the event-loop lag probe (:class:`LoopLagProbe`).

The README ("Metrics") documents every family; ``tests/ops/test_deploy.py`` checks that
the dashboard and alert rules only use what is exported."""

from .looplag import LoopLagProbe
from .observer import MetricsObserver
from .registry import RelayMetrics
from .vocabulary import (
    MONITOR_KINDS,
    OBSERVER_NAMES,
    OTHER,
    OUTCOMES,
    PREFIX,
    SETUP_FAILURE_REASONS,
    TRANSPORTS,
    WEBHOOK_EVENTS,
    error_code_label,
    event_type_label,
    fold,
    setup_failure_reason,
)

__all__ = [
    "MONITOR_KINDS",
    "OBSERVER_NAMES",
    "OTHER",
    "OUTCOMES",
    "PREFIX",
    "SETUP_FAILURE_REASONS",
    "TRANSPORTS",
    "WEBHOOK_EVENTS",
    "LoopLagProbe",
    "MetricsObserver",
    "RelayMetrics",
    "error_code_label",
    "event_type_label",
    "fold",
    "setup_failure_reason",
]
