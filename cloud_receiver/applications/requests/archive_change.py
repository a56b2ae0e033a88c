"""The two archive changes, each approved by a second operator: ``archive.import`` (the
meter archive, and which concentrator each meter sits behind) and ``archive.push``
(the archive download, a signed ``archive`` command carrying the meters a
concentrator owns). An import needs no key only the service holds, so the approval
that completes it also carries it out."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from cloud_receiver.access.policy import Action
from cloud_receiver.access.requests import Request
from cloud_receiver.applications.fleet import archive, commands
from cloud_receiver.applications.requests.kind import (
    ApprovedKind,
    CommandFields,
    Keys,
    RequestInvalid,
    _by,
    _check_command,
    _command_key,
    _issued,
)
from cloud_receiver.storage import MeterRecord, Storage, ownership


def _records(params: dict[str, Any]) -> list[MeterRecord]:
    try:
        return [
            MeterRecord(str(r[0]), str(r[1]), r[2], str(r[3]), str(r[4]), Decimal(str(r[5])))
            for r in params["records"]
        ]
    except (KeyError, IndexError, TypeError, InvalidOperation):
        raise RequestInvalid(
            "archive records: expected [meter, area, role, account, group, multiplier] rows"
        ) from None


def _owners(params: dict[str, Any]) -> list[ownership.Assignment]:
    """The ownership an import sets (its ``concentrator`` column), from ``effective``."""
    owners = params.get("owners") or {}
    effective = params.get("effective")
    if not isinstance(owners, dict) or (owners and not isinstance(effective, int)):
        raise RequestInvalid(
            "archive owners: expected {meter: concentrator} and an integer effective time"
        )
    return [
        ownership.Assignment(str(m), int(effective or 0), str(c)) for m, c in sorted(owners.items())
    ]


class ArchiveKind(ApprovedKind):
    """params: records ([meter, area, role, account, group, multiplier] rows), replace,
    source (the file's name), owners ({meter: concentrator}, the file's ``concentrator``
    column) and effective (unix time the owners take effect)."""

    name = "archive.import"

    def action(self, params: dict[str, Any]) -> Action:
        return Action.ARCHIVE_CHANGE

    def _merged(self, storage: Storage, params: dict[str, Any]) -> list[MeterRecord]:
        records = _records(params)
        archive.validate(records)
        if params.get("replace"):
            return records
        try:
            return archive.merge(storage.archive(), records)
        except archive.ArchiveError as exc:
            raise archive.ArchiveError(
                f"{params.get('source', 'archive')}: merged with the stored archive: {exc}"
            ) from None

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        self._merged(storage, params)
        _owners(params)

    def describe(self, params: dict[str, Any]) -> str:
        records = params.get("records") or []
        areas = {r[1] for r in records}
        how = "replacing the archive" if params.get("replace") else "merged into the archive"
        owners = params.get("owners") or {}
        owned = (
            f", {len(owners)} meter(s) assigned to {', '.join(sorted(set(owners.values())))}"
            f" from {params.get('effective')}"
            if owners
            else ""
        )
        return (
            f"archive import of {len(records)} meters in {len(areas)} areas from"
            f" {params.get('source')}, {how}{owned}"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        p = req.params
        merged = self._merged(storage, p)
        by = _by(req)
        changes = [replace(a, assigned_at=now, assigned_by=by) for a in _owners(p)]
        storage.replace_archive(merged)
        with storage.transaction() as conn:
            try:
                moved = ownership.assign(conn, changes)
            except ValueError as exc:
                raise RequestInvalid(str(exc)) from None
        return {
            "imported": len(p["records"]),
            "areas": len({r[1] for r in p["records"]}),
            "archive": len(merged),
            "assigned": moved,
        }


class ArchivePushKind(ApprovedKind):
    """The archive download: params concentrator, id, at (unix time whose owners are
    sent), valid_for_s. Signed by the service (the command key), after a second
    operator's approval, like any archive change."""

    name = "archive.push"
    needs = frozenset({"command"})

    def action(self, params: dict[str, Any]) -> Action:
        return Action.ARCHIVE_CHANGE

    def _draft(self, storage: Storage, params: dict[str, Any]) -> dict[str, Any]:
        with storage.read() as conn:
            version = ownership.version(conn)
            owned = ownership.owned_by(
                ownership.all_histories(conn), str(params["concentrator"]), int(params["at"])
            )
        if version == 0:
            raise RequestInvalid(
                "no meter is assigned to a concentrator yet: `archive import` a file with a"
                " concentrator column first"
            )
        return {"version": version, "meters": owned}

    def _fields(self, p: dict[str, Any], draft: dict[str, Any]) -> CommandFields:
        """The ``archive`` command that carries ``draft`` (`_draft`)."""
        return {
            "concentrator": p["concentrator"],
            "action": "archive",
            "params": draft,
            "valid_for_s": p["valid_for_s"],
            "command_id": p["id"],
        }

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        _check_command(self._fields(params, self._draft(storage, params)))

    def describe(self, params: dict[str, Any]) -> str:
        return (
            f"archive download to {params.get('concentrator')}: the meters it owns at"
            f" {params.get('at')}"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        key = _command_key(keys)
        p = req.params
        draft = self._draft(storage, p)
        record = commands.issue(storage, key, **self._fields(p, draft), issued_by=_by(req), now=now)
        return {**_issued(record), "version": draft["version"], "meters": len(draft["meters"])}
