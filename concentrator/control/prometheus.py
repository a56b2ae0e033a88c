"""The concentrator's Prometheus endpoint (``[metrics]``): per bus, the store, the uplink,
the modem.

Imported by the daemon only when ``[metrics]`` is configured: prometheus_client costs
about 1.5 MB of RSS, which a concentrator without a scraper does not pay. The endpoint
reads what the daemon's tasks already count, through narrow read-only views (the
Protocols below), at scrape time on the event loop; the only store query, the backlog,
runs in the store's thread and is reused for ``BACKLOG_EVERY_S``. Names follow the
Prometheus conventions (``_total`` counters, base units in the name) and the labels are
bounded: ``bus`` and meter ``state``, never a meter (docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from concentrator import __version__
from concentrator.clock import Clock
from concentrator.config import MetricsConfig
from concentrator.control.scrape_server import ScrapeServer
from concentrator.storage import Backlog, Store, StoreError
from contract.records import Event

log = logging.getLogger(__name__)

T = TypeVar("T")

NS = "meterflow_concentrator"
BACKLOG_EVERY_S = 5.0  # real seconds a backlog count is reused (it counts the outbox)
BACKLOG_WAIT_S = 5.0  # a store busy longer than this: the last count is served


# ---------------------------------------------------------------------- views
class Health(Protocol):
    def counts(self) -> dict[str, int]: ...


class PollingFigures(Protocol):
    """What the endpoint reads of the polling side (`concentrator.polling.scheduler.Polling`)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def health(self) -> Health: ...

    @property
    def slots_started(self) -> int: ...

    def bus_status(self) -> dict[str, dict[str, object]]: ...


