"""What the store raises: `StoreError` and the two failures a caller acts on."""

from __future__ import annotations

from concentrator.errors import ConcentratorError


class StoreError(ConcentratorError):
    """Root of every error raised by the store."""


class StoreFullError(StoreError):
    """The disk is full or failed (SQLITE_FULL / SQLITE_IOERR).

    The failing transaction was rolled back and data committed before it is intact.
    Free some space (or lower ``quota_bytes``), then retry. Re-adding the same
    readings is harmless.
    """


class StoreCorruptError(StoreError):
    """The database file is damaged.

    Close the store and open it again. ``Store.open`` moves the damaged file aside and
    records a critical event.
    """


class StoreKeyError(StoreError):
    """The store is encrypted and the key given does not open it.

    Nothing was changed: the store is neither moved aside nor rewritten. Give the
    right ``[storage] key_file``.
    """
