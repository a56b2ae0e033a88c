"""sd_notify(3) without libsystemd: tell systemd we are ready, alive, or stopping.

With ``Type=notify`` systemd starts the service, sets ``NOTIFY_SOCKET`` to a unix
datagram socket (a path, or ``@name`` in the abstract namespace) and waits for
``READY=1``. With ``WatchdogSec=`` it also sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``)
and kills the service unless ``WATCHDOG=1`` arrives at least that often; the usual
advice is to send it at half the interval. Each datagram is newline-separated
``KEY=value`` assignments (sd_notify(3)).

Outside systemd ``NOTIFY_SOCKET`` is unset and every call is a no-op returning False,
so the daemon calls these unconditionally.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

WATCHDOG_FRACTION = 0.5  # ping at half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace (Linux)
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not ours to speak


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """``WATCHDOG_USEC`` in seconds, or None if the watchdog is off or not for us.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child
    that inherited the environment must not take it as its own (sd_watchdog_enabled(3)).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1e6 if value > 0 else None


class SdNotifier:
    """Sends notifications to ``NOTIFY_SOCKET`` (taken from ``environ`` at creation)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket; not notifying", raw)
        self.watchdog_s = watchdog_interval(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False if not sent. A socket error
        is logged, not raised: a lost notification must not take the daemon down."""
        if self.address is None:
            return False
        for a in assignments:
            if "=" not in a or "\n" in a:
                raise ValueError(f"{a!r}: expected one KEY=value without a newline")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", assignments[0] if assignments else "", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def keepalive(self, healthy: Callable[[], bool] | None = None) -> None:
        """Send ``WATCHDOG=1`` every half watchdog interval while ``healthy()`` holds.

        Run it as a supervised task: if the event loop stalls, or ``healthy`` says a
        vital task is stuck, the pings stop and systemd restarts the service. Returns
        at once when systemd set no watchdog.
        """
        if self.watchdog_s is None or not self.enabled:
            return
        period = self.watchdog_s * WATCHDOG_FRACTION
        while True:
            if healthy is None or healthy():
                self.watchdog()
            else:
                log.error("not feeding the systemd watchdog: the daemon is unhealthy")
            await asyncio.sleep(period)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
