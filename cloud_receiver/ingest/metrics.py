"""The receiver's Prometheus endpoint (``cloud-receiver run --metrics HOST:PORT``).

Served by the ingest process itself, where the counters live (`Ingestor.counters`, the
service's latency histogram), with prometheus_client's own HTTP server in a thread. The
figures that come from the database (the quarantine's size, collection completeness)
are computed at scrape time, at most once per ``refresh_s`` whatever the number of
scrapers, on a connection of their own so a scrape never waits for (or holds up) an
ingest; yesterday's deliveries are read once a day. Names and labels: docs/metrics.md.

Collection completeness, per concentrator, for the local day so far, by the one rule
of `cloud_receiver.storage.completeness` (the ``completeness`` command's): the meters
of the archive it owns (an unassigned one: where it was last heard, a day back at
most), the readings due, received (live and recovered apart) and complete meters. Archive
meters with no interval reading today or yesterday are counted as silent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud_receiver.ingest.ingestor import REASONS, Counters
from cloud_receiver.storage import Storage, completeness
from cloud_receiver.storage.completeness import Plan

log = logging.getLogger(__name__)

NS = "meterflow_receiver"
DEFAULT_REFRESH_S = 30.0
# From a loopback ack (milliseconds) to a receiver far behind its broker (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


CollectionRule = Plan  # the name the service and public API have used


@dataclass(frozen=True)
class Collection:
    """One concentrator's collection today so far."""

    meters: int
    expected: int
    received: int
    recovered: int = 0
    complete: int = 0

    @property
    def ratio(self) -> float | None:
        return self.received / self.expected if self.expected else None


@dataclass(frozen=True)
class DatabaseFigures:
    quarantined: int
    archive_meters: int
    silent_meters: int
    collection: dict[str, Collection] = field(default_factory=dict)
    conflicts: int = 0


def collection(
    storage: Storage, rule: Plan, now: float, look_back: completeness.LookBack | None = None
) -> tuple[dict[str, Collection], int, int]:
    """Per concentrator `Collection` today at ``now``, the archive's size and its silent
    meters (`cloud_receiver.storage.completeness` is the rule); ``look_back`` keeps
    yesterday's deliveries between calls."""
    day = rule.day_of(now)
    with storage.read() as conn:
        report = completeness.compute(
            conn, rule, day, day + dt.timedelta(days=1), now, look_back=look_back
        )
    out = {
        t.key: Collection(t.meters, t.expected, t.received, t.recovered, t.complete)
        for t in report.totals("concentrator")
        if t.key  # unassigned meters nobody delivered: counted as silent
    }
    return out, report.archive, max(0, report.archive - len(report.heard))


