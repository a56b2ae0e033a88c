"""What the simulator (``hil_sim``) and the benchmarks (``bench``) may use of the
concentrator; everything else is internal and may change without notice.

The simulator runs the daemon as a process and checks what it stored, so it needs the
store (read side) and the scaled clock's time line; the benchmarks drive a few parts
directly (the store and its writer, the uplink, the clock). Tests may import internals.
"""

from concentrator.clock import ScaledClock, scaled_start
from concentrator.config import UplinkConfig
from concentrator.storage import Store, StoreWriter
from concentrator.uplink.mqtt import Uplink

__all__ = ["ScaledClock", "Store", "StoreWriter", "Uplink", "UplinkConfig", "scaled_start"]
