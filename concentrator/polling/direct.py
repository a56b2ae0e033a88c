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
from drivers.readers import Dlt645Reader, ModbusReader, QuantityValue
from drivers.serial_bus import SerialBus, SerialSettings

T = TypeVar("T")


async def read_direct(
    settings: SerialSettings,
    protocol: str,
    address: str,
    model: str,
    names: Sequence[str],
    retries: int,
) -> tuple[list[QuantityValue], list[tuple[str, DriverError]]]:
    """Read each quantity; a meter that stays silent or garbles fails the whole read,
    while the error replies of a DL/T 645 meter are returned per quantity (`not_supported`
    tells a quantity the meter does not have). A malformed address or quantity name is
    an `EncodeError` or a `KeyError` before the port is opened."""
    out: list[QuantityValue] = []
    failures: list[tuple[str, DriverError]] = []
    problem = address_problem(protocol, address, wildcards=True)
    if problem is not None:
        raise EncodeError(problem)
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


def not_supported(exc: Exception) -> bool:
    """A DL/T 645 error reply that says the meter has no such data."""
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