class WriterFigures(Protocol):
    """What the endpoint reads of the store writer (`concentrator.storage.StoreWriter`)."""

    @property
    def pending(self) -> int: ...

    @property
    def committed(self) -> int: ...

    @property
    def disk_full(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    async def query(self, fn: Callable[[Store], T]) -> T: ...

    def event(self, event: Event) -> None: ...


class StatusSource(Protocol):
    """The uplink or the modem supervisor: their ``status()`` of the status file."""

    def status(self) -> dict[str, object]: ...


# ---------------------------------------------------------------------- figures
def _num(doc: Mapping[str, object], key: str) -> float | None:
    value = doc.get(key)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(f"{NS}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield CounterMetricFamily(f"{NS}_{name}", doc, value=value)


# Per bus: (metric, key in the bus status, help, counter?)
_BUS = (
    ("bus_reads", "reads_ok", "Meter reads that returned a value.", True),
    ("bus_read_failures", "reads_failed",
     "Meter reads that failed (timeouts, bad frames, refusals).", True),
    ("bus_readings", "readings", "Readings handed to the store.", True),
    ("bus_readings_missing", "missing", "Readings given up and recorded missing.", True),
    ("bus_transactions", "transactions",
     "Request/response transactions on the line or with the carrier module.", True),
    ("bus_timeouts", "timeouts", "Transactions without an answer in time.", True),
    ("bus_frame_errors", "frame_errors", "Answers that were not a valid frame.", True),
    ("bus_utilisation_ratio", "utilisation",
     "Share of time the line (PLC: the in-flight window) was busy since the start.", False),
    ("bus_queued_jobs", "queued", "Read jobs waiting for the bus.", False),
    ("plc_module_up", "module_up", "1 while the carrier module answers (PLC buses only).", False),
)  # fmt: skip

_UPLINK = (
    ("uplink_connected", "connected", "1 while the MQTT session is up.", False),
    ("uplink_bytes_sent", "bytes_sent",
     "Sealed batch bytes published (MQTT and TLS overhead not included).", True),
    ("uplink_batches_sent", "batches_sent", "Batches published, first sends.", True),
    ("uplink_batches_resent", "batches_resent", "Batches published again (no ack in time).", True),
    ("uplink_batches_acked", "batches_acked", "Batches the receiver acknowledged as stored.", True),
    ("uplink_readings_acked", "readings_acked", "Readings in acknowledged batches.", True),
    ("uplink_batches_rejected", "rejected", "Batches the receiver refused.", True),
    ("uplink_batches_coded", "coded", "Batches coded against the receiver's references.", True),
    ("uplink_batches_resynced", "resyncs",
     "Batches the receiver could not resolve, sent again as key batches.", True),
    ("uplink_batches_in_flight", "in_flight", "Batches sent and not yet acknowledged.", False),
    ("uplink_last_ack_timestamp_seconds", "last_ack_at", "Unix time of the last ack.", False),
)  # fmt: skip

_MODEM = (
    ("modem_link_up", "link_up", "1 while the data link works.", False),
    ("modem_signal_dbm", "rssi_dbm",
     "Received signal strength at the last poll (AT+CSQ), dBm.", False),
    ("modem_weak_signal", "weak_signal",
     "1 while the signal is at or below weak_signal_dbm.", False),
    ("modem_outage", "outage", "1 during an outage (link down longer than dead_link_s).", False),
    ("modem_polls", "polls", "AT status polls answered.", True),
    ("modem_poll_failures", "poll_failures", "AT status polls that failed.", True),
    ("modem_outages", "outages", "Outages since the daemon started.", True),
    ("modem_resets", "resets", "Module resets (AT+CFUN).", True),
    ("modem_power_cycles", "power_cycles", "Module power cycles.", True),
    ("modem_hangs", "hangs", "Times the module stopped answering AT commands.", True),
)  # fmt: skip


def _from_status(
    table: tuple[tuple[str, str, str, bool], ...], doc: Mapping[str, object]
) -> Iterator[Metric]:
    for name, key, help_text, counter in table:
        make = _counter if counter else _gauge
        yield from make(name, help_text, _num(doc, key))


class ConcentratorCollector(Collector):
    """Reads the views at each scrape; ``backlog`` is kept fresh by the endpoint."""

    def __init__(
        self,
        concentrator_id: str,
        polling: PollingFigures,
        writer: WriterFigures,
        uplink: Callable[[], StatusSource | None],
        modem: Callable[[], StatusSource | None],
    ) -> None:
        self.concentrator_id = concentrator_id
        self.polling = polling
        self.writer = writer
        self.uplink = uplink
        self.modem = modem
        self.backlog: Backlog | None = None

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            f"{NS}_info", "The concentrator and its software.", labels=["concentrator", "version"]
        )
        info.add_metric([self.concentrator_id, __version__], 1)
        yield info
        meters = GaugeMetricFamily(f"{NS}_meters", "Meters by health state.", labels=["state"])
        for state, n in sorted(self.polling.health.counts().items()):
            meters.add_metric([state], n)
        yield meters
        yield from _counter(
            "slots_started", "Polling slots started (all tasks).", self.polling.slots_started
        )
        yield from self._buses()
        yield from self._store()
        uplink = self.uplink()
        if uplink is not None:
            yield from _from_status(_UPLINK, uplink.status())
        modem = self.modem()
        if modem is not None:
            yield from _from_status(_MODEM, modem.status())

    def _buses(self) -> Iterator[Metric]:
        buses = sorted(self.polling.bus_status().items())
        for name, key, help_text, counter in _BUS:
            family: CounterMetricFamily | GaugeMetricFamily
            if counter:
                family = CounterMetricFamily(f"{NS}_{name}", help_text, labels=["bus"])
            else:
                family = GaugeMetricFamily(f"{NS}_{name}", help_text, labels=["bus"])
            for bus, doc in buses:
                value = _num(doc, key)
                if value is not None:
                    family.add_metric([bus], value)
            if family.samples:
                yield family

    def _store(self) -> Iterator[Metric]:
        w = self.writer
        yield from _counter(
            "store_readings_committed", "Readings committed to the store.", w.committed
        )
        yield from _gauge("store_pending_writes", "Readings waiting for a commit.", w.pending)
        yield from _gauge(
            "store_disk_full", "1 while the store cannot write (disk or quota full).", w.disk_full
        )
        b = self.backlog
        if b is None:
            return
        yield from _gauge(
            "store_backlog_readings", "Readings not yet acknowledged by the receiver.", b.readings
        )
        yield from _gauge(
            "store_backlog_events", "Events not yet acknowledged by the receiver.", b.events
        )
        age = None
        if b.oldest_read_at is not None:
            age = max(0.0, self.polling.clock.wall() - b.oldest_read_at)
        yield from _gauge(
            "store_backlog_oldest_age_seconds",
            "Age of the oldest undelivered reading (0 when none is waiting).",
            age if age is not None else 0.0,
        )  # fmt: skip


# ---------------------------------------------------------------------- endpoint
class MetricsEndpoint:
    """Serves ``/metrics`` at ``[metrics]`` address:port until cancelled (`run`)."""

    def __init__(
        self,
        cfg: MetricsConfig,
        *,
        concentrator_id: str,
        polling: PollingFigures,
        writer: WriterFigures,
        uplink: Callable[[], StatusSource | None],
        modem: Callable[[], StatusSource | None],
    ) -> None:
        self.cfg = cfg
        self.polling = polling
        self.writer = writer
        self.collector = ConcentratorCollector(concentrator_id, polling, writer, uplink, modem)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(namespace="", registry=self.registry)  # RSS, CPU, open files
        self.server = ScrapeServer(cfg.address, cfg.port, self.render)
        self._backlog_at: float | None = None
        self._backlog_lock = asyncio.Lock()

    async def run(self) -> None:
        """Bind and serve until cancelled. A port that cannot be bound is logged and
        recorded as a ``metrics_unavailable`` event, and the endpoint gives up: polling
        must never stop for the sake of a scraper."""
        where = f"{self.cfg.address}:{self.cfg.port}"
        try:
            await self.server.start()
        except OSError as exc:
            log.error("metrics: cannot listen on %s: %s; no metrics until fixed", where, exc)
            self.writer.event(
                Event(
                    "metrics_unavailable",
                    "warning",
                    None,
                    {"listen": where, "error": str(exc)},
                    self.polling.clock.wall(),
                )
            )
            return
        log.info("metrics: Prometheus endpoint on http://%s/metrics", where)
        try:
            await asyncio.Event().wait()
        finally:
            await self.server.close()

    async def render(self) -> tuple[bytes, str]:
        await self._refresh_backlog()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def _refresh_backlog(self) -> None:
        async with self._backlog_lock:  # two scrapers at once: one query
            now = time.monotonic()
            if self._backlog_at is not None and now - self._backlog_at < BACKLOG_EVERY_S:
                return
            if self.writer.closed:
                return
            try:
                async with asyncio.timeout(BACKLOG_WAIT_S):
                    self.collector.backlog = await self.writer.query(Store.backlog)
                self._backlog_at = now
            except TimeoutError:
                log.warning("metrics: the store is busy; serving the last backlog count")
            except StoreError as exc:
                log.warning("metrics: cannot count the backlog: %s", exc)
