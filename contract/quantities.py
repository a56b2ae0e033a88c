"""The one vocabulary of what a meter measures: canonical quantity names, their units
and resolution.

Every protocol maps its own registers into these names in `drivers/` (one mapping table
per protocol, `docs/quantities.md`), so the concentrator's store, the uplink batch and
every table and application of the receiver speak of "energy_fwd_total in kWh" whatever
the meter on the wire was. The names are those DL/T 645-2007 readings carried from the
first release, so the largest share of stored data keeps its names; the previous
release's Modbus names are renamed by `LEGACY_RENAMES` (store migration 3, receiver
revision 0003).

Rule for changing it: a name, once released, keeps its meaning and unit. Add names;
never rename one without a migration on both ends and a `LEGACY_RENAMES` entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from contract.records import Reading
from drivers.quantity_map import shift_decimal

Kind = Literal["energy", "instant", "state", "block"]

# What each kind says about the values (`docs/quantities.md`):
#   energy  - a cumulative register: only grows (combined energy may fall), so the energy
#             of an interval is the difference of two readings;
#   instant - a value at the moment of reading (voltage, current, power, ...);
#   state   - a clock, a status word, a counter: not a physical measurement;
#   block   - a read that expands into several canonical quantities (`Quantity.parts`).


@dataclass(frozen=True, slots=True)
class Quantity:
    """One canonical quantity. ``decimals`` is the resolution a reading is expected to
    carry (a meter may send more); ``unit`` is the only unit stored under this name."""

    name: str
    description: str
    unit: str
    decimals: int
    kind: Kind
    parts: tuple[str, ...] = ()  # block: the quantities it is stored as


TARIFFS: tuple[tuple[str, str], ...] = (
    ("total", "total"),
    ("t1", "tariff 1 (sharp)"),
    ("t2", "tariff 2 (peak)"),
    ("t3", "tariff 3 (flat)"),
    ("t4", "tariff 4 (valley)"),
)
PHASES: tuple[tuple[str, str], ...] = (("a", "phase A"), ("b", "phase B"), ("c", "phase C"))


def _tariffs(name: str, description: str, unit: str, kind: Kind = "energy") -> list[Quantity]:
    return [
        Quantity(f"{name}_{s}", f"{description}, {label}", unit, 2, kind) for s, label in TARIFFS
    ]


def _phases(
    name: str, description: str, unit: str, decimals: int, total: str | None
) -> list[Quantity]:
    out = [Quantity(total, f"{description}, total", unit, decimals, "instant")] if total else []
    return out + [
        Quantity(f"{name}_{s}", f"{description}, {label}", unit, decimals, "instant")
        for s, label in PHASES
    ]


VOCABULARY: tuple[Quantity, ...] = (
    *_tariffs("energy_combined", "combined active energy", "kWh"),
    *_tariffs("energy_fwd", "forward (import) active energy", "kWh"),
    *_tariffs("energy_rev", "reverse (export) active energy", "kWh"),
    Quantity("reactive_energy_total", "total reactive energy", "kvarh", 2, "energy"),
    *_phases("voltage", "voltage to neutral", "V", 1, None),
    *_phases("current", "current", "A", 3, None),
    *_phases("power", "active power", "kW", 4, "power_total"),
    *_phases("reactive_power", "reactive power", "kvar", 4, "reactive_power_total"),
    *_phases("power_factor", "power factor", "", 3, "power_factor"),
    Quantity("frequency", "grid frequency", "Hz", 2, "instant"),
    Quantity("meter_date", "meter date, YYYYMMDD", "", 0, "state"),
    Quantity("meter_time", "meter time, hhmmss", "", 0, "state"),
    Quantity("meter_address", "communication address", "", 0, "state"),
    *(
        Quantity(f"status_word_{n}", f"running status word {n}", "", 0, "state")
        for n in range(1, 8)
    ),
    Quantity("cover_open_count", "meter cover opened, total count", "", 0, "state"),
    Quantity("frozen_daily_time", "last daily freeze: time, YYYYMMDDhhmm", "", 0, "state"),
    *_tariffs("frozen_daily_energy_fwd", "daily freeze: forward active energy", "kWh"),
    Quantity(
        "frozen_daily_energy_fwd",
        "daily freeze: forward active energy, total and tariffs 1-4",
        "kWh",
        2,
        "block",
        tuple(f"frozen_daily_energy_fwd_{s}" for s, _ in TARIFFS),
    ),
)

BY_NAME: dict[str, Quantity] = {q.name: q for q in VOCABULARY}
NAMES: tuple[str, ...] = tuple(BY_NAME)


class UnknownQuantity(ValueError):
    """A name outside the vocabulary; the message lists the valid ones."""


def get(name: str) -> Quantity:
    """The canonical quantity ``name``; `UnknownQuantity` listing the valid names if not."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownQuantity(unknown_message(name)) from None


