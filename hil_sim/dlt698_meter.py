"""A DL/T 698.45 meter: answers GET-Request Normal and NormalList from the meter model,
takes the broadcast time (ACTION 4000 method 127), and refuses anything else with a
DAR (docs/protocols-dlt698-645-1997.md, "Application layer", "Objects")."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from drivers import dlt698
from drivers.dlt698 import DAR, OAD, ResultNormal
from drivers.dlt698.objects import QUANTITIES_BY_OAD
from drivers.errors import DriverError
from drivers.meter_quantities import array_elements
from drivers.readers import dlt698_reading
from hil_sim.dlt645_meter import _quantize
from hil_sim.load_records import dlt698_daily_rows, dlt698_rows
from hil_sim.model import Interval, MeterModel
from hil_sim.truth import TruthRecord

PROTOCOL = "dlt698"


@dataclass(frozen=True)
class Answer:
    reply: bytes | None
    truth: tuple[TruthRecord, ...] = ()


class Dlt698Meter:
    def __init__(self, model: MeterModel, *, preamble: int = 0) -> None:
        self.model = model
        self.address = model.address
        self.server = dlt698.ServerAddress(self.address)
        self.preamble = preamble

    def selected_by(self, frame: Any) -> bool:
        return (
            isinstance(frame, dlt698.Frame)
            and not frame.from_server
            and frame.server.matches(self.address)
        )

    def answer(self, frame: Any, t: float) -> Answer:
        assert isinstance(frame, dlt698.Frame)
        self.model.advance(t)
        try:
            apdu = dlt698.unwrap(dlt698.decode_apdu(frame.user_data))
        except DriverError:
            return Answer(None)  # a meter ignores an APDU it cannot parse
        if not isinstance(apdu, dlt698.ClientApdu):
            return Answer(None)
        service = apdu.service
        if isinstance(service, dlt698.ActionRequestNormal):
            if service.omd == dlt698.BROADCAST_TIME:
                value = service.data.value
                if isinstance(value, dlt698.DateTimeS):
                    with contextlib.suppress(ValueError, DriverError):
                        self.model.set_clock(t, value.to_datetime())
                if frame.server.type is dlt698.AddressType.BROADCAST:
                    return Answer(None)
                return Answer(
                    self._reply(
                        dlt698.ActionResponseNormal(service.piid, service.omd, DAR.SUCCESS), frame
                    )
                )
            return Answer(
                self._reply(
                    dlt698.ActionResponseNormal(service.piid, service.omd, DAR.ACCESS_DENIED), frame
                )
            )
        if frame.server.type is dlt698.AddressType.BROADCAST:
            return Answer(None)
        if isinstance(service, dlt698.GetRequestNormal):
            result, truth = self._get(service.oad, t)
            return Answer(self._reply(dlt698.GetResponseNormal(service.piid, result), frame), truth)
        if isinstance(service, dlt698.GetRequestNormalList):
            results: list[ResultNormal] = []
            told: list[TruthRecord] = []
            for oad in service.oads:
                result, truth = self._get(oad, t)
                results.append(result)
                told += truth
            reply = dlt698.GetResponseNormalList(service.piid, tuple(results))
            return Answer(self._reply(reply, frame), tuple(told))
        if isinstance(service, dlt698.GetRequestRecord):
            return self._record(service, frame)
        return Answer(self.error_reply(frame))

    def _record(self, service: dlt698.GetRequestRecord, frame: dlt698.Frame) -> Answer:
        """The minute freeze 5002 (from the model's load-curve memory) or the daily
        freeze 5004 (its last 62 freezes) by freeze time, Selector 2 on 2021 0200; a
        range outside memory is answered with no rows. Another object or selector is
        refused (DAR 6 / 255)."""
        columns = service.columns
        rsd = service.rsd
        if service.oad not in (dlt698.MINUTE_FREEZE, dlt698.DAILY_FREEZE):
            result = dlt698.ResultRecord(service.oad, columns, DAR.OBJECT_NOT_EXIST)
        elif (
            not isinstance(rsd, dlt698.Selector2)
            or rsd.oad != dlt698.FREEZE_TIME
            or not columns
            or not all(isinstance(c, OAD) and c in QUANTITIES_BY_OAD for c in columns)
        ):
            result = dlt698.ResultRecord(service.oad, columns, DAR.OTHER)
        else:
            if service.oad == dlt698.DAILY_FREEZE:
                rows, truth = dlt698_daily_rows(self.model, rsd, columns)
            else:
                rows, truth = dlt698_rows(self.model, rsd, columns, self._frozen)
            result = dlt698.ResultRecord(service.oad, columns, rows)
            reply = dlt698.GetResponseRecord(service.piid, result)
            return Answer(self._reply(reply, frame), tuple(truth))
        return Answer(self._reply(dlt698.GetResponseRecord(service.piid, result), frame))

    def _frozen(self, q: dlt698.Quantity, rec: Interval) -> dlt698.Value:
        """A minute-freeze column: the freeze time, the energy registers as frozen, the
        instantaneous values at the freeze."""
        if q.oad == dlt698.FREEZE_TIME:
            return rec.at
        if q.oad.oi == 0x0010:
            return rec.energy_fwd if q.array else rec.energy_fwd[max(q.oad.index - 1, 0)]
        if q.oad.oi == 0x0020:
            if q.array:
                return (rec.energy_rev, None, None, None, None)
            return rec.energy_rev if q.oad.index == 1 else None
        if q.oad.oi == 0x0000:
            total = rec.energy_fwd[0] + rec.energy_rev
            return (total, None, None, None, None) if q.array else total
        return self.value_of(q, rec.t)

    def error_reply(self, frame: Any) -> bytes:
        """A refusal of whatever was asked: the first OAD (or 4001) with DAR 255."""
        piid, oad = 0, OAD(0x4001, 2, 0)
        with contextlib.suppress(DriverError):
            apdu = dlt698.unwrap(dlt698.decode_apdu(frame.user_data))
            if isinstance(apdu, dlt698.ClientApdu):
                piid = apdu.service.piid
                oad = getattr(apdu.service, "oad", None) or next(
                    iter(getattr(apdu.service, "oads", ())), oad
                )
        return self._reply(dlt698.GetResponseNormal(piid, ResultNormal(oad, DAR.OTHER)), frame)

    def _reply(self, service: dlt698.apdu.Response, request: dlt698.Frame) -> bytes:
        user_data = dlt698.ServerApdu(service).encode()
        reply = dlt698.Frame(self.server, user_data, request.client, from_server=True)
        return dlt698.encode_frame(reply, preamble=self.preamble)

    def _get(self, oad: OAD, t: float) -> tuple[ResultNormal, tuple[TruthRecord, ...]]:
        try:
            q = dlt698.lookup(oad)
        except KeyError:
            return ResultNormal(oad, DAR.OBJECT_UNDEFINED), ()
        value = self.value_of(q, t)
        if value is None:
            return ResultNormal(oad, DAR.OBJECT_NOT_EXIST), ()
        data = dlt698.from_value(q, value)
        told = dlt698.to_value(q, data)  # what the concentrator will decode
        truth = []
        pairs = (
            zip(array_elements(q), told, strict=False) if isinstance(told, tuple) else [(q, told)]
        )
        for element, v in pairs:
            if v is None or isinstance(v, tuple):
                continue
            # The reader's own naming: canonical names, 645's display text for the clock.
            name, text, unit = dlt698_reading(element, v, numeric=False)
            truth.append(TruthRecord(t, self.address, PROTOCOL, name, str(element.oad), text, unit))
        return ResultNormal(oad, data), tuple(truth)

    def value_of(self, q: dlt698.Quantity, t: float) -> dlt698.Value:
        """The object's content at time t (None: this meter does not have it)."""
        if q.array:
            parts = [self._element(e, t) for e in array_elements(q)]
            if all(p is None for p in parts):
                return None
            return tuple(p if not isinstance(p, dt.datetime | str) else None for p in parts)
        return self._element(q, t)

    def _element(self, q: dlt698.Quantity, t: float) -> Decimal | int | dt.datetime | str | None:
        m = self.model
        name = q.name
        if name == "clock":
            return m.meter_time(t).replace(microsecond=0)
        if name == "comm_address":
            return self.address
        if name.startswith("energy_fwd_"):
            fwd = m.energy_fwd()
            return fwd[0] if name.endswith("total") else fwd[int(name[-1])]
        if name == "energy_rev_total":
            return m.energy_rev()
        if name == "energy_combined_total":
            return m.energy_fwd()[0] + m.energy_rev()
        meas = m.measure(t)
        decimals = -(q.scaler or 0)
        if name == "frequency":
            return _quantize(meas.frequency, decimals)
        phase = "abc".index(name[-1]) if name[-1] in "abc" and name[-2] == "_" else None
        if phase is not None and phase >= m.phases:
            return None
        if name.startswith("voltage_") and phase is not None:
            return _quantize(meas.voltage[phase], decimals)
        if name.startswith("current_") and phase is not None:
            return _quantize(meas.current[phase], decimals)
        if name == "power_total":
            return _quantize(meas.power_total * 1000, decimals)  # W
        if name.startswith("power_") and not name.startswith("power_factor") and phase is not None:
            return _quantize(meas.power[phase] * 1000, decimals)
        if name.startswith("power_factor_"):
            return _quantize(meas.power_factor, decimals)
        return None
