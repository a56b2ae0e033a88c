"""What every kind of request is (`Kind`), the keys the service holds for them, and
the rules more than one kind follows: who a request's action is recorded as done by,
the approval that opening many relays needs, and the command a kind signs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Action
from cloud_receiver.access.requests import Request
from cloud_receiver.applications.fleet import commands
from cloud_receiver.errors import EXIT_USAGE, ReceiverError
from cloud_receiver.storage import CommandRecord, Storage
from contract.commands import CommandError


class RequestInvalid(ReceiverError, ValueError):
    """A request whose parameters cannot be carried out (the message names the field)."""

    exit_code = EXIT_USAGE


class CommandFields(TypedDict):
    """What `commands.issue` takes of a request (all but the key, who and when); a
    TypedDict, so that where it is unpacked (``**fields``) the names are checked."""

    concentrator: str
    action: str
    meters: NotRequired[Sequence[str]]
    params: dict[str, Any] | None
    not_before: NotRequired[float | None]
    valid_for_s: float
    command_id: str | None


@dataclass(frozen=True)
class Keys:
    """What the service holds: the command signing key, the release public key."""

    command: Ed25519PrivateKey | None = None
    release: Callable[[], Ed25519PublicKey] | None = None


class Kind:
    """One kind of request: its policy action, the checks made before it is queued,
    the approvals it needs and how the service carries it out."""

    name = ""
    needs: frozenset[str] = frozenset()  # "command", "release": keys only the service holds

    def action(self, params: dict[str, Any]) -> Action:
        raise NotImplementedError

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        """Raise a `ReceiverError` naming what is wrong; nothing is stored."""

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        return 0

    def describe(self, params: dict[str, Any]) -> str:
        raise NotImplementedError

    def execute(
        self,
        storage: Storage,
        keys: Keys,
        req: Request,
        attachment: bytes | None,
        now: float,
    ) -> dict[str, Any]:
        raise NotImplementedError


class ApprovedKind(Kind):
    """A kind a second operator always approves: an archive change, a rollout."""

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        return 1


def _command_key(keys: Keys) -> Ed25519PrivateKey:
    """The command key a kind that ``needs`` it is only run with (`execute_ready`)."""
    assert keys.command is not None
    return keys.command


def _by(req: Request) -> str:
    """Who the audit trail, the supply reasons and the commands say acted."""
    return f"operator:{req.requested_by} (request {req.id})"


def _relay_approvals(meters: int, conf: access_settings.Settings) -> int:
    """Opening the relays of more meters than ``relay-open-approval-above`` needs a
    second operator (a ``relay_open`` command, a demand-response event)."""
    return 1 if meters > conf.relay_open_approval_above else 0


def _check_command(fields: CommandFields) -> None:
    """Check the command a request will sign (``fields``: what `commands.issue` takes
    but the key, who issues it and when), so that a bad one is refused at once."""
    try:
        commands.draft_command(**fields)
    except CommandError as exc:
        raise RequestInvalid(str(exc)) from None


def _issued(record: CommandRecord) -> dict[str, Any]:
    """What a request that signed a command reports of it."""
    return {"id": record.id, "counter": record.counter, "status": record.status}
