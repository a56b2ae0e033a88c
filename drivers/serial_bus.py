"""Half-duplex RS-485 bus transport on pyserial (asyncio via pyserial-asyncio-fast).

RS-485 is a shared pair of wires: only one frame may be on it at a time and every meter
hears every request. So the bus object serialises transactions with a lock, keeps the
inter-frame gap the protocol asks for (Modbus t3.5, a DL/T 645 meter's receive
recovery), throws away stale bytes before each request, and measures its own deadlines
on the monotonic clock.

The protocol codecs stay sans-I/O: a transaction is given the request bytes and a
decoder object (``feed``/``next_frame``/``reset``) and returns the first frame that the
caller's ``accept`` predicate takes as the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

import serial
import serial.rs485
import serial_asyncio_fast

from drivers.errors import BusError, BusTimeout, FrameError, PortBusy
from drivers.port_lock import lock_holder

log = logging.getLogger(__name__)

F = TypeVar("F")
F_co = TypeVar("F_co", covariant=True)

Parity = Literal["E", "N", "O"]
_PARITY = {"E": serial.PARITY_EVEN, "N": serial.PARITY_NONE, "O": serial.PARITY_ODD}

MAX_FRAME_BYTES = 260  # longer than any DL/T 645 (216) or Modbus RTU (256) frame

# The rates a meter bus or a carrier module's UART runs at; 0 is the simulator's line
# without wire time. One rule for the config, the field CLI and the simulator.
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def baud_problem(baud: int) -> str | None:
    """Why ``baud`` is not a rate a bus runs at (None when it is)."""
    if baud == 0 or baud in BAUD_RATES:
        return None
    rates = ", ".join(map(str, BAUD_RATES))
    return f"{baud} is not a standard rate ({rates}, or 0 for the simulator)"


class FrameDecoder(Protocol[F_co]):
    """What a sans-I/O codec's streaming decoder offers the transport."""

    def feed(self, chunk: bytes) -> None: ...

    def next_frame(self) -> F_co | None: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class SerialSettings:
    """Line settings of one bus. Times are in seconds.

    ``response_timeout`` is the wait for the first reply byte after the request has left
    the wire (DL/T 645 allows a meter 500 ms); once bytes flow, the frame may take its
    own wire time plus ``inter_byte_timeout`` between bytes.
    """

    port: str
    baud: int = 2400
    parity: Parity = "E"
    bytesize: int = 8
    stopbits: int = 1
    response_timeout: float = 0.6
    inter_frame_gap: float = 0.005
    inter_byte_timeout: float = 0.1
    rs485: bool = False  # ask the kernel to drive RTS for the transceiver direction

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    def wire_time(self, n_bytes: int) -> float:
        return n_bytes * self.bits_per_char / self.baud if self.baud > 0 else 0.0


@dataclass
class BusStats:
    """Counters the daemon reports as bus utilisation and error rates."""

    transactions: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    busy_s: float = 0.0  # monotonic seconds spent inside transactions


class UartSettings(Protocol):
    """The line settings every UART transport has (RS-485 bus, carrier module)."""

    @property
    def port(self) -> str: ...
    @property
    def baud(self) -> int: ...
    @property
    def parity(self) -> Parity: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def stopbits(self) -> int: ...


P = TypeVar("P", bound=asyncio.Protocol)


def is_pty(port: str) -> bool:
    return os.path.realpath(port).startswith("/dev/pts/")


