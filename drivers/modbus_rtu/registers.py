"""What the registers hold: float32 values across two registers, the Eastron
SDM630 / SDM120 register maps and their canonical names, and the plan of FC 04 reads
that covers a set of registers."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.errors import EncodeError
from drivers.modbus_rtu.checks import _require, _require_block
from drivers.modbus_rtu.codes import MAX_READ_COUNT
from drivers.quantity_map import Mapped

# ----------------------------------------------------------------------------- floats
# Eastron SDM meters hold each quantity as an IEEE-754 binary32 in two registers, high
# word first, each word big-endian ([AP] §4.2 only defines 16-bit registers; the word
# order is the vendor's: Eastron SDM630 Modbus protocol, "3X register" tables).


def registers_to_float32(hi: int, lo: int) -> float:
    _require("hi", hi, 0, 0xFFFF, "a 16-bit register 0..65535")
    _require("lo", lo, 0, 0xFFFF, "a 16-bit register 0..65535")
    value: float = struct.unpack(">f", struct.pack(">HH", hi, lo))[0]
    return value


def float32_to_registers(value: float) -> tuple[int, int]:
    try:
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    except (OverflowError, struct.error):
        raise EncodeError(
            f"value={value!r}: expected a number that fits an IEEE-754 float32 "
            "(|x| <= 3.4028235e38, or inf/nan)"
        ) from None
    return int(hi), int(lo)


# ----------------------------------------------------------------------------- meters


@dataclass(frozen=True, slots=True)
class Register:
    name: str  # the register map's own name; stored under CANONICAL[name]
    address: int  # input-register address on the wire (the manual's 3xxxx number - 30001)
    unit: str
    description: str
    phases: int  # the phase the quantity belongs to: 1, 2 or 3; 0 = the whole system
    count: int = 2  # registers per value: one float32


# Addresses from the Eastron SDM630 / SDM120 Modbus protocol's input-register tables,
# function 04 (docs/protocols.md §2.4).
SDM630: dict[str, Register] = {
    r.name: r
    for r in (
        Register("voltage_l1", 0x0000, "V", "Phase 1 line to neutral voltage", 1),
        Register("voltage_l2", 0x0002, "V", "Phase 2 line to neutral voltage", 2),
        Register("voltage_l3", 0x0004, "V", "Phase 3 line to neutral voltage", 3),
        Register("current_l1", 0x0006, "A", "Phase 1 current", 1),
        Register("current_l2", 0x0008, "A", "Phase 2 current", 2),
        Register("current_l3", 0x000A, "A", "Phase 3 current", 3),
        Register("power_l1", 0x000C, "W", "Phase 1 active power", 1),
        Register("power_l2", 0x000E, "W", "Phase 2 active power", 2),
        Register("power_l3", 0x0010, "W", "Phase 3 active power", 3),
        Register("power_total", 0x0034, "W", "Total system active power", 0),
        Register("frequency", 0x0046, "Hz", "Frequency of supply voltages", 0),
        Register("energy_import", 0x0048, "kWh", "Import active energy", 0),
        Register("energy_export", 0x004A, "kWh", "Export active energy", 0),
        Register("energy_total", 0x0156, "kWh", "Total active energy", 0),
        Register("reactive_energy_total", 0x0158, "kvarh", "Total reactive energy", 0),
    )
}

# The single-phase meters use the same addresses for the quantities they have.
SDM120: dict[str, Register] = {
    name: SDM630[name]
    for name in (
        "voltage_l1",
        "current_l1",
        "power_l1",
        "frequency",
        "energy_import",
        "energy_export",
        "energy_total",
    )
}

METER_MODELS: dict[str, dict[str, Register]] = {"sdm630": SDM630, "sdm120": SDM120}

# The SDM registers in the canonical vocabulary (contract.quantities, docs/quantities.md):
# the one table that says what each register is stored as. Powers come in W and are
# stored in kW like every other meter's; "total active energy" is import + export, the
# combination DL/T 645 meters call combined active energy by default.
CANONICAL: dict[str, Mapped] = {
    "voltage_l1": Mapped("voltage_a", "V"),
    "voltage_l2": Mapped("voltage_b", "V"),
    "voltage_l3": Mapped("voltage_c", "V"),
    "current_l1": Mapped("current_a", "A"),
    "current_l2": Mapped("current_b", "A"),
    "current_l3": Mapped("current_c", "A"),
    "power_l1": Mapped("power_a", "kW", -3),
    "power_l2": Mapped("power_b", "kW", -3),
    "power_l3": Mapped("power_c", "kW", -3),
    "power_total": Mapped("power_total", "kW", -3),
    "frequency": Mapped("frequency", "Hz"),
    "energy_import": Mapped("energy_fwd_total", "kWh"),
    "energy_export": Mapped("energy_rev_total", "kWh"),
    "energy_total": Mapped("energy_combined_total", "kWh"),
    "reactive_energy_total": Mapped("reactive_energy_total", "kvarh"),
}


def canonical_registers(model: str) -> dict[str, Register]:
    """The registers of a meter family by canonical name, in register-map order."""
    return {CANONICAL[r.name].name: r for r in METER_MODELS[model].values()}


def plan_reads(
    registers: Iterable[Register], max_gap: int = 0, max_count: int = MAX_READ_COUNT
) -> list[tuple[int, int]]:
    """(address, count) FC 04 reads covering ``registers``, as few as possible.

    Two registers share a read only if at most ``max_gap`` unwanted registers lie between
    them: reading across gaps saves a round trip (t3.5 + turnaround + header, ~30 ms at
    9600 baud) but some meters answer ILLEGAL_DATA_ADDRESS for unmapped addresses, so the
    default is 0.
    """
    _require("max_gap", max_gap, 0, 0xFFFF, "0..65535 registers")
    _require("max_count", max_count, 1, MAX_READ_COUNT, "1..125 registers per read")
    wanted = sorted(registers, key=lambda r: (r.address, r.count))
    plan: list[tuple[int, int]] = []
    start = end = -1
    for register in wanted:
        _require(
            f"{register.name}.count", register.count, 1, max_count, f"1..{max_count} registers"
        )
        _require_block(register.address, register.count, f"{register.name}.count")
        low, high = register.address, register.address + register.count
        if start >= 0:
            # Overlapping registers give a negative gap, so they always merge.
            if low - end <= max_gap and max(end, high) - start <= max_count:
                end = max(end, high)
                continue
            plan.append((start, end - start))
        start, end = low, high
    if start >= 0:
        plan.append((start, end - start))
    return plan


def unpack_floats(
    address: int, registers: Sequence[int], wanted: Iterable[Register]
) -> dict[str, float]:
    """Values of ``wanted`` out of one read that started at ``address`` (see plan_reads)."""
    values: dict[str, float] = {}
    for register in wanted:
        index = register.address - address
        if index < 0 or index + 2 > len(registers):
            raise EncodeError(
                f"{register.name} at 0x{register.address:04X}: expected it inside the read "
                f"of {len(registers)} registers at 0x{address:04X}"
            )
        values[register.name] = registers_to_float32(registers[index], registers[index + 1])
    return values
