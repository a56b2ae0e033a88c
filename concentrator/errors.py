"""The root of every error the concentrator raises on purpose.

Each part has its own children (``ConfigError``, ``StoreError``, ``ControlError``, …)
and knows nothing of exit codes: the field CLI turns any ``ConcentratorError`` into one
message and an exit code in one place (``concentrator.cli.edge``). Errors of the
drivers (``drivers.errors.DriverError``) and of the shared contract are not ours and
keep their own roots.
"""

from __future__ import annotations


class ConcentratorError(Exception):
    """Something the concentrator detected and can say in one message."""
