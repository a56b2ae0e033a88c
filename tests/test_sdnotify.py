"""sd_notify against a real unix datagram socket, as systemd listens on NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from concentrator.sdnotify import SdNotifier, watchdog_interval

RECV_TIMEOUT_S = 10.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(RECV_TIMEOUT_S)
    yield sock, path
    sock.close()


def test_every_message_arrives_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = SdNotifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("polling 12 meters on 2 buses")
    assert sock.recv(4096) == b"READY=1\nSTATUS=polling 12 meters on 2 buses"
    assert n.ready()
    assert sock.recv(4096) == b"READY=1"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.status("uplink down\nsince 10:00")  # a newline would start a new assignment
    assert sock.recv(4096) == b"STATUS=uplink down since 10:00"
    assert n.reloading()
    assert sock.recv(4096) == b"RELOADING=1"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"meterflow-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_S)
        n = SdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_reads_the_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = SdNotifier()
    assert n.watchdog_s == 30.0
    assert n.stopping() and sock.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = SdNotifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()


def test_unusable_socket_is_logged_not_raised(tmp_path: Path) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled and n.ready() is False
    assert not SdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_malformed_assignment_is_a_programming_error(listener: tuple[socket.socket, str]) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": listener[1]})
    for bad in ("READY", "STATUS=a\nREADY=1"):
        with pytest.raises(ValueError, match="KEY=value"):
            n.notify(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 60.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # meant for another pid
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


async def test_keepalive_pings_while_healthy(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    healthy = True
    asked = 0

    def is_healthy() -> bool:
        nonlocal asked
        asked += 1
        return healthy

    n = SdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # 0.1 s: ping at 0.05
    task = asyncio.create_task(n.keepalive(is_healthy))
    try:
        for _ in range(3):
            async with asyncio.timeout(RECV_TIMEOUT_S):
                data = await loop.sock_recv(sock, 4096)
            assert data == b"WATCHDOG=1"
        healthy = False
        while True:  # drain a ping already on its way when health went
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
        before = asked
        deadline = loop.time() + RECV_TIMEOUT_S
        while asked < before + 3:  # three more rounds, none of them a ping
            assert loop.time() < deadline, "keepalive stopped asking"
            await asyncio.sleep(0.01)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n.close()


async def test_keepalive_returns_without_a_watchdog(listener: tuple[socket.socket, str]) -> None:
    async with asyncio.timeout(5.0):
        await SdNotifier({"NOTIFY_SOCKET": listener[1]}).keepalive()
