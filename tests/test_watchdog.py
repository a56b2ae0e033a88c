"""systemd integration of the daemon: READY=1 after start-up, WATCHDOG=1 only while the
poll loop and the store really work, STOPPING=1 on the way out.

The test plays systemd: it binds a unix datagram socket, names it in NOTIFY_SOCKET with
a short WATCHDOG_USEC, runs the daemon in its own event loop against a simulated bus,
and then hangs one bus task on purpose (a transaction that never returns, as a wedged
UART driver would): the pings must stop, so that systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from test_daemon_inprocess import rig, until

from concentrator import daemon as daemon_module
from concentrator.polling.bus_worker import BusWorker, Job

WATCHDOG_USEC = 400_000  # pings every 0.2 s


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out += sock.recv(4096).decode().splitlines()
        except BlockingIOError:
            return out


async def test_a_hung_bus_task_stops_the_watchdog_pings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(daemon_module, "HUNG_JOB_S", 1.0)
    messages: list[str] = []
    try:
        async with rig(tmp_path, meters=2, cadence="1m") as r:

            def pings() -> int:
                messages.extend(received(sock))
                return messages.count("WATCHDOG=1")

            await until(lambda: "READY=1" in (messages.extend(received(sock)) or messages))
            await until(lambda: pings() >= 3)  # healthy: fed
            assert r.daemon.unhealthy() is None

            hang = asyncio.Event()  # never set

            async def wedged(self: BusWorker, job: Job) -> None:
                await hang.wait()

            monkeypatch.setattr(BusWorker, "_execute", wedged)
            # The next job the worker takes never returns.
            await until(lambda: r.daemon.unhealthy() is not None, 120)
            assert "bus1" in str(r.daemon.unhealthy())
            received(sock)  # pings sent before the verdict
            messages.clear()
            # Ten ping periods without a single WATCHDOG=1: systemd would restart us.
            deadline = time.monotonic() + 10 * WATCHDOG_USEC / 1e6 / 2
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                assert pings() == 0, messages
        messages.extend(received(sock))
        assert "STOPPING=1" in messages
    finally:
        sock.close()
