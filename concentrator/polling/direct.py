"""Direct mode: reading one meter over a serial port opened for the purpose, with no
daemon (``concentrator read --port``), to commission a bus before anything polls it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from drivers import dlt645
from drivers.errors import BusTimeout, DriverError, EncodeError, FrameError, MeterError
from drivers.meter_ids import address_problem
from drivers.meter_quantities import dlt645_1997_stored_name
from drivers.readers import (
    Dlt645Reader,
    Dlt698Reader,
    Dlt6451997Reader,
    ModbusReader,
    QuantityValue,
    dlt645_1997_not_supported,
    dlt698_not_supported,
    identify,
)
from drivers.serial_bus import SerialBus, SerialSettings

T = TypeVar("T")


async def read_direct(
    settings: SerialSettings,
    protocol: str,
    address: str,
    model: str,
    names: Sequence[str],
    retries: int,
    *,
    on_protocol: Callable[[str], None] | None = None,
) -> tuple[list[QuantityValue], list[tuple[str, DriverError]]]:
    """Read each quantity; a meter that stays silent or garbles fails the whole read,
    while the error replies of a DL/T 645 meter are returned per quantity (`not_supported`
    tells a quantity the meter does not have). A malformed address or quantity name is
    an `EncodeError` or a `KeyError` before the port is opened.

    ``protocol`` "auto" first finds which DL/T protocol the meter answers
    (`drivers.readers.identify`: 645-2007, 698.45, 645-1997); ``on_protocol`` is told
    the protocol read with, detected or given."""
    out: list[QuantityValue] = []
    failures: list[tuple[str, DriverError]] = []
    problem = address_problem("dlt645" if protocol == "auto" else protocol, address, wildcards=True)
    if problem is not None:
        raise EncodeError(problem)
    if protocol == "auto":
        async with SerialBus(settings) as bus:
            protocol = await identify(bus, address, retries=retries)
    if on_protocol is not None:
        on_protocol(protocol)
    if protocol == "dlt698":
        quantities = Dlt698Reader.quantities(names)
        async with SerialBus(settings) as bus:
            reader698 = Dlt698Reader(bus)
            values, refused = await _retry(
                partial(reader698.read_many, address, quantities, numeric=False), retries
            )
            return values, [*refused]
    if protocol == "dlt645-1997":
        entries97 = Dlt6451997Reader.quantities(names)
        async with SerialBus(settings) as bus:
            reader97 = Dlt6451997Reader(bus)
            for entry97 in entries97:
                try:
                    out += await _retry(
                        partial(reader97.read, address, entry97, numeric=False), retries
                    )
                except MeterError as exc:
                    failures.append((dlt645_1997_stored_name(entry97), exc))
        return out, failures
    if protocol == "modbus":
        registers = ModbusReader.quantities_of(model, names)
        async with SerialBus(settings) as bus:
            reader = ModbusReader(bus, model=model)
            return await _retry(lambda: reader.read_many(address, registers), retries), failures
    try:
        entries = Dlt645Reader.quantities(names)
    except KeyError as exc:  # list the canonical names (docs/quantities.md)
        valid = ", ".join(dlt645.DATA_IDS_BY_NAME)
        raise KeyError(f"{exc.args[0]} (a DI code or one of: {valid})") from None
    async with SerialBus(settings) as bus:
        dreader = Dlt645Reader(bus)
        for entry in entries:
            try:
                out.append(await _retry(partial(dreader.read, address, entry), retries))
            except MeterError as exc:
                failures.append((entry.name, exc))
    return out, failures


def not_supported(exc: Exception, protocol: str = "dlt645") -> bool:
    """An error reply that says the meter has no such data (each protocol's own code)."""
    if protocol == "dlt698":
        return dlt698_not_supported(exc)
    if protocol == "dlt645-1997":
        return dlt645_1997_not_supported(exc)
    return isinstance(exc, MeterError) and bool(exc.code & dlt645.ErrorBits.NO_DATA)


async def _retry(call: Callable[[], Awaitable[T]], retries: int) -> T:
    """Retry what a noisy line or a busy meter can explain; a meter's error reply is final."""
    for attempt in range(retries + 1):
        try:
            return await call()
        except (BusTimeout, FrameError):
            if attempt == retries:
                raise
    raise AssertionError("unreachable")
