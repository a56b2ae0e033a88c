"""The receiver's one error root.

Everything the receiver refuses or cannot do, for a reason the user can act on, raises a
`ReceiverError` (a module's own error is a child of it). The command line turns one into
``error: <message>`` on stderr and the error's ``exit_code`` at its edge, in one place
(`cloud_receiver.cli`); anything else is a bug and keeps its traceback.

Exit codes, as for `concentrator`: 2 = bad command line, 1 = anything else; the
analytics add 3 (the stored readings do not cover the report), 7 (the archive is wrong)
and 9 (no such area, meter, account, event or command); access control adds 4 (not
logged in, session expired, login refused, or the role may not do it) and 8 (the audit
chain or a backup does not verify).
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_DATA = 3
EXIT_DENIED = 4
EXIT_ARCHIVE = 7
EXIT_INTEGRITY = 8
EXIT_UNKNOWN = 9


class ReceiverError(Exception):
    """A failure the message explains; ends the command with ``exit_code``."""

    exit_code = EXIT_FAILURE


class NotFound(ReceiverError):
    """No such area, meter, account, event or command (mixed into a module's error)."""

    exit_code = EXIT_UNKNOWN


class StorageError(ReceiverError, ValueError):
    """The database cannot be opened or used as the receiver's (a wrong URL, a foreign
    schema)."""