async def open_uart(
    settings: UartSettings, protocol: Callable[[], P], what: str, *, direct: bool = False
) -> tuple[asyncio.Transport, P]:
    """Open a UART for asyncio. The one place that knows pseudo-terminals (the
    simulator's lines) carry bytes, not bits: some kernels refuse PARENB on them with
    EINVAL, and a simulated line has no parity errors, so they are opened without.

    ``direct``: a device node gets `_PortTransport` (the loop reads and writes its
    descriptor itself) instead of serial_asyncio_fast's; a pyserial URL keeps the latter."""
    parity = settings.parity
    if parity != "N" and is_pty(settings.port):
        log.info("%s is a pseudo-terminal: opening it without parity", settings.port)
        parity = "N"
    loop = asyncio.get_running_loop()
    # A device node is locked for us alone (flock, honoured by pyserial, minicom and
    # the like): a second master on a half-duplex line garbles both. A pyserial URL
    # (socket://, rfc2217://) is no device node and takes no lock.
    url = "://" in settings.port
    exclusive = {} if url else {"exclusive": True}
    line: dict[str, Any] = {
        "baudrate": settings.baud if settings.baud > 0 else 115200,
        "parity": _PARITY[parity],
        "bytesize": settings.bytesize,
        "stopbits": settings.stopbits,
        **exclusive,
    }
    try:
        if direct and not url:
            port = await loop.run_in_executor(
                None, functools.partial(serial.serial_for_url, settings.port, **line)
            )
            built = protocol()
            return _PortTransport(loop, port, built), built
        transport, proto = await serial_asyncio_fast.create_serial_connection(
            loop, protocol, settings.port, **line
        )
    except (serial.SerialException, OSError, termios.error) as exc:
        if getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK) and exclusive:
            holder = lock_holder(settings.port)
            who = holder.describe() if holder is not None else "another program (not found)"
            raise PortBusy(
                f"cannot open {what} {settings.port}: it is in use by {who}",
                port=settings.port,
                holder=holder,
            ) from exc
        raise BusError(f"cannot open {what} {settings.port}: {exc}") from exc
    return transport, cast(P, proto)


class _PortTransport(asyncio.Transport):
    """A serial device node driven by the event loop itself: ``os.read`` and
    ``os.write`` on its non-blocking descriptor. serial_asyncio_fast reads through
    pyserial's ``read()`` (a ``select()`` and a few objects for every chunk), a cost a
    bus of a few hundred transactions a second pays on every reply."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, port: serial.Serial, protocol: asyncio.Protocol
    ) -> None:
        super().__init__()
        self._loop = loop
        self._port = port
        self._fd = port.fileno()
        self._protocol = protocol
        self._closing = False
        self._out = bytearray()  # what the kernel did not take yet
        loop.add_reader(self._fd, self._readable)
        loop.call_soon(protocol.connection_made, self)

    @property
    def serial(self) -> serial.Serial:
        return self._port

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(BusError(f"serial port {self._port.port}: {exc}"))
            return
        if not data:  # readable yet empty: the device went (pyserial says the same)
            self._lose(BusError(f"serial port {self._port.port}: device disconnected"))
            return
        self._protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if self._out:
            self._out += data
            return
        try:
            n = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._lose(BusError(f"serial port {self._port.port}: {exc}"))
            return
        if n < len(data):
            self._out += data[n:]
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            n = os.write(self._fd, self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(BusError(f"serial port {self._port.port}: {exc}"))
            return
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self._fd)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._out:
            self._loop.remove_writer(self._fd)
            self._out.clear()
        self._port.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)


async def close_uart(transport: asyncio.Transport, closed: asyncio.Event) -> None:
    """Close and wait (briefly) until the protocol saw the port go."""
    transport.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await closed.wait()


class _Answer:
    """One transaction's wait for its answer, advanced in the receiver's callback as
    bytes arrive: the decoder runs there, and the waiting task is woken once, by an
    accepted frame, the deadline or the port's loss (not by every chunk)."""

    __slots__ = ("accept", "bytes_in", "deadline", "decoder", "first_error", "future", "reply_s")

    def __init__(
        self,
        decoder: FrameDecoder[Any],
        accept: Callable[[Any], bool],
        future: asyncio.Future[Any],
        reply_s: float,
    ) -> None:
        self.decoder = decoder
        self.accept = accept
        self.future = future
        self.reply_s = reply_s  # once bytes flow: the longest frame's wire time + gaps
        self.deadline = 0.0  # monotonic; set when the request has been written
        self.bytes_in = 0
        # The first problem is the telling one: after it the decoder resynchronises
        # inside the broken frame and meets follow-on garbage.
        self.first_error: FrameError | None = None

    def receive(self, data: bytes, now: float) -> None:
        if not self.bytes_in:
            # The reply has started: give it the wire time of the longest frame.
            self.deadline = max(self.deadline, now + self.reply_s)
        self.bytes_in += len(data)
        decoder = self.decoder
        decoder.feed(data)
        while True:
            try:
                frame = decoder.next_frame()
            except FrameError as exc:
                self.first_error = self.first_error or exc
                continue
            if frame is None:
                return
            if self.accept(frame):
                if not self.future.done():
                    self.future.set_result(frame)
                return


