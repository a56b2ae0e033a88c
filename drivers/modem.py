"""AT-command session with a GPRS/LTE module: an async client on its serial port.

The concentrator's uplink runs over a cellular module (Quectel EC2x/EG9x, SIMCom
SIM7600/SIM800 and the like) whose AT port is a UART or a USB serial function. The link
supervisor asks it about signal and registration and resets it when the link is dead.

``ModemClient`` is the thin async transport over pyserial-asyncio-fast: one command at a
time, each with its timeout, URCs handed on as they arrive, resets that wait for the
module to come back. What goes over the wire and how the answers read is the sans-I/O
codec ``drivers.at_command``; its names are re-exported here, so a caller needs one
import for the modem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from drivers.at_command import (
    BOOT_URCS,
    CME_ERRORS,
    CMS_ERRORS,
    MAX_COMMAND_CHARS,
    MAX_LINE_BYTES,
    AccessTech,
    AtParser,
    Domain,
    Event,
    Final,
    Operator,
    Registration,
    RegStatus,
    Response,
    SignalQuality,
    Urc,
    command_prefix,
    describe_error,
    parse_cgatt,
    parse_cops,
    parse_csq,
    parse_registration,
    parse_registration_urc,
    parse_text,
    split_fields,
)
from drivers.at_timeouts import AtTimeouts as AtTimeouts  # re-exported: its old home
from drivers.errors import BusError, FrameError, ModemError, ModemHung, ModemTimeout
from drivers.serial_bus import Parity, open_uart

__all__ = [
    "BOOT_URCS",
    "CLOSE_TIMEOUT_S",
    "CME_ERRORS",
    "CMS_ERRORS",
    "MAX_COMMAND_CHARS",
    "MAX_LINE_BYTES",
    "READY_RETRY_S",
    "URC_BACKLOG",
    "AccessTech",
    "AtParser",
    "AtTimeouts",
    "Domain",
    "Event",
    "Final",
    "ModemClient",
    "ModemInfo",
    "ModemStats",
    "Operator",
    "RegStatus",
    "Registration",
    "Response",
    "SignalQuality",
    "Urc",
    "command_prefix",
    "describe_error",
    "parse_cgatt",
    "parse_cops",
    "parse_csq",
    "parse_registration",
    "parse_registration_urc",
    "parse_text",
    "split_fields",
]

log = logging.getLogger(__name__)

URC_BACKLOG = 64  # URCs kept for a caller that reads them late


@dataclass(frozen=True)
class ModemInfo:
    manufacturer: str
    model: str
    revision: str
    imei: str


READY_RETRY_S = 0.5  # between attempts to reopen a port that vanished during a reset
CLOSE_TIMEOUT_S = 2.0  # for the serial transport to confirm it closed


@dataclass
class ModemStats:
    commands: int = 0
    timeouts: int = 0
    errors: int = 0  # ERROR / +CME ERROR / +CMS ERROR answers
    frame_errors: int = 0  # garbage lines
    urcs: int = 0


# ---------------------------------------------------------------------- the client
@dataclass(frozen=True)
class _AtPort:
    """A module's AT port as a UART: 8N1 on every module we know."""

    port: str
    baud: int
    parity: Parity = "N"
    bytesize: int = 8
    stopbits: int = 1


class _Link(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], on_lost: Callable[[BaseException], None]):
        self._on_data = on_data
        self._on_lost = on_lost
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc or BusError("serial port closed"))
        self.closed.set()