def unknown_message(name: str, valid: Iterable[str] = NAMES) -> str:
    hint = LEGACY_HINT.get(name)
    renamed = f" (renamed {hint}; docs/quantities.md)" if hint else ""
    return f"unknown quantity {name!r}{renamed}; expected one of: {', '.join(valid)}"


# The names the receiver's applications (usage, line loss, theft, prepayment, demand
# response) read, whatever protocol the meter speaks; looked up, so a typo fails at import.
ENERGY_FWD_TOTAL = get("energy_fwd_total").name
ENERGY_REV_TOTAL = get("energy_rev_total").name
FROZEN_ENERGY_FWD_TOTAL = get("frozen_daily_energy_fwd_total").name
PHASE_CURRENTS: tuple[str, ...] = tuple(get(f"current_{p}").name for p, _ in PHASES)
COVER_OPEN_COUNT = get("cover_open_count").name


@dataclass(frozen=True, slots=True)
class Rename:
    """A name an earlier release stored, and its canonical form: readings named ``old``
    in ``old_unit`` become ``new`` in ``new_unit``, their value times 10**``shift``."""

    old: str
    old_unit: str
    new: str
    new_unit: str
    shift: int = 0


# The previous release stored Eastron SDM (Modbus) readings under the register map's
# names and units. Frozen: the store's migration 3 and receiver revision 0003 apply it.
LEGACY_RENAMES: tuple[Rename, ...] = (
    Rename("voltage_l1", "V", "voltage_a", "V"),
    Rename("voltage_l2", "V", "voltage_b", "V"),
    Rename("voltage_l3", "V", "voltage_c", "V"),
    Rename("current_l1", "A", "current_a", "A"),
    Rename("current_l2", "A", "current_b", "A"),
    Rename("current_l3", "A", "current_c", "A"),
    Rename("power_l1", "W", "power_a", "kW", -3),
    Rename("power_l2", "W", "power_b", "kW", -3),
    Rename("power_l3", "W", "power_c", "kW", -3),
    Rename("power_total", "W", "power_total", "kW", -3),
    Rename("energy_import", "kWh", "energy_fwd_total", "kWh"),
    Rename("energy_export", "kWh", "energy_rev_total", "kWh"),
    Rename("energy_total", "kWh", "energy_combined_total", "kWh"),
)
LEGACY_HINT: dict[str, str] = {r.old: r.new for r in LEGACY_RENAMES if r.old != r.new}
_RENAME_OF: dict[tuple[str, str], Rename] = {}
for _r in LEGACY_RENAMES:
    _RENAME_OF.setdefault((_r.old, _r.old_unit), _r)  # the first rule for a name wins


def canonical(quantity: str, unit: str, value: str) -> tuple[str, str, str]:
    """(quantity, unit, value) under its canonical name: a reading of an earlier release
    (an old concentrator still sending, a store not yet migrated) is renamed and
    rescaled by `LEGACY_RENAMES`; anything else is returned as it is."""
    r = _RENAME_OF.get((quantity, unit))
    if r is None:
        return quantity, unit, value
    return r.new, r.new_unit, shift_decimal(value, r.shift)


def canonical_readings(readings: Sequence[Reading]) -> list[Reading]:
    """The readings with `canonical` names, units and values (what the receiver stores
    from a concentrator that still runs the previous release)."""
    kinds = {(r.quantity, r.unit) for r in readings}
    if kinds.isdisjoint(_RENAME_OF):  # the usual case: a batch of the current release
        return list(readings)
    out = []
    for r in readings:
        quantity, unit, value = canonical(r.quantity, r.unit, r.value)
        same = quantity == r.quantity and unit == r.unit
        out.append(r if same else replace(r, quantity=quantity, unit=unit, value=value))
    return out
