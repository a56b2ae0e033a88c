"""Why a message is refused: one closed list of reasons, shared by every part of the format."""

from __future__ import annotations

from typing import Literal, NoReturn

WireErrorReason = Literal[
    "truncated",
    "bad_magic",
    "unsupported_version",
    "bad_header",
    "unknown_key",
    "auth_failed",
    "bad_compression",
    "too_large",
    "bad_cbor",
    "bad_layout",
    "unresolved_reference",
]


class WireError(Exception):
    """A message that cannot be accepted. ``reason`` says why, for metrics and quarantine.

    "truncated" may become valid with more bytes; every other reason means the message
    is wrong as it stands. Only "auth_failed" and "unknown_key" can be caused by keys
    rather than by the sender. "unresolved_reference" is no fault of either: a batch
    coded against values the receiver does not hold (or holds differently); the
    receiver stores nothing and asks for a key batch (`contract.wire.references`).
    """

    def __init__(self, reason: WireErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: WireErrorReason = reason


def fail(reason: WireErrorReason, message: str) -> NoReturn:
    raise WireError(reason, message)
