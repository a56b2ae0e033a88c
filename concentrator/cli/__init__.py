"""``concentrator``: the field engineer's command line.

Direct mode (``read --port``, ``scan``) opens the serial port itself, for commissioning a
bus before any daemon runs (`direct`). ``status``, ``meters``, ``read METER``, ``relay``,
``time-sync``, ``events``, ``buffer``, ``flush``, ``backfill`` and ``logs`` ask the
running daemon over its control socket (`control`). ``run`` and ``supervise`` are the
daemon and its guard (`service`); ``config check`` and ``stats`` read the site's files
(`files`). Errors become messages and exit codes in one place (`edge`, `exitcodes`).
"""

from concentrator.cli.app import main

__all__ = ["main"]