class _Receiver(asyncio.Protocol):
    """Collects incoming bytes: into the waiting transaction's decoder while one waits
    (``answer``), else into ``chunks`` (stale bytes, or what ``gather`` listens for)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.arrived = asyncio.Event()
        self.last_rx = 0.0
        self.lost: BaseException | None = None
        self.closed = asyncio.Event()
        self.answer: _Answer | None = None

    def data_received(self, data: bytes) -> None:
        self.last_rx = now = time.monotonic()
        answer = self.answer
        if answer is not None:
            answer.receive(data, now)
            return
        self.chunks.append(data)
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or BusError("serial port closed")
        self.arrived.set()
        self.closed.set()
        if self.answer is not None and not self.answer.future.done():
            self.answer.future.set_result(None)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.arrived.clear()
        return data


@dataclass(frozen=True)
class Exchange(Generic[F]):
    """A finished transaction: the answer and how long the bus was held."""

    frame: F
    elapsed: float


class SerialBus:
    """One RS-485 port; use ``async with SerialBus(settings) as bus``."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.stats = BusStats()
        self._lock = asyncio.Lock()
        self._transport: asyncio.Transport | None = None
        self._rx: _Receiver | None = None
        self._last_activity = 0.0
        # One timer for the answers' deadlines, moved only when a deadline comes before
        # it: a transaction of a few milliseconds does not create and cancel its own.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # monotonic

    async def open(self) -> None:
        self._transport, self._rx = await open_uart(
            self.settings, _Receiver, "serial port", direct=True
        )
        if self.settings.rs485:
            self._enable_rs485()

    def _enable_rs485(self) -> None:
        port = self._serial()
        try:
            port.rs485_mode = serial.rs485.RS485Settings(
                rts_level_for_tx=True, rts_level_for_rx=False
            )
        except (ValueError, OSError, serial.SerialException) as exc:
            # USB adapters with automatic direction control and PTYs have no TIOCSRS485.
            log.warning("%s: kernel RS-485 mode not available (%s)", self.settings.port, exc)

    def _serial(self) -> serial.Serial:
        if self._transport is None:
            raise BusError(f"serial port {self.settings.port} is not open")
        port: serial.Serial = self._transport.serial  # type: ignore[attr-defined]
        return port

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and self._rx is not None:
            await close_uart(self._transport, self._rx.closed)
        self._transport = None

    async def __aenter__(self) -> SerialBus:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def transact(
        self,
        request: bytes,
        decoder: FrameDecoder[F],
        accept: Callable[[F], bool] = lambda frame: True,
        *,
        response_timeout: float | None = None,
    ) -> Exchange[F]:
        """Send ``request`` and wait for the first accepted frame.

        Frames the predicate rejects (our own echo on adapters that hear themselves, a
        late answer to an earlier request) are skipped. If the deadline passes, the
        error says whether the line stayed silent (``BusTimeout``) or only carried
        garbage (``FrameError`` with the last decode problem).
        """
        async with self._lock:
            return await self._transact(request, decoder, accept, response_timeout)

    async def gather(self, request: bytes, *, window: float | None = None) -> bytes:
        """Send ``request`` and return every byte heard in answer: what arrives until
        ``window`` (default: the response timeout) after the request has left the wire,
        and then until the line has been quiet for ``inter_byte_timeout``.

        For a request several devices may answer (a DL/T 645 wildcard address): the
        first clean frame does not mean that nobody else answered, a meter with a longer
        turnaround may still come, and bytes that are no frame are an answer too. The
        caller decodes what was heard; silence is an empty result, not an error.
        """
        async with self._lock:
            s = self.settings
            rx = self._rx
            started = time.monotonic()
            await self._write(request)
            assert rx is not None
            listen = s.response_timeout if window is None else window
            end = time.monotonic() + s.wire_time(len(request)) + listen
            heard = bytearray()
            self.stats.transactions += 1
            try:
                while True:
                    limit = max(end, rx.last_rx + s.inter_byte_timeout) if heard else end
                    if time.monotonic() >= limit:
                        break
                    if not rx.arrived.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout_at(self._loop_time(limit)):
                                await rx.arrived.wait()
                        continue
                    if rx.lost is not None:
                        raise BusError(f"serial port {s.port} lost: {rx.lost}")
                    heard += rx.take()
            finally:
                self._last_activity = time.monotonic()
                self.stats.busy_s += self._last_activity - started
            self.stats.bytes_in += len(heard)
            return bytes(heard)

    @staticmethod
    def _loop_time(monotonic_deadline: float) -> float:
        # asyncio.timeout_at wants the loop's clock; convert from time.monotonic().
        loop = asyncio.get_running_loop()
        return loop.time() + (monotonic_deadline - time.monotonic())

    async def send(self, request: bytes) -> None:
        """Send a frame nobody answers (broadcast) and hold the bus until it has left."""
        async with self._lock:
            await self._write(request)
            await asyncio.sleep(
                self.settings.wire_time(len(request)) + self.settings.inter_frame_gap
            )
            self._last_activity = time.monotonic()

    async def _write(self, request: bytes) -> None:
        rx = self._rx
        if self._transport is None or rx is None:
            raise BusError(f"serial port {self.settings.port} is not open")
        if rx.lost is not None:
            raise BusError(f"serial port {self.settings.port} lost: {rx.lost}")
        gap = self.settings.inter_frame_gap - (time.monotonic() - self._last_activity)
        if gap > 0:
            await asyncio.sleep(gap)
        rx.take()  # stale bytes from before this request belong to nobody
        self._transport.write(request)
        self.stats.bytes_out += len(request)

    def _arm(self, deadline: float) -> None:
        """Have the timer fire at ``deadline`` (monotonic) or before it."""
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # it fires first and re-arms for what is waiting then
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(self._loop_time(deadline), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        answer = self._rx.answer if self._rx is not None else None
        if answer is None or answer.future.done():
            return
        if time.monotonic() >= answer.deadline:
            answer.future.set_result(None)
        else:
            self._arm(answer.deadline)

    def _send(self, request: bytes, answer: _Answer, timeout: float) -> None:
        """Write the request and start waiting for its answer (in a loop callback, at
        the end of the inter-frame gap)."""
        rx = self._rx
        if self._transport is None or rx is None:
            if not answer.future.done():
                answer.future.set_exception(
                    BusError(f"serial port {self.settings.port} is not open")
                )
            return
        rx.take()  # stale bytes from before this request belong to nobody
        if rx.lost is not None:
            if not answer.future.done():
                answer.future.set_result(None)
            return
        self._transport.write(request)
        self.stats.bytes_out += len(request)
        answer.decoder.reset()
        answer.deadline = time.monotonic() + self.settings.wire_time(len(request)) + timeout
        rx.answer = answer
        self._arm(answer.deadline)

    async def _transact(
        self,
        request: bytes,
        decoder: FrameDecoder[F],
        accept: Callable[[F], bool],
        response_timeout: float | None,
    ) -> Exchange[F]:
        s = self.settings
        rx = self._rx
        if self._transport is None or rx is None:
            raise BusError(f"serial port {s.port} is not open")
        if rx.lost is not None:
            raise BusError(f"serial port {s.port} lost: {rx.lost}")
        loop = asyncio.get_running_loop()
        timeout = response_timeout or s.response_timeout
        answer = _Answer(
            decoder,
            accept,
            loop.create_future(),
            s.wire_time(MAX_FRAME_BYTES) + s.inter_byte_timeout,
        )
        started = time.monotonic()
        gap = s.inter_frame_gap - (started - self._last_activity)
        # The write waits out the gap in a timer callback, not in this task: one wake-up
        # of the task per transaction, when its answer (or its end) has come.
        send = loop.call_later(max(gap, 0.0), self._send, request, answer, timeout)
        self.stats.transactions += 1
        try:
            frame = await answer.future
        finally:
            send.cancel()
            rx.answer = None
            self._last_activity = time.monotonic()
            self.stats.busy_s += self._last_activity - started
            self.stats.bytes_in += answer.bytes_in
        if frame is not None:
            return Exchange(frame, self._last_activity - started)
        if rx.lost is not None:
            raise BusError(f"serial port {s.port} lost: {rx.lost}")
        first_error = answer.first_error
        if first_error is not None or answer.bytes_in:
            self.stats.frame_errors += 1
            reason = first_error.reason if first_error is not None else "incomplete frame"
            raw = first_error.raw if first_error is not None else b""
            raise FrameError(f"garbled reply ({reason})", raw=raw)
        self.stats.timeouts += 1
        raise BusTimeout(f"no reply within {timeout:.3f} s on {s.port}")
