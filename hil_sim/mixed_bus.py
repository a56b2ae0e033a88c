"""One RS-485 line shared by DL/T 645-2007, DL/T 645-1997 and DL/T 698.45 meters.

All three start a frame with 0x68 and travel at 8E1, so on a real mixed line every
meter's receiver sees every frame and keeps only what parses in its own protocol. The
simulated line does the same: each request is fed to a 645 and a 698.45 decoder, and
the frame either yields goes to every meter, which answers only frames of its protocol
addressed to it (`selected_by`). A 645 frame cannot pass the 698.45 header check (HCS),
nor a 698.45 frame the 645 checksum, except by a chance of about one in 2**16 and 2**8
(docs/protocols-dlt698-645-1997.md, "Link frame").
"""

from __future__ import annotations

from typing import Any

from drivers import dlt645, dlt698
from drivers import gdw1376_2 as gdw
from drivers.errors import FrameError
from hil_sim.bus import ProtocolAdapter, SimMeter
from hil_sim.dlt645_1997_meter import Dlt6451997Meter
from hil_sim.dlt698_meter import Dlt698Meter


class MixedDecoder:
    """Both decoders on the same bytes; a frame from one clears the other (its partial
    view of the same bytes is garbage)."""

    def __init__(self) -> None:
        self._dlt645 = dlt645.Decoder()
        self._dlt698 = dlt698.Decoder()

    def feed(self, chunk: bytes) -> None:
        self._dlt645.feed(chunk)
        self._dlt698.feed(chunk)

    @property
    def buffered(self) -> int:
        return min(self._dlt645.buffered, self._dlt698.buffered)

    def next_frame(self) -> Any:
        frame: Any = self._dlt645.next_frame()
        if frame is not None:
            self._dlt698.reset()
            return frame
        frame = self._dlt698.next_frame()
        if frame is not None:
            self._dlt645.reset()
        return frame


def decode_any(payload: bytes) -> Any:
    """One whole meter frame, 645 or 698.45 (what a carrier module forwards); FrameError
    if it is neither."""
    try:
        return dlt645.decode_frame(payload)
    except FrameError:
        return dlt698.decode_frame(payload)


def protocol_type(meter: SimMeter) -> int:
    """The Q/GDW 1376.2 protocol type a carrier module reports for ``meter``."""
    if isinstance(meter, Dlt698Meter):
        return gdw.ProtocolType.DLT698_45
    if isinstance(meter, Dlt6451997Meter):
        return gdw.ProtocolType.DLT645_1997
    return gdw.ProtocolType.DLT645_2007


def _corrupt(reply: bytes) -> bytes:
    # The byte before the end byte is the 645 checksum, and the high byte of 698.45's FCS.
    return reply[:-2] + bytes([(reply[-2] + 1) & 0xFF]) + reply[-1:]


def _error_reply(meter: SimMeter, frame: Any) -> bytes:
    own = getattr(meter, "error_reply", None)
    if own is not None:
        reply: bytes = own(frame)
        return reply
    return dlt645.build_error_reply(meter.address, frame.function, dlt645.ErrorBits.OTHER)


def mixed_adapter(protocols: tuple[str, ...]) -> ProtocolAdapter:
    """The line of a bus whose meters speak ``protocols`` (each one of
    `hil_sim.cli.options.MIXABLE`)."""
    return ProtocolAdapter(
        name=",".join(protocols),
        bits_per_char=dlt645.BITS_PER_CHAR,
        make_decoder=MixedDecoder,
        corrupt_checksum=_corrupt,
        error_reply=_error_reply,
    )
