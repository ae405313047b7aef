"""Prometheus metrics, one registry per app (so tests can build several apps).

Counters and histograms count what this process did; `DatabaseGauges` shows what the
database holds (queues, outbox, pending events: the same on every node), sampled by
`workers.gauges` every few seconds. docs/operations/metrics.md says what each metric means
and what to alert on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OUTBOX_STATES = ("pending", "sending", "failed", "dead")
"""The outbox states shown by ``convodesk_outbox_rows`` (``done`` rows are history)."""
SEND_RESULTS = ("accepted", "retry", "failed", "dead")


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
        self.sends = Counter(
            "convodesk_sends_total",
            "Calls to Sinch's messages:send by this process, by messaging service and result: "
            "accepted, retry (a transient error: sent again later), failed (refused for good), "
            "dead (given up after the retries: a dead letter).",
            ["service", "result"],
            registry=self.registry,
        )
        self.offers = Counter(
            "convodesk_offers_total",
            "Offers made to agents by this process's routing passes (made), and offers that "
            "ran out unanswered (expired).",
            ["event"],
            registry=self.registry,
        )
        self.routing_passes = Counter(
            "convodesk_routing_passes_total",
            "Routing passes of this process, by result: done, skipped (another node held the "
            "routing lock), failed (the database was away or a lock conflict).",
            ["result"],
            registry=self.registry,
        )
        for result in ("done", "skipped", "failed"):
            self.routing_passes.labels(result)
        for event in ("made", "expired"):
            self.offers.labels(event)
        self.database = DatabaseGauges()
        self.registry.register(self.database)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class QueueSample:
    waiting: int
    oldest_waiting_seconds: float  # 0 when nobody waits
    agents_ready: int
    agents_busy: int


@dataclass(frozen=True)
class DatabaseSample:
    """What `workers.gauges` read from the database at `taken_at` (Unix seconds)."""

    taken_at: float
    queues: dict[str, QueueSample] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)  # state -> rows
    outbox_oldest_due_seconds: float = 0.0
    events_pending: int = 0
    events_oldest_pending_seconds: float = 0.0
    offers_outstanding: int = 0


class DatabaseGauges(Collector):
    """Gauges of the latest `DatabaseSample`. Scrapes never touch the database: a scrape
    runs on the web app's event loop, and a database that does not answer must not stop it.
    Nothing is exported before the first sample."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sample: DatabaseSample | None = None

    def update(self, sample: DatabaseSample) -> None:
        with self._lock:
            self._sample = sample

    @property
    def sample(self) -> DatabaseSample | None:
        with self._lock:
            return self._sample

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families depend on the sample: nothing to check at register

    def collect(self) -> Iterator[Metric]:
        sample = self.sample
        if sample is None:
            return
        yield GaugeMetricFamily(
            "convodesk_database_sampled_timestamp_seconds",
            "When the database gauges below were read (Unix time); stale if the sampling "
            "fails (the database is away).",
            value=sample.taken_at,
        )
        per_queue: list[tuple[str, str, Callable[[QueueSample], float]]] = [
            (
                "convodesk_queue_waiting",
                "Conversations waiting in the queue for an agent.",
                lambda q: q.waiting,
            ),
            (
                "convodesk_queue_oldest_waiting_seconds",
                "How long the queue's oldest waiting conversation has waited (0: none waits).",
                lambda q: q.oldest_waiting_seconds,
            ),
            (
                "convodesk_queue_agents_ready",
                "Members of the queue whose presence is ready.",
                lambda q: q.agents_ready,
            ),
            (
                "convodesk_queue_agents_busy",
                "Members of the queue handling at least one active conversation.",
                lambda q: q.agents_busy,
            ),
        ]
        for name, documentation, value in per_queue:
            family = GaugeMetricFamily(name, documentation, labels=["queue"])
            for queue, stats in sorted(sample.queues.items()):
                family.add_metric([queue], float(value(stats)))
            yield family
        outbox = GaugeMetricFamily(
            "convodesk_outbox_rows",
            "Outbox rows by state: pending (due now or later), sending (claimed by a sender), "
            "failed (refused by Sinch), dead (dead letters: `convodesk outbox retry`).",
            labels=["state"],
        )
        for state in OUTBOX_STATES:
            outbox.add_metric([state], float(sample.outbox.get(state, 0)))
        yield outbox
        yield GaugeMetricFamily(
            "convodesk_outbox_oldest_due_seconds",
            "How long the oldest pending send has been due (0: none is late).",
            value=sample.outbox_oldest_due_seconds,
        )
        yield GaugeMetricFamily(
            "convodesk_events_unprocessed",
            "Accepted callbacks the processor (Chain Matcher) has not threaded yet, all nodes.",
            value=float(sample.events_pending),
        )
        yield GaugeMetricFamily(
            "convodesk_events_oldest_pending_seconds",
            "Age of the oldest accepted callback the processor has not threaded (0: none).",
            value=sample.events_oldest_pending_seconds,
        )
        yield GaugeMetricFamily(
            "convodesk_offers_outstanding",
            "Offers waiting for an agent's answer.",
            value=float(sample.offers_outstanding),
        )
