"""Prometheus metrics, one registry per app (so tests can build several apps).

docs/howto/operations.md says what each metric means and what to alert on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.callbacks = Counter(
            "convodesk_callbacks_total",
            "Callbacks received, by messaging service, trigger and outcome.",
            ["service", "trigger", "outcome"],
            registry=self.registry,
        )
        self.intake_latency = Histogram(
            "convodesk_intake_latency_seconds",
            "Time from reading a callback to answering it (includes the commit).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.processing_lag = Histogram(
            "convodesk_processing_lag_seconds",
            "Time from storing a callback to threading it into a conversation.",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0),
            registry=self.registry,
        )
        self.processed = Counter(
            "convodesk_events_processed_total",
            "Accepted callbacks processed, by resulting state (done, unrouted, failed).",
            ["state"],
            registry=self.registry,
        )
        self.unrouted = Counter(
            "convodesk_unrouted_total",
            "Inbound messages no queue takes (kept in the event log, re-processable).",
            ["service", "channel"],
            registry=self.registry,
        )
        self.pending_events = Gauge(
            "convodesk_events_pending",
            "Accepted callbacks not yet processed (at the last processor pass).",
            registry=self.registry,
        )
        self.media_downloads = Counter(
            "convodesk_media_downloads_total",
            "Inbound media downloads, by result (stored, retry, failed).",
            ["result"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