class ModemClient:
    """AT client on one serial port; ``async with ModemClient(port) as modem``.

    Commands run one at a time. URCs go to ``urcs`` (the last ``URC_BACKLOG``) and to
    ``on_urc`` as they arrive. Errors: ``ModemError`` (the module refused), ``ModemTimeout``
    (no final result in time), ``ModemHung`` (from ``probe``: not even AT answered),
    ``FrameError`` (the answer is not what 27.007 specifies), ``BusError`` (the port).
    """

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        *,
        timeouts: AtTimeouts | None = None,
        on_urc: Callable[[Urc], None] | None = None,
    ) -> None:
        self.port = port
        self.baud = baud
        self.timeouts = timeouts or AtTimeouts()
        self.on_urc = on_urc
        self.stats = ModemStats()
        self.urcs: deque[Urc] = deque(maxlen=URC_BACKLOG)
        self._parser = AtParser()
        self._lock = asyncio.Lock()
        self._transport: asyncio.Transport | None = None
        self._link: _Link | None = None
        self._lost: BaseException | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._rebooting = asyncio.Event()  # a boot banner arrived or the port vanished

    # -- lifecycle
    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._lost is None

    async def open(self) -> None:
        self._parser.reset()
        self._lost = None
        # Locked for us alone, as every UART (`open_uart`): ModemManager or pppd on the
        # same AT port would take our answers.
        transport, link = await open_uart(
            _AtPort(self.port, self.baud), lambda: _Link(self._on_data, self._on_lost), "modem port"
        )
        assert isinstance(link, _Link)
        self._transport, self._link = transport, link

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            if self._link is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self._link.closed.wait()
            self._transport = None
            self._link = None

    async def __aenter__(self) -> ModemClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- receive
    def _on_data(self, data: bytes) -> None:
        self._parser.feed(data)
        while True:
            try:
                event = self._parser.next_event()
            except FrameError as exc:
                self.stats.frame_errors += 1
                log.debug("%s: %s", self.port, exc)
                continue
            if event is None:
                return
            if isinstance(event, Urc):
                if event.text.upper() in BOOT_URCS:
                    self._rebooting.set()
                self.stats.urcs += 1
                self.urcs.append(event)
                if self.on_urc is not None:
                    try:
                        self.on_urc(event)
                    except Exception:  # the transport must outlive a broken listener
                        log.exception("URC handler failed on %r", event)
            elif self._answer is not None and not self._answer.done():
                self._answer.set_result(event)

    def _on_lost(self, exc: BaseException) -> None:
        self._lost = exc
        self._rebooting.set()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(BusError(f"modem port {self.port} lost: {exc}"))

    # -- commands
    async def command(self, text: str, timeout_s: float | None = None) -> Response:
        """Send one command line and return its answer; ``ModemError`` unless OK."""
        response = await self.send(text, timeout_s)
        if not response.ok:
            self.stats.errors += 1
            raise response.error()
        return response

    async def send(self, text: str, timeout_s: float | None = None) -> Response:
        """Send one command line and return its answer, whatever its final result."""
        wait = timeout_s if timeout_s is not None else self.timeouts.default_s
        async with self._lock:
            transport = self._writable()
            data = self._parser.command(text)
            answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._answer = answer
            self.stats.commands += 1
            transport.write(data)
            try:
                async with asyncio.timeout(wait):
                    return await answer
            except TimeoutError:
                self.stats.timeouts += 1
                raise ModemTimeout(text, wait) from None
            finally:
                self._answer = None
                self._parser.cancel()

    def send_blind(self, text: str) -> None:
        """Write a command without waiting for an answer: the reset of a module that
        answers nothing any more (some still act on AT+CFUN=1,1 while mute)."""
        transport = self._writable()
        self._parser.cancel()
        transport.write(text.strip().encode("ascii") + b"\r")
        self.stats.commands += 1

    def _writable(self) -> asyncio.Transport:
        if self._lost is not None:
            raise BusError(f"modem port {self.port} lost: {self._lost}")
        if self._transport is None:
            raise BusError(f"modem port {self.port} is not open")
        return self._transport

    async def probe(self, tries: int = 3) -> None:
        """``AT`` until it is answered; ``ModemHung`` after ``tries`` silent attempts.

        An ERROR answer counts as alive: the module's AT interpreter is running."""
        for _ in range(tries):
            try:
                await self.send("AT")
                return
            except ModemTimeout:
                continue
        raise ModemHung(tries, self.timeouts.default_s)

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """After a reset or power cycle: wait until the module answers ``AT`` again,
        reopening the port if it vanished (USB modules re-enumerate), then turn the
        echo off. False if it stayed silent for ``timeout_s`` (default ``boot_s``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s if timeout_s is not None else self.timeouts.boot_s)
        while loop.time() < deadline:
            if not self.is_open:
                await self.close()
                try:
                    await self.open()
                except BusError:
                    await asyncio.sleep(min(READY_RETRY_S, max(0.0, deadline - loop.time())))
                    continue
            try:
                await self.send("AT", min(self.timeouts.default_s, deadline - loop.time()))
            except (ModemTimeout, BusError):
                continue
            with contextlib.suppress(ModemTimeout, ModemError):
                await self.echo_off()
            return True
        return False

    async def echo_off(self) -> None:
        await self.command("ATE0")

    async def signal_quality(self) -> SignalQuality:
        return parse_csq(await self.command("AT+CSQ"))

    async def registration(self, domain: Domain = Domain.GPRS) -> Registration:
        return parse_registration(await self.command(domain.query), domain)

    async def operator(self) -> Operator:
        return parse_cops(await self.command("AT+COPS?", self.timeouts.cops_s))

    async def attached(self) -> bool:
        return parse_cgatt(await self.command("AT+CGATT?"))

    async def attach(self) -> None:
        await self.command("AT+CGATT=1", self.timeouts.cgatt_s)

    async def reset(self, method: str = "cfun11") -> bool:
        """Reset the module and wait until it answers again (True) or ``boot_s`` passes.

        ``cfun11``: AT+CFUN=1,1, a full reset of the module (27.007 §8.2 <rst>=1).
        ``cfun01``: AT+CFUN=0 then AT+CFUN=1, a radio off/on cycle: gentler, keeps the
        port (no USB re-enumeration), and cures most stuck registrations.
        """
        if method == "cfun01":
            await self.command("AT+CFUN=0", self.timeouts.cfun_s)
            await self.command("AT+CFUN=1", self.timeouts.cfun_s)
            return True
        if method != "cfun11":
            raise ValueError(f"reset method {method!r}: expected 'cfun11' or 'cfun01'")
        self._rebooting.clear()
        with contextlib.suppress(BusError):  # a USB module may drop the port before its OK
            await self.command("AT+CFUN=1,1", self.timeouts.cfun_s)
        await self._went_down(self.timeouts.cfun_s)
        return await self.wait_ready()

    async def _went_down(self, within: float) -> None:
        # The OK comes before the reboot: an AT sent right after it may still be
        # answered by the old firmware run. Wait for evidence of the reboot first: a
        # boot URC, the port vanishing, or an AT left unanswered.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(self.timeouts.default_s):
                    await self._rebooting.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.send("AT")
            except (ModemTimeout, BusError):
                return

    async def info(self) -> ModemInfo:
        return ModemInfo(
            manufacturer=parse_text(await self.command("AT+CGMI")),
            model=parse_text(await self.command("AT+CGMM")),
            revision=parse_text(await self.command("AT+CGMR")),
            imei=parse_text(await self.command("AT+CGSN")),
        )
