"""An Eastron-style Modbus RTU meter (SDM630 / SDM120): float32 input registers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers import modbus_rtu
from drivers.modbus_rtu import ExceptionCode, FunctionCode, ReadRequest
from drivers.readers import format_float32
from hil_sim.bus import ProtocolAdapter, SimMeter
from hil_sim.model import MeterModel
from hil_sim.truth import TruthRecord

PROTOCOL = "modbus"


@dataclass(frozen=True)
class Answer:
    reply: bytes | None
    truth: tuple[TruthRecord, ...] = ()


class ModbusMeter:
    def __init__(self, model: MeterModel, *, slave: int, meter_model: str = "sdm630") -> None:
        self.model = model
        self.slave = slave
        self.address = str(slave)
        self.registers = modbus_rtu.METER_MODELS[meter_model]
        self._by_address = {r.address: r for r in self.registers.values()}

    def selected_by(self, frame: Any) -> bool:
        # Broadcast (slave 0) writes are executed silently; we have nothing writable.
        return isinstance(frame, ReadRequest) and frame.slave == self.slave

    def _values(self, t: float) -> dict[str, float]:
        m = self.model
        m.advance(t)
        meas = m.measure(t)
        values: dict[str, float] = {
            "power_total": meas.power_total * 1000,
            "frequency": meas.frequency,
            "energy_import": float(m.energy_fwd()[0]),
            "energy_export": float(m.energy_rev()),
            "energy_total": float(m.energy_fwd()[0] + m.energy_rev()),
            "reactive_energy_total": float(m.energy_fwd()[0]) * 0.31,
        }
        for i in range(3):
            values[f"voltage_l{i + 1}"] = meas.voltage[i]
            values[f"current_l{i + 1}"] = meas.current[i]
            values[f"power_l{i + 1}"] = meas.power[i] * 1000
        return values

    def answer(self, frame: Any, t: float) -> Answer:
        assert isinstance(frame, ReadRequest)
        if frame.function != FunctionCode.READ_INPUT_REGISTERS:
            return Answer(
                modbus_rtu.exception_response(
                    self.slave, frame.function, ExceptionCode.ILLEGAL_DATA_ADDRESS
                )
            )
        start, count = frame.address, frame.count
        covered = [
            r
            for r in self.registers.values()
            if start <= r.address and r.address + 1 < start + count
        ]
        if not covered or start % 2 or count % 2:
            # Eastron meters refuse reads that split a float or hold no quantity.
            return Answer(
                modbus_rtu.exception_response(
                    self.slave, frame.function, ExceptionCode.ILLEGAL_DATA_ADDRESS
                )
            )
        values = self._values(t)
        regs = [0] * count
        truth = []
        for reg in covered:
            hi, lo = modbus_rtu.float32_to_registers(values[reg.name])
            regs[reg.address - start] = hi
            regs[reg.address - start + 1] = lo
            told = format_float32(modbus_rtu.registers_to_float32(hi, lo))
            mapped = modbus_rtu.CANONICAL[reg.name]  # truth in the store's terms
            truth.append(
                TruthRecord(
                    t=t,
                    meter=self.address,
                    protocol=PROTOCOL,
                    quantity=mapped.name,
                    key=f"0x{reg.address:04X}",
                    value=mapped.value(told),
                    unit=mapped.unit,
                )
            )
        reply = modbus_rtu.read_response(self.slave, frame.function, regs)
        return Answer(reply, tuple(truth))


def modbus_adapter() -> ProtocolAdapter:
    def corrupt(reply: bytes) -> bytes:
        return reply[:-1] + bytes([reply[-1] ^ 0xFF])  # break the CRC's high byte

    def error_reply(meter: SimMeter, frame: Any) -> bytes:
        return modbus_rtu.exception_response(
            int(meter.address), frame.function, ExceptionCode.SERVER_DEVICE_FAILURE
        )

    return ProtocolAdapter(
        name=PROTOCOL,
        bits_per_char=10,  # 8N1, the Eastron default line setting
        make_decoder=lambda: modbus_rtu.Decoder("server"),
        corrupt_checksum=corrupt,
        error_reply=error_reply,
    )
