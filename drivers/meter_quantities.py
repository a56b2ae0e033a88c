"""Quantity names per meter protocol: the one rule for what a task, the config checker,
the daemon's read command and the poller may name, and under which names a reading of
it is stored.

The DL/T protocols share their names where they measure the same thing
(``energy_fwd_total``, ``voltage_a``, ``current_a``, ``power_total`` in kW), so one task
can read a mixed bus (docs/protocols-dlt698-645-1997.md, "Mixed buses"). A name that
reads several values at once is stored as its parts: a DL/T 645-2007 energy block
(``energy_fwd`` → ``energy_fwd_total``, ``_t1`` .. ``_t4``), a DL/T 645-1997 block
(``energy_fwd_block``, the same parts) and a DL/T 698.45 array attribute (``voltage`` →
``voltage_a`` .. ``voltage_c``).
"""

from __future__ import annotations

from drivers import dlt645, dlt645_1997, dlt698
from drivers.modbus_rtu import METER_MODELS

BLOCK_PARTS = ("total", "t1", "t2", "t3", "t4")

KIND_NAMES = {
    "dlt645": "DL/T 645",
    "dlt645-1997": "DL/T 645-1997",
    "dlt698": "DL/T 698.45",
}


def kind_name(protocol: str, model: str | None = None) -> str:
    """How a meter type is named in messages: "DL/T 698.45", "Modbus sdm630"."""
    return KIND_NAMES.get(protocol, f"Modbus {model or 'sdm630'}")


def canonical(protocol: str, name: str, model: str | None = None) -> str:
    """The quantity's name for a name or code (DI, OAD) of ``protocol``; KeyError if
    the meter type has no such quantity."""
    if protocol == "dlt645":
        try:
            return dlt645.lookup(name).name
        except ValueError:
            raise KeyError(f"unknown DL/T 645 quantity {name!r}") from None
    if protocol == "dlt645-1997":
        return dlt645_1997.lookup(name).name
    if protocol == "dlt698":
        return dlt698.lookup(name).name
    registers = METER_MODELS[model or "sdm630"]
    if name not in registers:
        raise KeyError(f"unknown quantity {name!r} for Modbus {model or 'sdm630'} meters")
    return name


def known(protocol: str, name: str, model: str | None = None) -> bool:
    try:
        canonical(protocol, name, model)
    except KeyError:
        return False
    return True


def defaults(protocol: str, model: str | None = None) -> list[str]:
    """What a read without named quantities reads."""
    if protocol == "dlt645":
        return list(dlt645.DEFAULT_QUANTITIES)
    if protocol == "dlt645-1997":
        return list(dlt645_1997.DEFAULT_QUANTITIES)
    if protocol == "dlt698":
        return list(dlt698.DEFAULT_QUANTITIES)
    return list(METER_MODELS[model or "sdm630"])


def stored_names(protocol: str, name: str) -> list[str]:
    """The names a reading of quantity ``name`` is stored under."""
    if protocol == "dlt645":
        entry = dlt645.lookup(name)
        if entry.kind == "energy_block":
            return [f"{entry.name}_{part}" for part in BLOCK_PARTS]
        return [entry.name]
    if protocol == "dlt645-1997":
        e97 = dlt645_1997.lookup(name)
        if e97.kind == "block":
            base = e97.name.removesuffix("_block")
            return [f"{base}_{part}" for part in BLOCK_PARTS]
        return [e97.name]
    if protocol == "dlt698":
        q = dlt698.lookup(name)
        if q.array:
            return [e.name for e in array_elements(q)]
        return [q.name]
    return [name]


def array_elements(q: dlt698.Quantity) -> list[dlt698.Quantity]:
    """The element quantities of a 698.45 array attribute, in index order."""
    if not q.array:
        return [q]
    return [
        e
        for e in dlt698.QUANTITIES
        if e.oad.oi == q.oad.oi and e.oad.attribute == q.oad.attribute and e.oad.index > 0
    ]
