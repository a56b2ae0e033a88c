"""The keys of a carrier bus that say who the module is: master node address, mode.

Both are optional: the worker learns them from the module (AFN 03 F4 and 03 F10); a
configured value wins, for modules that report none or a wrong one (docs/protocols.md
§3.1, §3.4).
"""

from __future__ import annotations

import re

from concentrator.config.table import Table, optional

# Communication modes of the 1376.2 control byte (docs/protocols.md §3.1).
COMM_MODES = (1, 2, 3, 10, 20)
_MASTER_ADDRESS = re.compile(r"[0-9A-Fa-f]{12}")


def carrier_identity(t: Table, failed: list[bool]) -> tuple[str | None, int | None]:
    """``master_address`` (12 hex digits, upper-cased) and ``comm_mode``, None when absent."""
    master = optional(
        lambda: t.pattern(
            "master_address",
            _MASTER_ADDRESS,
            "a master node address of 12 hex digits (docs/protocols.md §3.4)",
            None,
        ),
        failed,
    )
    mode = optional(lambda: t.integer("comm_mode", 1, 20, None), failed)
    if mode is not None and mode not in COMM_MODES:
        modes = ", ".join(map(str, COMM_MODES))
        t.issue("comm_mode", f"{mode} is not a communication mode of the control byte ({modes})")
        failed.append(True)
    return (master.upper() if master is not None else None), mode
