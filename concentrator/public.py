"""What the simulator (``hil_sim``) and the benchmarks (``bench``) may use of the
concentrator; everything else is internal and may change without notice (tests may
import internals).

The simulator runs the daemon as a process and checks what it stored, so it needs the
store (to read it), the scaled clock's time line and the config's own rules for what
it writes into a config (`parse_cadence`); the benchmarks drive a few parts
directly: the store and its writer, the uplink, the clock, the direct meter read and the
bus scan.

Each name is imported when first used: a simulator process that only needs the time
line must not pay for the uplink's MQTT and crypto libraries at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concentrator.clock import ScaledClock, scaled_start
    from concentrator.config import UplinkConfig, parse_cadence
    from concentrator.polling.direct import read_direct
    from concentrator.polling.scan import scan
    from concentrator.storage import Store, StoreWriter
    from concentrator.uplink.mqtt import Uplink

_HOMES = {
    "ScaledClock": "concentrator.clock",
    "scaled_start": "concentrator.clock",
    "Store": "concentrator.storage",
    "StoreWriter": "concentrator.storage",
    "Uplink": "concentrator.uplink.mqtt",
    "UplinkConfig": "concentrator.config",
    "parse_cadence": "concentrator.config",
    "read_direct": "concentrator.polling.direct",
    "scan": "concentrator.polling.scan",
}

__all__ = [
    "ScaledClock",
    "Store",
    "StoreWriter",
    "Uplink",
    "UplinkConfig",
    "parse_cadence",
    "read_direct",
    "scaled_start",
    "scan",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
