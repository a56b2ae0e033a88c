"""What the concentrator does *to* meters (relay, clock), in one place for both the
field engineer's control socket and the utility's signed commands.

Each action runs on the meter's bus through that bus's worker, between two polls and
ahead of them; it is run once, never retried behind the caller's back (a relay may have
switched even when its reply was lost).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from concentrator.clock import Clock
from concentrator.config import Config, MeterConfig
from concentrator.errors import ConcentratorError
from concentrator.polling.bus_worker import BusAction
from drivers import dlt645, dlt698, meter_quantities
from drivers.errors import BusTimeout, FrameError, MeterError
from drivers.readers import Dlt645Reader, Dlt645Transport, QuantityValue

COMMAND_WITHIN_S = 30.0  # real seconds a relay or time command may wait for its bus
RELAY_VALID_S = 300.0  # a 0x1C command's own validity, in the meter's clock
RELAY_ACTIONS = {"open": dlt645.RelayAction.TRIP, "close": dlt645.RelayAction.CLOSE_ALLOW}


class ActionRefused(ConcentratorError):
    """Not possible here, whatever the line does (no relay passwords, not DL/T 645)."""


class BusTurns(Protocol):
    """What an action needs of the polling side (`Polling`): a turn on a bus ahead of the
    polls, and the clock and timezone a command is stamped with."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    async def run_on_bus(
        self, target: MeterConfig, action: BusAction, within_s: float = ...
    ) -> list[QuantityValue]: ...


def _dlt698_channel(reader: Dlt645Reader) -> Dlt645Transport:
    """The reader's channel, for 698.45 frames: a carrier module is told their type.
    The carrier's drivers are imported here, not with the module: a daemon without a
    carrier bus never loads them."""
    from drivers import gdw1376_2 as gdw
    from drivers.plc_bus import Plc645Channel

    if isinstance(reader.bus, Plc645Channel):
        return Plc645Channel(reader.bus.plc, protocol=gdw.ProtocolType.DLT698_45)
    return reader.bus


def relay_refusal(meter: MeterConfig) -> str | None:
    if meter.protocol != "dlt645":
        kind = meter_quantities.kind_name(meter.protocol, meter.model)
        return f"meter {meter.address} is a {kind} meter: relay control is DL/T 645-2007 (0x1C)"
    if not meter.has_relay_credentials:
        return (
            f"meter {meter.address} has no relay passwords in the configuration: "
            "set password_level, password and operator in its [[meter]]"
        )
    return None


async def switch_relay(
    buses: BusTurns, meter: MeterConfig, action: str
) -> tuple[str | None, str | None]:
    """Open or close ``meter``'s relay; return (relay state read back, status word 3),
    both None when the switch was acknowledged but the state could not be read.
    Raises `ActionRefused`, a `DriverError` from the line, or KeyError when the meter
    left the configuration."""
    if action not in RELAY_ACTIONS:
        raise ActionRefused(f'relay action "{action}": expected open or close')
    refusal = relay_refusal(meter)
    if refusal is not None:
        raise ActionRefused(refusal)
    clock, tz = buses.clock, buses.config.concentrator.tzinfo

    async def switch(reader: Dlt645Reader) -> list[QuantityValue]:
        # The command's validity is stamped when it goes on the line, in meter time.
        now = dt.datetime.fromtimestamp(clock.wall(), tz).replace(tzinfo=None)
        await reader.relay(
            meter.address,
            RELAY_ACTIONS[action],
            password_level=meter.password_level or 0,
            password=meter.password or "",
            operator=meter.operator or "",
            valid_for=RELAY_VALID_S,
            now=now,
        )
        try:  # what the meter says now (status word 3, bit 4), in the same bus turn
            return [await reader.read(meter.address, dlt645.lookup("status_word_3"))]
        except (MeterError, BusTimeout, FrameError):
            return []  # switched, but the state could not be read back

    values = await buses.run_on_bus(meter, switch, COMMAND_WITHIN_S)
    word = values[0].value if values else None
    if word is None:
        return None, None
    return ("open" if int(word, 16) & dlt645.STATUS3_RELAY_OPEN else "closed"), word


async def broadcast_time(buses: BusTurns, bus: str) -> str:
    """Broadcast the concentrator's time to every DL/T meter on ``bus``; return the time
    sent (meter-local ISO), taken when the frame went on the line. DL/T 645-2007 and
    645-1997 meters take the 0x08 broadcast (one layout), DL/T 698.45 meters ACTION 4000
    method 127 (docs/protocols-dlt698-645-1997.md, "SET and ACTION"), sent next when
    the bus has any."""
    clock, tz = buses.clock, buses.config.concentrator.tzinfo
    sent: list[str] = []
    has_698 = any(m.bus == bus and m.protocol == "dlt698" for m in buses.config.meters)

    async def broadcast(reader: Dlt645Reader) -> list[QuantityValue]:
        when = dt.datetime.fromtimestamp(clock.wall(), tz).replace(tzinfo=None)
        await reader.broadcast_time(when)
        sent.append(when.isoformat(timespec="seconds"))
        if has_698:
            now = dt.datetime.fromtimestamp(clock.wall(), tz).replace(tzinfo=None)
            await _dlt698_channel(reader).send(dlt698.build_broadcast_time(now))
        return []

    target = MeterConfig(dlt645.BROADCAST, "dlt645", bus)
    await buses.run_on_bus(target, broadcast, COMMAND_WITHIN_S)
    return sent[0]
