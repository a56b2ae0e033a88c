"""A DL/T 645-2007 meter: turns request frames into the reply a real meter would send."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from drivers import dlt645, dlt645_load
from drivers.dlt645 import ErrorBits, Frame, Function, RelayAction
from drivers.errors import FrameError
from hil_sim.load_records import dlt645_records
from hil_sim.model import Freeze, MeterModel
from hil_sim.truth import TruthRecord

PROTOCOL = "dlt645"


ENERGY_ROLLOVER = Decimal(1_000_000)  # XXXXXX.XX kWh


@dataclass(frozen=True)
class Answer:
    """A meter's reaction to a request: the reply bytes (None: silent) and what it told."""

    reply: bytes | None
    truth: tuple[TruthRecord, ...] = ()


class Dlt645Meter:
    def __init__(
        self,
        model: MeterModel,
        *,
        password_level: int = 2,
        password: str = "123456",
        preamble: int = 0,
    ) -> None:
        self.model = model
        self.address = model.address
        self.password_level = password_level
        self.password = password
        self.preamble = preamble  # FE bytes before each reply (vendors send 0..4)
        # The frames still to send of a reply that did not fit one (0x12 follow-ups).
        self._follow: tuple[int, list[bytes]] | None = None

    def selected_by(self, frame: Frame) -> bool:
        # On a mixed line (`hil_sim.mixed_bus`) 698.45 frames pass by too.
        return (
            isinstance(frame, Frame)
            and not frame.is_reply
            and dlt645.address_matches(frame.address, self.address)
        )

    def answer(self, frame: Frame, t: float) -> Answer:
        """React to a request that selects this meter, at simulated time t."""
        broadcast = frame.address == dlt645.BROADCAST
        self.model.advance(t)
        fn = frame.function
        if fn == Function.BROADCAST_TIME:
            # A meter silently ignores a malformed broadcast.
            with contextlib.suppress(FrameError):
                self.model.set_clock(t, dlt645.parse_broadcast_time(frame.data))
            return Answer(None)
        if fn == Function.FREEZE:
            if frame.data == b"\x99\x99\x99\x99":
                self.model.freezes.appendleft(_freeze_now(self.model, t))
            return Answer(None if broadcast else self._reply(fn))
        if broadcast:
            return Answer(None)  # no other command is answered when broadcast
        if fn not in Function.__members__.values():
            # Not a DL/T 645-2007 function (a DL/T 645-1997 read, 0x01, on a mixed line):
            # nothing this meter could answer, so it stays silent.
            return Answer(None)
        if fn == Function.READ_ADDRESS:
            return Answer(self._reply(fn, dlt645.encode_address(self.address)))
        if fn == Function.READ_DATA:
            self._follow = None
            return self._read(frame, t)
        if fn == Function.READ_FOLLOW_UP:
            return Answer(self._follow_up(frame))
        if fn == Function.RELAY_CONTROL:
            return self._relay(frame, t)
        return Answer(self._error(fn, ErrorBits.OTHER))

    def _reply(self, fn: int, data: bytes = b"") -> bytes:
        return dlt645.build_reply(self.address, fn, data, preamble=self.preamble)

    def _error(self, fn: int, err: int) -> bytes:
        return dlt645.build_error_reply(self.address, fn, err, preamble=self.preamble)

    def _read(self, frame: Frame, t: float) -> Answer:
        if len(frame.data) < 4:
            return Answer(self._error(Function.READ_DATA, ErrorBits.OTHER))
        di = int.from_bytes(frame.data[:4], "little")
        if di == dlt645_load.DI_GIVEN_TIME:
            return self._load_records(frame)
        try:
            entry = dlt645.lookup(di)
        except KeyError:
            return Answer(self._error(Function.READ_DATA, ErrorBits.NO_DATA))
        value = self.value_of(entry, t)
        if value is None:
            return Answer(self._error(Function.READ_DATA, ErrorBits.NO_DATA))
        raw = dlt645.encode_value(entry, value)
        told = dlt645.format_value(entry, dlt645.decode_value(entry, raw))
        record = TruthRecord(
            t=t,
            meter=self.address,
            protocol=PROTOCOL,
            quantity=entry.name,
            key=entry.code,
            value=told,
            unit=entry.unit,
        )
        return Answer(self._reply(Function.READ_DATA, frame.data[:4] + raw), (record,))

    def _load_records(self, frame: Frame) -> Answer:
        """Records from a given time (DL/T 645-2007 appendix A; docs/protocols.md §1.9):
        as many as fit go in the first reply, the rest in 0x12 follow-ups; no record at
        or after the time asked is the error "no requested data"."""
        fn = Function.READ_DATA
        try:
            blocks, start = dlt645_load.parse_request(frame.data[4:])
        except FrameError:
            return Answer(self._error(fn, ErrorBits.OTHER))
        records, truth = dlt645_records(self.model, start, blocks)
        if not records:
            return Answer(self._error(fn, ErrorBits.NO_DATA))
        di = frame.data[:4]
        chunks: list[bytes] = []
        room = dlt645.MAX_DATA_LEN - 5  # DI and a follow-up's sequence byte
        for raw in records:
            if chunks and len(chunks[-1]) + len(raw) <= room:
                chunks[-1] += raw
            else:
                chunks.append(raw)
        self._follow = (int.from_bytes(di, "little"), chunks[1:])
        reply = dlt645.build_reply(
            self.address, fn, di + chunks[0], more=len(chunks) > 1, preamble=self.preamble
        )
        return Answer(reply, tuple(truth))

    def _follow_up(self, frame: Frame) -> bytes:
        fn = Function.READ_FOLLOW_UP
        if len(frame.data) != 5 or self._follow is None:
            return self._error(fn, ErrorBits.NO_DATA)
        di, chunks = self._follow
        seq = frame.data[4]
        if int.from_bytes(frame.data[:4], "little") != di or not 1 <= seq <= len(chunks):
            return self._error(fn, ErrorBits.NO_DATA)
        data = frame.data[:4] + chunks[seq - 1] + bytes([seq])
        return dlt645.build_reply(
            self.address, fn, data, more=seq < len(chunks), preamble=self.preamble
        )

    def value_of(self, entry: dlt645.DataId, t: float) -> dlt645.Value | None:
        """The register's content at time t, or None when this meter does not have it.
        Energy registers roll over at 1,000,000 kWh, as a real meter's display does."""
        value = self._value_of(entry, t)
        if entry.unit == "kWh" and isinstance(value, Decimal):
            return value % ENERGY_ROLLOVER
        if entry.unit == "kWh" and isinstance(value, tuple):  # a block of registers
            return tuple(v % ENERGY_ROLLOVER if isinstance(v, Decimal) else v for v in value)
        return value

    def _value_of(self, entry: dlt645.DataId, t: float) -> dlt645.Value | None:
        m = self.model
        name = entry.name
        phases = m.phases
        fwd = m.energy_fwd()
        if name == "energy_fwd_total":
            return fwd[0]
        if name.startswith("energy_fwd_t"):
            return fwd[int(name[-1])]
        if name == "energy_rev_total":
            return m.energy_rev()
        if name == "energy_combined_total":
            return fwd[0] + m.energy_rev()
        if name == "meter_address":
            return self.address
        if name == "cover_open_count":
            return m.covers_opened(t)
        if name.startswith("status_word_"):
            if name == "status_word_3":
                return dlt645.STATUS3_RELAY_OPEN if m.relay_open else 0
            return 0
        if name == "meter_date":
            return m.meter_time(t).date()
        if name == "meter_time":
            return m.meter_time(t).time().replace(microsecond=0)
        if entry.di & 0xFFFFFF00 in (0x05060000, 0x05060100):
            n = entry.di & 0xFF
            if n > len(m.freezes):
                return None
            freeze = m.freezes[n - 1]
            if entry.kind == "datetime5":
                return freeze.at.replace(second=0, microsecond=0)
            return freeze.energy_fwd
        meas = m.measure(t)
        for prefix, values in (
            ("voltage_", meas.voltage),
            ("current_", meas.current),
            ("power_", meas.power),
        ):
            if name.startswith(prefix) and name[-1] in "abc" and name != "power_factor":
                idx = "abc".index(name[-1])
                if idx >= phases:
                    return None
                return _quantize(values[idx], entry.decimals)
        if name == "power_total":
            return _quantize(meas.power_total, entry.decimals)
        if name == "power_factor":
            return _quantize(meas.power_factor, entry.decimals)
        if name == "frequency":
            return _quantize(meas.frequency, entry.decimals)
        return None

    def _relay(self, frame: Frame, t: float) -> Answer:
        fn = Function.RELAY_CONTROL
        try:
            level, password, _operator, action, deadline = dlt645.parse_relay_control(frame.data)
        except FrameError:
            return Answer(self._error(fn, ErrorBits.OTHER))
        if level != self.password_level or password != self.password:
            return Answer(self._error(fn, ErrorBits.UNAUTHORIZED))
        if deadline < self.model.meter_time(t):
            return Answer(self._error(fn, ErrorBits.OTHER))  # command expired
        m = self.model
        if action == RelayAction.TRIP:
            if not m.set_relay(t, True):
                return Answer(self._error(fn, ErrorBits.OTHER))
        elif action in (RelayAction.CLOSE_ALLOW, RelayAction.CLOSE_DIRECT):
            m.set_relay(t, False)
        elif action == RelayAction.KEEP_POWER:
            m.keep_power = True
        elif action == RelayAction.KEEP_POWER_RELEASE:
            m.keep_power = False
        # The ground truth of what the relay did, for tests of remote disconnection.
        record = TruthRecord(
            t=t,
            meter=self.address,
            protocol=PROTOCOL,
            quantity="relay",
            key="1C",
            value="open" if m.relay_open else "closed",
            unit="",
        )
        return Answer(self._reply(fn), (record,))


def _quantize(x: float, decimals: int) -> Decimal:
    return Decimal(repr(x)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)


def _freeze_now(model: MeterModel, t: float) -> Freeze:
    return Freeze(model.meter_time(t).replace(second=0, microsecond=0), model.energy_fwd())
