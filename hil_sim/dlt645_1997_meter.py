"""A DL/T 645-1997 meter: 0x01 reads of two-byte identifiers answered from the meter
model, 0x08 broadcast time taken; the 2007 function codes (0x11, 0x13, ...) mean nothing
to it, so it stays silent (docs/protocols-dlt698-645-1997.md, "DL/T 645-1997")."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from drivers import dlt645, dlt645_1997
from drivers.dlt645_1997 import ErrorBits, Function
from drivers.errors import FrameError
from drivers.readers import dlt645_1997_values
from hil_sim.dlt645_meter import ENERGY_ROLLOVER, _quantize
from hil_sim.model import MeterModel
from hil_sim.truth import TruthRecord

PROTOCOL = "dlt645-1997"


@dataclass(frozen=True)
class Answer:
    reply: bytes | None
    truth: tuple[TruthRecord, ...] = ()


class Dlt6451997Meter:
    def __init__(self, model: MeterModel, *, preamble: int = 0) -> None:
        self.model = model
        self.address = model.address
        self.preamble = preamble

    def selected_by(self, frame: Any) -> bool:
        return (
            isinstance(frame, dlt645.Frame)
            and not frame.is_reply
            and dlt645.address_matches(frame.address, self.address)
        )

    def answer(self, frame: Any, t: float) -> Answer:
        assert isinstance(frame, dlt645.Frame)
        self.model.advance(t)
        fn = frame.function
        if fn == Function.BROADCAST_TIME:
            with contextlib.suppress(FrameError):
                self.model.set_clock(t, dlt645.parse_broadcast_time(frame.data))
            return Answer(None)
        if frame.address == dlt645_1997.BROADCAST or fn != Function.READ_DATA:
            return Answer(None)
        if len(frame.data) != 2:
            return Answer(self.error_reply(frame, ErrorBits.ILLEGAL_DATA))
        di = int.from_bytes(frame.data, "little")
        try:
            entry = dlt645_1997.lookup(di)
        except KeyError:
            return Answer(self.error_reply(frame, ErrorBits.BAD_IDENTIFIER))
        value = self.value_of(entry, t)
        if value is None:
            return Answer(self.error_reply(frame, ErrorBits.BAD_IDENTIFIER))
        raw = dlt645_1997.encode_value(entry, value)
        # What the concentrator will make of it (canonical names, display text).
        told = dlt645_1997_values(self.address, entry, raw, numeric=False)
        truth = tuple(
            TruthRecord(t, self.address, PROTOCOL, v.quantity, v.key, v.value, v.unit) for v in told
        )
        reply = dlt645_1997.build_reply(self.address, di, raw, preamble=self.preamble)
        return Answer(reply, truth)

    def error_reply(self, frame: Any, err: int = ErrorBits.ILLEGAL_DATA) -> bytes:
        return dlt645_1997.build_error_reply(
            self.address, Function.READ_DATA, err, preamble=self.preamble
        )

    def value_of(self, entry: dlt645_1997.DataId, t: float) -> dlt645_1997.Value | None:
        """The register's content at time t (None: this meter does not have it). Energy
        registers roll over at 1,000,000 kWh like the 2007 meter's."""
        m = self.model
        name = entry.name
        if name.startswith("energy_fwd_"):
            fwd = tuple(v % ENERGY_ROLLOVER for v in m.energy_fwd())
            if name.endswith("_block"):
                return fwd
            return fwd[0] if name.endswith("total") else fwd[int(name[-1])]
        if name == "energy_rev_total":
            return m.energy_rev() % ENERGY_ROLLOVER
        if name == "meter_date":
            return m.meter_time(t).date()
        if name == "meter_time":
            return m.meter_time(t).time().replace(microsecond=0)
        if name == "meter_number":
            return self.address
        meas = m.measure(t)
        phase = "abc".index(name[-1]) if name[-2:] in ("_a", "_b", "_c") else None
        if phase is not None and phase >= m.phases:
            return None
        if name.startswith("voltage_") and phase is not None:
            return _quantize(meas.voltage[phase], entry.decimals)
        if name.startswith("current_") and phase is not None:
            return _quantize(meas.current[phase], entry.decimals)
        if name == "power_total":
            return _quantize(meas.power_total, entry.decimals)
        if name.startswith("power_") and not name.startswith("power_factor") and phase is not None:
            return _quantize(meas.power[phase], entry.decimals)
        if name.startswith("power_factor_"):
            return _quantize(meas.power_factor, entry.decimals)
        return None
