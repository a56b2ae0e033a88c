"""Quantity names per meter protocol: what a task, the config checker, the daemon's read
command and the poller may name, and under which canonical name (`contract.quantities`,
docs/quantities.md) a reading of it is stored.

Each protocol's register → canonical mapping is its codec's own table (DL/T 645-2007:
`dlt645.DATA_IDS`; DL/T 645-1997: `dlt645_1997.CANONICAL`; DL/T 698.45:
`dlt698.objects.CANONICAL`; Modbus: `modbus_rtu.CANONICAL`). This module only resolves a
name a person or a task writes — a canonical name, or the protocol's own name or code
(a DI, an OAD) — to what the reader asks the meter for, and says what it is stored as.
A read of several values at once is stored as its parts: a DL/T 645-2007 energy block
(``energy_fwd`` → ``energy_fwd_total``, ``_t1`` .. ``_t4``), a DL/T 645-1997 block
(``energy_fwd_block``, the same parts) and a DL/T 698.45 array attribute (``voltage`` →
``voltage_a`` .. ``voltage_c``).
"""

from __future__ import annotations

from drivers import dlt645, dlt645_1997, dlt698
from drivers.dlt698.objects import CANONICAL as DLT698_CANONICAL
from drivers.modbus_rtu import canonical_registers

BLOCK_PARTS = ("total", "t1", "t2", "t3", "t4")

KIND_NAMES = {
    "dlt645": "DL/T 645",
    "dlt645-1997": "DL/T 645-1997",
    "dlt698": "DL/T 698.45",
}

# Canonical name -> the protocol's own register (the inverse of the codecs' tables).
_698_BY_CANONICAL: dict[str, dlt698.Quantity] = {
    m.name: dlt698.lookup(oad) for oad, m in DLT698_CANONICAL.items()
}
_1997_BY_CANONICAL: dict[str, dlt645_1997.DataId] = {
    m.name: dlt645_1997.lookup(di) for di, m in dlt645_1997.CANONICAL.items()
}


# A DL/T 698.45 meter keeps its daily freezes in record 5004 (freeze time 2021 0200,
# forward energy 0010 0200): a daily-freeze task names them as it does for DL/T 645
# (``frozen_daily_*``), read by `concentrator.polling.freeze_read`, stored alike.
DLT698_DAILY_FREEZE: dict[str, list[str]] = {
    "frozen_daily_energy_fwd": [f"frozen_daily_energy_fwd_{part}" for part in BLOCK_PARTS],
    "frozen_daily_time": ["frozen_daily_time"],
}


def kind_name(protocol: str, model: str | None = None) -> str:
    """How a meter type is named in messages: "DL/T 698.45", "Modbus sdm630"."""
    return KIND_NAMES.get(protocol, f"Modbus {model or 'sdm630'}")


def dlt698_quantity(name: str) -> dlt698.Quantity:
    """The 698.45 object a canonical name ("power_factor"), an object name ("voltage")
    or an OAD ("20000201") stands for; KeyError if none."""
    return _698_BY_CANONICAL.get(name) or dlt698.lookup(name)


def dlt645_1997_entry(name: str) -> dlt645_1997.DataId:
    """The 1997 identifier a canonical name, its own name or its hex code stands for."""
    return _1997_BY_CANONICAL.get(name) or dlt645_1997.lookup(name)


def dlt698_stored_name(q: dlt698.Quantity) -> str:
    mapped = DLT698_CANONICAL.get(q.oad)
    return q.name if mapped is None else mapped.name


def dlt645_1997_stored_name(entry: dlt645_1997.DataId) -> str:
    mapped = dlt645_1997.CANONICAL.get(entry.di)
    return entry.name if mapped is None else mapped.name


def canonical(protocol: str, name: str, model: str | None = None) -> str:
    """The name the poller reads ``name`` by (a canonical name where there is one);
    KeyError if the meter type has no such quantity."""
    if protocol == "dlt645":
        try:
            return dlt645.lookup(name).name
        except ValueError:
            raise KeyError(f"unknown DL/T 645 quantity {name!r}") from None
    if protocol == "dlt645-1997":
        entry = dlt645_1997_entry(name)
        return entry.name if entry.kind == "block" else dlt645_1997_stored_name(entry)
    if protocol == "dlt698":
        if name in DLT698_DAILY_FREEZE:
            return name
        q = dlt698_quantity(name)
        return q.name if q.array else dlt698_stored_name(q)
    registers = canonical_registers(model or "sdm630")
    if name not in registers:
        raise KeyError(
            f"unknown quantity {name!r} for Modbus {model or 'sdm630'} meters; "
            f"expected one of {', '.join(registers)}"
        )
    return name


def defaults(protocol: str, model: str | None = None) -> list[str]:
    """What a read without named quantities reads."""
    if protocol == "dlt645":
        return list(dlt645.DEFAULT_QUANTITIES)
    if protocol == "dlt645-1997":
        return list(dlt645_1997.DEFAULT_QUANTITIES)
    if protocol == "dlt698":
        return list(dlt698.DEFAULT_QUANTITIES)
    return list(canonical_registers(model or "sdm630"))


def stored_names(protocol: str, name: str) -> list[str]:
    """The names a reading of quantity ``name`` is stored under."""
    if protocol == "dlt645":
        entry = dlt645.lookup(name)
        if entry.kind == "energy_block":
            return [f"{entry.name}_{part}" for part in BLOCK_PARTS]
        return [entry.name]
    if protocol == "dlt645-1997":
        e97 = dlt645_1997_entry(name)
        if e97.kind == "block":
            return [dlt645_1997_stored_name(p) for p in block_parts(e97)]
        return [dlt645_1997_stored_name(e97)]
    if protocol == "dlt698":
        if name in DLT698_DAILY_FREEZE:
            return list(DLT698_DAILY_FREEZE[name])
        return [dlt698_stored_name(e) for e in array_elements(dlt698_quantity(name))]
    return [name]


def block_parts(entry: dlt645_1997.DataId) -> list[dlt645_1997.DataId]:
    """The identifiers a 1997 block (9X1F) stands for: total, tariffs 1..4 (9X10..9X14)."""
    base = entry.di & 0xFFF0
    return [dlt645_1997.lookup(base + i) for i in range(len(BLOCK_PARTS))]


def array_elements(q: dlt698.Quantity) -> list[dlt698.Quantity]:
    """The element quantities of a 698.45 array attribute, in index order."""
    if not q.array:
        return [q]
    return [
        e
        for e in dlt698.QUANTITIES
        if e.oad.oi == q.oad.oi and e.oad.attribute == q.oad.attribute and e.oad.index > 0
    ]
