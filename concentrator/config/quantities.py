"""Which quantity names a task may ask of which meters: canonical names
(`contract.quantities`, docs/quantities.md) the meter's protocol maps, so the store holds
nothing else. DL/T 645 tasks may also name a DI code of such a quantity."""

from __future__ import annotations

from contract.quantities import LEGACY_HINT
from drivers import dlt645, dlt645_1997
from drivers.meter_quantities import DLT698_DAILY_FREEZE
from drivers.modbus_rtu import canonical_registers


def valid_names(protocol: str, model: str | None) -> tuple[str, ...]:
    """The canonical names a meter of this protocol (and Modbus model) can be read for."""
    if protocol == "dlt645":
        return tuple(dlt645.DATA_IDS_BY_NAME)
    if protocol == "dlt645-1997":
        return tuple(dict.fromkeys(m.name for m in dlt645_1997.CANONICAL.values()))
    if protocol == "dlt698":
        from drivers.dlt698.objects import CANONICAL as DLT698_CANONICAL  # a 698.45 meter's

        names = [m.name for m in DLT698_CANONICAL.values()] + list(DLT698_DAILY_FREEZE)
        return tuple(dict.fromkeys(names))
    return tuple(canonical_registers(model or "sdm630"))


def quantity_problem(quantity: str, protocol: str, model: str | None) -> str | None:
    """None if ``quantity`` can be read from such meters; else what is wrong, with the
    valid names (and the new name of one an earlier release used)."""
    valid = valid_names(protocol, model)
    if protocol == "dlt645":
        try:
            if dlt645.lookup(quantity).name in valid:
                return None
        except (KeyError, ValueError):
            pass
    elif quantity in valid:
        return None
    hint = LEGACY_HINT.get(quantity)
    renamed = f" (now {hint}, docs/quantities.md)" if hint else ""
    return f"{renamed}; expected one of: {', '.join(valid)}"


def renamed(quantities: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """A task's quantities with the previous release's names replaced by their canonical
    ones (a site's config must not stop its daemon at the upgrade), and a warning for
    each name replaced."""
    names = tuple(LEGACY_HINT.get(q, q) for q in quantities)
    warnings = [
        f'"{old}" is the previous release\'s name of "{new}": read as "{new}"; write that'
        " (docs/quantities.md)"
        for old, new in zip(quantities, names, strict=True)
        if old != new
    ]
    return names, warnings
