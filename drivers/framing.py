"""The receive buffer that every streaming frame decoder in ``drivers`` is built on.

A transport reads whatever the UART hands it: half a frame, three frames, line noise
and a frame. A codec's ``Decoder`` subclasses ``StreamDecoder`` and says only how a
frame looks (``_scan``); this module keeps the bytes and the bookkeeping:

- ``feed`` appends a chunk; the buffer is capped, and when it overflows the oldest
  bytes go (they belong to a frame that can no longer be answered in time anyway);
- before each scan, bytes ahead of the start byte (if the protocol has one) are
  skipped as preamble or noise;
- the scan tells *incomplete* from *invalid*: it returns how many bytes the candidate
  needs when they have not all arrived (``next_frame`` returns None and waits), and
  raises ``FrameError`` when the candidate cannot be a frame. Then one byte is
  dropped and the error is raised to the caller; the next call resynchronises on
  the following start byte, so a corrupt frame is reported as such and never waited
  for as if it were "need more data". A scan that knows the whole extent of a bad
  frame (its checksum is valid, its content is not) raises ``Consumed`` instead, and
  all of it is dropped;
- ``discarded`` counts every byte thrown away (skipped, dropped, cut by the cap or
  cleared by ``reset``): a rising counter on a quiet line points at wiring or baud.

Every ``next_frame`` call either returns None or consumes at least one byte, so a
loop ``while (frame := decoder.next_frame()) is not None`` (catching ``FrameError``)
always ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from drivers.errors import FrameError

F = TypeVar("F")


class Consumed(Exception):
    """Raised by a scan: ``error`` concerns a candidate whose extent is known (its
    checksum is valid), so all ``size`` bytes are dropped rather than one."""

    def __init__(self, error: FrameError, size: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.size = size


#: How a codec looks at the candidate frame at the start of the buffer (at the start
#: byte, if the protocol has one). Returns (frame, its size in bytes) for a complete
#: valid frame, or the total number of bytes the candidate needs before anything more
#: can be decided. Raises ``FrameError`` for a candidate that is not a frame (the
#: decoder drops one byte) or ``Consumed`` (the decoder drops the whole candidate).
#: Leaves the buffer alone: the decoder consumes.
Scan = Callable[[bytearray], tuple[F, int] | int]


class StreamDecoder(Generic[F]):
    """Feed byte chunks in, take frames out. A codec's ``Decoder`` subclasses it with
    its ``scan`` and, if frames begin with a fixed byte, their ``start`` byte (the
    decoder skips to it before each scan; None: any byte may start a frame and the scan
    itself rejects what cannot)."""

    def __init__(self, max_buffer: int, scan: Scan[F], *, start: int | None = None) -> None:
        self.max_buffer = max_buffer  # the cap, in bytes; the oldest bytes go beyond it
        self.discarded = 0  # bytes thrown away: noise, broken frames, overflow, reset
        self._buf = bytearray()
        self._scan = scan
        self._start = start

    @property
    def buffered(self) -> int:
        """Bytes waiting; non-zero after a timeout means a truncated frame, not silence."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> None:
        buf = self._buf
        buf += chunk
        excess = len(buf) - self.max_buffer
        if excess > 0:
            del buf[:excess]
            self.discarded += excess

    def reset(self) -> None:
        """Forget the buffered bytes (counted as discarded)."""
        self.discarded += len(self._buf)
        self._buf.clear()

    def next_frame(self) -> F | None:
        """The next complete frame, or None until more bytes arrive.

        Raises ``FrameError`` for a candidate that is not a frame, after dropping at
        least one byte: call again to go on with the rest of the buffer.
        """
        buf = self._buf
        if not buf:
            return None
        start = self._start
        if start is not None:
            at = buf.find(start)
            if at < 0:
                self.discarded += len(buf)
                buf.clear()
                return None
            if at:
                del buf[:at]
                self.discarded += at
        try:
            found = self._scan(buf)
        except Consumed as consumed:
            del buf[: consumed.size]
            self.discarded += consumed.size
            raise consumed.error from None
        except FrameError:
            del buf[:1]  # resynchronise: the next candidate starts one byte later
            self.discarded += 1
            raise
        if isinstance(found, int):
            return None
        frame, size = found
        del buf[:size]
        return frame

    def frames(self) -> list[F]:
        """All complete frames now in the buffer, silently skipping broken ones."""
        out: list[F] = []
        while True:
            try:
                frame = self.next_frame()
            except FrameError:
                continue
            if frame is None:
                return out
            out.append(frame)
