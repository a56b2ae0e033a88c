"""A simulated RS-485 bus on a pseudo-terminal, hosting many meters.

The concentrator opens the PTY's slave side (through a stable symlink) with pyserial,
exactly as it would open /dev/ttyS1. We hold the master side and play every meter.

Wire timing: a PTY delivers bytes instantly, so the bus re-creates the line's pace. A
request is on the wire for len*bits/baud seconds from its first byte; each addressed
meter then waits its turnaround (DL/T 645 Td, 20..500 ms; default 20..80 ms) and its
reply is released when its last byte would have arrived. Several meters answering at
once (broadcast-like wildcard addressing) overlap byte slot by byte slot; the line
carries the bitwise AND of the drivers (a driven 0 wins over the idle 1), which garbles
the frames as a real bus does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drivers.errors import FrameError
from hil_sim.clock import SimClock
from hil_sim.faults import FaultKind, FaultPlan
from hil_sim.model import MeterModel
from hil_sim.pty_port import PtyPort, wire_time
from hil_sim.truth import TruthLog, TruthRecord

log = logging.getLogger(__name__)


class Answer(Protocol):
    @property
    def reply(self) -> bytes | None: ...

    @property
    def truth(self) -> tuple[TruthRecord, ...]: ...


class SimMeter(Protocol):
    address: str
    model: MeterModel

    def selected_by(self, frame: Any) -> bool: ...

    def answer(self, frame: Any, t: float) -> Answer: ...


class RequestDecoder(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def next_frame(self) -> Any: ...


@dataclass(frozen=True)
class ProtocolAdapter:
    """What the bus needs to know about a protocol beyond the meters themselves."""

    name: str
    bits_per_char: int
    make_decoder: Callable[[], RequestDecoder]
    corrupt_checksum: Callable[[bytes], bytes]
    error_reply: Callable[[SimMeter, Any], bytes]


@dataclass
class BusCounters:
    requests: int = 0
    replies: int = 0
    collisions: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class SimBus:
    """Serve ``meters`` on a fresh PTY until ``stop()``; ``link`` is a stable symlink."""

    def __init__(
        self,
        meters: Sequence[SimMeter],
        adapter: ProtocolAdapter,
        *,
        baud: int = 2400,
        turnaround: tuple[float, float] = (0.020, 0.080),
        faults: FaultPlan | None = None,
        truth: TruthLog | None = None,
        clock: SimClock | None = None,
        link: Path | None = None,
        seed: int = 0,
    ) -> None:
        self.meters = list(meters)
        self.adapter = adapter
        self.baud = baud
        self.turnaround = turnaround
        self.faults = faults or FaultPlan()
        self.truth = truth or TruthLog(None)
        self.clock = clock or SimClock()
        self.link = link
        self.counters = BusCounters()
        self._rng = random.Random(seed)
        self._port = PtyPort(link, log=log, what="reply")
        self.pty_name = ""
        self._queue: asyncio.Queue[tuple[float, int, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._decoder = adapter.make_decoder()
        self._first_byte_at: float | None = None
        self._rx_count = 0
        self._late: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.pty_name = self._port.open(self._on_readable)
        self._worker = asyncio.create_task(self._serve(), name="sim-bus")

    async def stop(self) -> None:
        for task in list(self._late):
            task.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._port.close()
        self.truth.flush()

    # ------------------------------------------------------------------ receive
    def _on_readable(self) -> None:
        data = self._port.read()
        if not data:
            return
        now = time.monotonic()
        if self._first_byte_at is None:
            self._first_byte_at = now
        self._rx_count += len(data)
        self._decoder.feed(data)
        while True:
            try:
                frame = self._decoder.next_frame()
            except FrameError:
                continue  # a meter ignores what it cannot parse
            if frame is None:
                break
            started = self._first_byte_at if self._first_byte_at is not None else now
            self._queue.put_nowait((started, self._rx_count, frame))
            self._first_byte_at = now
            self._rx_count = 0
        if self._decoder_empty():
            self._first_byte_at = None
            self._rx_count = 0

    def _decoder_empty(self) -> bool:
        buffered = getattr(self._decoder, "buffered", None)
        return not buffered

    # ------------------------------------------------------------------ answer
    def char_time(self) -> float:
        return wire_time(1, self.baud, self.adapter.bits_per_char)

    async def _serve(self) -> None:
        while True:
            started, n_bytes, frame = await self._queue.get()
            try:
                await self._handle(started, n_bytes, frame)
            except Exception:  # a simulator bug must not silently kill the bus
                log.exception("simulated bus failed to answer %r", frame)

    async def _handle(self, started: float, n_bytes: int, frame: Any) -> None:
        self.counters.requests += 1
        ct = self.char_time()
        wire_end = started + n_bytes * ct
        t_sim = self.clock.now()
        replies: list[tuple[float, bytes]] = []
        for meter in self.meters:
            if not meter.selected_by(frame):
                continue
            if self.faults.is_offline(meter.address, t_sim - self.clock.start):
                continue
            answer = meter.answer(frame, t_sim)
            if answer.reply is None:
                continue
            fault = self.faults.draw(meter.address)
            reply, delay = self._apply_fault(fault, meter, frame, answer.reply)
            for record in answer.truth:
                self.truth.write(_with_fault(record, fault))
            if fault is not None:
                self.counters.faults[fault] = self.counters.faults.get(fault, 0) + 1
            if reply is None:
                continue
            td = self._rng.uniform(*self.turnaround) if self.baud > 0 else 0.0
            if delay > 0:
                # A late answer does not hold the bus: it lands on whatever comes next.
                self._spawn_late(wire_end + td + delay + len(reply) * ct, reply)
                continue
            replies.append((td, reply))
        self.truth.flush()
        if not replies:
            return
        if len(replies) > 1:
            self.counters.collisions += 1
        start = min(td for td, _ in replies)
        line = _collide(replies, ct) if len(replies) > 1 else replies[0][1]
        # The first byte leaves after the turnaround, the rest as the wire carries it:
        # a long reply (load records at 2400 baud take most of a second) starts in time.
        begin = wire_end + start
        if len(line) > 1:
            await self._port.write_at(begin + ct, line[:1])
        await self._port.write_at(begin + len(line) * ct, line[1:] if len(line) > 1 else line)
        self.counters.replies += 1

    def _spawn_late(self, release_at: float, data: bytes) -> None:
        task = asyncio.create_task(self._port.write_at(release_at, data))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    def _apply_fault(
        self, fault: FaultKind | None, meter: SimMeter, frame: Any, reply: bytes
    ) -> tuple[bytes | None, float]:
        rng = self.faults.rng()
        if fault is None:
            return reply, 0.0
        if fault == "no_reply":
            return None, 0.0
        if fault == "late_reply":
            return reply, self.faults.late_by
        if fault == "bad_checksum":
            return self.adapter.corrupt_checksum(reply), 0.0
        if fault == "truncated":
            return reply[: rng.randrange(1, len(reply))], 0.0
        if fault == "noise":
            # Line noise before the frame; the concentrator must resynchronise past it.
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
            return noise + reply, 0.0
        if fault == "error_reply":
            return self.adapter.error_reply(meter, frame), 0.0
        raise AssertionError(fault)


def _with_fault(record: TruthRecord, fault: FaultKind | None) -> TruthRecord:
    if fault is None:
        return record
    return TruthRecord(**{**record.__dict__, "fault": fault})


def _collide(replies: list[tuple[float, bytes]], char_time: float) -> bytes:
    """Overlay replies that start at different turnarounds, byte slot by byte slot."""
    first = min(td for td, _ in replies)
    placed = []
    for td, data in replies:
        offset = round((td - first) / char_time) if char_time > 0 else 0
        placed.append((offset, data))
    length = max(off + len(d) for off, d in placed)
    line = bytearray([0xFF] * length)
    for off, data in placed:
        for i, b in enumerate(data):
            line[off + i] &= b
    return bytes(line)
