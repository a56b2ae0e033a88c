"""The concentrator's Prometheus endpoint, scraped over real HTTP from a daemon polling
simulated meters in the test's event loop: the figures move as readings are stored, the
endpoint follows a reload, and a port it cannot bind never stops the polling."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from scrape import Scrape, fetch, scrape, try_scrape
from test_daemon_inprocess import rig, until

from cloud_receiver.applications.fleet.broker import free_port
from concentrator.control.scrape_server import ScrapeServer
from concentrator.daemon import Daemon

NS = "meterflow_concentrator"


def add_metrics(port: int, address: str = "127.0.0.1") -> Callable[[Path, Path], None]:
    def prepare(cfg: Path, db: Path) -> None:
        with cfg.open("a") as fh:
            fh.write(f'\n[metrics]\naddress = "{address}"\nport = {port}\n')

    return prepare


async def scrape_async(port: int) -> Scrape:
    return await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")


async def eventually(check: Callable[[], Awaitable[object]], within: float = 60.0) -> None:
    """Wait for an async condition (a scrape, a refused connection) with a deadline."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state is another socket's
            await asyncio.sleep(0.05)


async def first_scrape(port: int) -> Scrape:
    """The first scrape, once the endpoint listens (it binds after the store opens)."""
    got: list[Scrape] = []

    async def answers() -> bool:
        s = await asyncio.to_thread(try_scrape, f"http://127.0.0.1:{port}/metrics")
        got.extend([s] if s is not None else [])
        return s is not None

    await eventually(answers)
    return got[-1]


def stored_count(daemon: Daemon) -> int:
    assert daemon.store is not None
    return len(daemon.store.get_readings())


async def test_metrics_move_with_the_readings_stored(tmp_path: Path) -> None:
    port = free_port()
    async with rig(tmp_path, meters=3, prepare=add_metrics(port)) as r:
        first = await first_scrape(port)
        assert (
            first.get(f"{NS}_info", concentrator="dc-sim-0001", version=first_version(first)) == 1
        )
        assert first.types[f"{NS}_bus_reads"] == "counter"
        assert first.types[f"{NS}_bus_utilisation_ratio"] == "gauge"
        assert first.value(f"{NS}_uplink_connected") is None  # no [uplink]: no uplink series
        assert first.value(f"{NS}_modem_signal_dbm") is None
        assert first.get("process_resident_memory_bytes") > 10e6
        await until(lambda: stored_count(r.daemon) >= 12)
        assert r.daemon.writer is not None
        await r.daemon.writer.flush()

        # Every reading a bus handed over is in the store, and no other one.
        async def matches() -> Scrape | None:
            got = await scrape_async(port)
            assert r.daemon.writer is not None
            await r.daemon.writer.flush()
            n = stored_count(r.daemon)
            return got if got.total(f"{NS}_bus_readings_total") == n else None

        later = None
        async with asyncio.timeout(60):
            while later is None:
                later = await matches()
        bus = later.labels(f"{NS}_bus_readings_total", "bus")
        assert set(bus) == {"bus1"} and bus["bus1"] >= 12
        assert later.get(f"{NS}_bus_reads_total", bus="bus1") >= 3
        assert later.get(f"{NS}_bus_read_failures_total", bus="bus1") == 0
        assert later.get(f"{NS}_bus_transactions_total", bus="bus1") >= later.get(
            f"{NS}_bus_reads_total", bus="bus1"
        )
        assert 0 < later.get(f"{NS}_bus_utilisation_ratio", bus="bus1") <= 1
        assert later.get(f"{NS}_store_readings_committed_total") >= bus["bus1"]

        # Nothing is delivered without an uplink: the store is the backlog (its count is
        # reused for a few seconds, so a scrape never loads the store).
        async def backlog() -> float:
            return (await scrape_async(port)).get(f"{NS}_store_backlog_readings")

        await eventually(backlog)
        assert 0 < await backlog() <= stored_count(r.daemon)
        assert later.get(f"{NS}_store_backlog_oldest_age_seconds") >= 0
        assert later.get(f"{NS}_meters", state="online") == 3
        assert later.get(f"{NS}_slots_started_total") >= 1


