"""How long a cellular module's AT commands may take (`drivers.modem`).

A module of its own, so the config's ``[modem]`` defaults come from here without
importing the modem's driver into a daemon that has no modem.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AtTimeouts:
    """How long each command may take before it counts as unanswered, in seconds.

    Maximum response times from the Quectel EC2x/EG9x AT manual [M] (SIMCom's are
    shorter): 300 ms for AT, ATE, +CSQ, +CREG?, +CGMI …; 15 s for +CFUN; 140 s for
    +CGATT; 180 s for +COPS. Booting after a reset takes a module 10–15 s until it
    answers again (RDY); a USB module also re-enumerates its serial ports.
    """

    default_s: float = 1.0  # 300 ms plus room for a loaded UART or USB stack
    cfun_s: float = 15.0
    cgatt_s: float = 140.0
    cops_s: float = 180.0
    boot_s: float = 60.0

    def scaled(self, factor: float) -> AtTimeouts:
        """Every timeout × ``factor`` (tests against an emulator that runs faster),
        except ``default_s``: a short command's wait is about the host, not the radio."""
        return replace(
            self,
            cfun_s=self.cfun_s * factor,
            cgatt_s=self.cgatt_s * factor,
            cops_s=self.cops_s * factor,
            boot_s=self.boot_s * factor,
        )