class CachedFigures:
    """The database figures, recomputed at most once per ``refresh_s`` (thread-safe: the
    HTTP server answers each scrape in a thread of its own)."""

    def __init__(
        self,
        storage: Storage,
        rule: CollectionRule,
        refresh_s: float = DEFAULT_REFRESH_S,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.rule = rule
        self.refresh_s = refresh_s
        self.clock = clock
        self.errors = 0
        self.took_s: float | None = None
        self._lock = threading.Lock()
        self._figures: DatabaseFigures | None = None
        self._at: float | None = None  # monotonic
        self._look_back = completeness.LookBack()  # yesterday's deliveries, once a day

    def get(self) -> DatabaseFigures | None:
        """The figures (None until a first query succeeded); a failed query keeps the
        last ones, logs and counts the error."""
        with self._lock:
            started = time.monotonic()
            if self._at is not None and started - self._at < self.refresh_s:
                return self._figures
            try:
                self._figures = self._query()
            except Exception:  # a database hiccup must not fail the scrape
                log.exception("metrics: cannot read the database figures")
                self.errors += 1
            self._at = time.monotonic()
            self.took_s = self._at - started
            return self._figures

    def _query(self) -> DatabaseFigures:
        per_concentrator, archive, silent = collection(
            self.storage, self.rule, self.clock(), self._look_back
        )
        return DatabaseFigures(
            quarantined=self.storage.quarantine_size(),
            conflicts=self.storage.conflict_count(),
            archive_meters=archive,
            silent_meters=silent,
            collection=per_concentrator,
        )


class ReceiverCollector(Collector):
    def __init__(
        self, counters: Counters, figures: CachedFigures, connected: Callable[[], bool]
    ) -> None:
        self.counters = counters
        self.figures = figures
        self.connected = connected

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        yield CounterMetricFamily(
            f"{NS}_messages", "Messages taken from the broker (batches of any outcome).",
            value=c.messages,
        )  # fmt: skip
        batches = CounterMetricFamily(
            f"{NS}_batches", "Batches by outcome: stored, duplicate (acked again), quarantined.",
            labels=["outcome"],
        )  # fmt: skip
        for outcome, n in (
            ("stored", c.stored),
            ("duplicate", c.duplicates),
            ("quarantined", c.quarantined),
        ):
            batches.add_metric([outcome], n)
        yield batches
        yield CounterMetricFamily(
            f"{NS}_readings_stored", "Readings newly stored (duplicates not counted).",
            value=c.readings,
        )  # fmt: skip
        refusals = CounterMetricFamily(
            f"{NS}_refusals", "Messages quarantined, by reason.", labels=["reason"]
        )
        by_reason = c.by_reason.copy()  # the ingest thread may add a reason meanwhile
        for reason in sorted({*REASONS, *by_reason}):
            refusals.add_metric([reason], by_reason.get(reason, 0))
        yield refusals
        yield CounterMetricFamily(
            f"{NS}_quarantine_rate_limited",
            "Refused messages beyond their sender's rate limit: counted, not kept.",
            value=c.rate_limited,
        )
        yield CounterMetricFamily(
            f"{NS}_quarantine_evicted",
            "Quarantined messages this process evicted (oldest first) to stay in budget.",
            value=c.evicted,
        )
        yield GaugeMetricFamily(
            f"{NS}_broker_connected", "1 while the MQTT session is up.", value=self.connected()
        )
        yield from self._database()

    def _database(self) -> Iterator[Metric]:
        f = self.figures.get()
        yield CounterMetricFamily(
            f"{NS}_database_query_errors", "Failed queries of the database figures.",
            value=self.figures.errors,
        )  # fmt: skip
        if self.figures.took_s is not None:
            yield GaugeMetricFamily(
                f"{NS}_database_query_seconds", "Time the last database figures took.",
                value=self.figures.took_s,
            )  # fmt: skip
        if f is None:
            return
        yield GaugeMetricFamily(
            f"{NS}_quarantine_messages", "Messages held in quarantine.", value=f.quarantined
        )
        yield GaugeMetricFamily(
            f"{NS}_reading_conflicts",
            "Readings recorded as conflicts: a different value for a stored one (it stands).",
            value=f.conflicts,
        )
        yield GaugeMetricFamily(f"{NS}_archive_meters", "Meters in the archive.", f.archive_meters)
        yield GaugeMetricFamily(
            f"{NS}_archive_meters_silent",
            "Archive meters with no interval reading from any concentrator today or yesterday.",
            value=f.silent_meters,
        )
        families = {
            "meters": GaugeMetricFamily(
                f"{NS}_collection_meters",
                "Archive meters a concentrator owns (unassigned ones: where last heard).",
                labels=["concentrator"],
            ),
            "expected": GaugeMetricFamily(
                f"{NS}_collection_expected_readings",
                "Interval readings due today so far: its meters x completed slots.",
                labels=["concentrator"],
            ),
            "received": GaugeMetricFamily(
                f"{NS}_collection_received_readings",
                "Interval readings of its meters stored for today's completed slots.",
                labels=["concentrator"],
            ),
            "recovered": GaugeMetricFamily(
                f"{NS}_collection_recovered_readings",
                "Of the received: readings recovered from the meters' memory (backfill).",
                labels=["concentrator"],
            ),
            "complete": GaugeMetricFamily(
                f"{NS}_collection_complete_meters",
                "Its meters with every reading due today so far received.",
                labels=["concentrator"],
            ),
            "ratio": GaugeMetricFamily(
                f"{NS}_collection_completeness_ratio",
                "Received / expected interval readings today (absent in the first slot).",
                labels=["concentrator"],
            ),
        }
        for concentrator, col in f.collection.items():
            families["meters"].add_metric([concentrator], col.meters)
            families["expected"].add_metric([concentrator], col.expected)
            families["received"].add_metric([concentrator], col.received)
            families["recovered"].add_metric([concentrator], col.recovered)
            families["complete"].add_metric([concentrator], col.complete)
            if col.ratio is not None:
                families["ratio"].add_metric([concentrator], col.ratio)
        yield from families.values()


class MetricsServer:
    """The registry and its HTTP server; ``observe_latency`` goes to the service."""

    def __init__(
        self, counters: Counters, figures: CachedFigures, connected: Callable[[], bool]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ReceiverCollector(counters, figures, connected))
        ProcessCollector(namespace="", registry=self.registry)
        self.latency = Histogram(
            f"{NS}_ingest_latency_seconds",
            "From a batch's arrival to its ack: queueing, verify, decrypt, store.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: WSGIServer | None = None

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)

    def start(self, host: str, port: int) -> None:
        """Listen (OSError if the address cannot be bound)."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def stop(self) -> None:
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None