def first_version(s: Scrape) -> str:
    [(_, labels)] = [k for k in s.samples if k[0] == f"{NS}_info"]
    return dict(labels)["version"]


async def test_http_answers(tmp_path: Path) -> None:
    port = free_port()
    async with rig(tmp_path, meters=1, prepare=add_metrics(port)):
        base = f"http://127.0.0.1:{port}"
        await first_scrape(port)
        status, headers, body = await asyncio.to_thread(fetch, f"{base}/metrics", gzip_ok=True)
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert b"# TYPE meterflow_concentrator_bus_reads_total counter" in gzip.decompress(body)
        status, headers, body = await asyncio.to_thread(fetch, f"{base}/metrics")
        assert status == 200 and "Content-Encoding" not in headers
        assert int(headers["Content-Length"]) == len(body)
        status, _, body = await asyncio.to_thread(fetch, f"{base}/")
        assert (status, body) == (200, b"meterflow concentrator: Prometheus metrics at /metrics\n")
        status, _, body = await asyncio.to_thread(fetch, f"{base}/nothing")
        assert status == 404 and b"/metrics" in body
        # Not HTTP, and a method it does not serve: answered, and the endpoint lives on.
        answers = await asyncio.to_thread(raw, port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert answers.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in answers
        answers = await asyncio.to_thread(raw, port, b"\x16\x03\x01 hello\r\n\r\n")
        assert answers.startswith(b"HTTP/1.1 400 ")
        answers = await asyncio.to_thread(raw, port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert answers.startswith(b"HTTP/1.1 200 ") and answers.endswith(b"\r\n\r\n")
        assert (await scrape_async(port)).get(f"{NS}_meters", state="online") >= 0


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_reload_moves_then_removes_the_endpoint(tmp_path: Path) -> None:
    old, new = free_port(), free_port()
    async with rig(tmp_path, meters=1, prepare=add_metrics(old)) as r:
        await first_scrape(old)
        text = r.config.read_text().replace(f"port = {old}", f"port = {new}")
        r.config.write_text(text)
        r.daemon.request_reload()
        await eventually(lambda: asyncio.to_thread(refused, old))
        assert (await first_scrape(new)).get(f"{NS}_meters", state="online") >= 0
        r.config.write_text(text.split("\n[metrics]")[0])
        r.daemon.request_reload()
        await eventually(lambda: asyncio.to_thread(refused, new))
        assert r.daemon._metrics is None


async def test_a_port_in_use_is_an_event_polling_goes_on_and_sighup_tries_again(
    tmp_path: Path,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        async with rig(tmp_path, meters=2, prepare=add_metrics(port)) as r:
            assert r.daemon.writer is not None and r.daemon.store is not None
            store, writer = r.daemon.store, r.daemon.writer

            async def recorded() -> bool:
                await writer.flush()
                return bool(store.events(kind="metrics_unavailable"))

            await eventually(recorded)
            [event] = store.events(kind="metrics_unavailable")
            assert event.event.detail["listen"] == f"127.0.0.1:{port}"
            assert "in use" in event.event.detail["error"]
            before = stored_count(r.daemon)
            await until(lambda: stored_count(r.daemon) > before)
            assert r.daemon.unhealthy() is None  # the metrics are no reason to restart

            taken.close()
            r.daemon.request_reload()  # the same [metrics]: the port is tried again
            assert (await first_scrape(port)).get(f"{NS}_meters", state="online") == 2
    finally:
        taken.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_any_request_head_gets_an_http_answer(junk: bytes) -> None:
    """Whatever arrives before the blank line, the answer is a status line, never an
    exception: a port scanner or a confused client must not hurt the endpoint."""

    async def render() -> tuple[bytes, str]:
        return b"m 1\n", "text/plain; version=0.0.4"

    server = ScrapeServer("127.0.0.1", 0, render)
    for head in (junk + b"\r\n\r\n", b"GET " + junk + b" HTTP/1.1\r\n" + junk + b"\r\n\r\n"):
        status, headers, body = asyncio.run(server._answer(head))
        assert status.split(" ", 1)[0] in {"200", "400", "404", "405"}
        assert all(":" in h for h in headers)
        assert isinstance(body, bytes)
