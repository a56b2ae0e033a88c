"""What operators ask the service to do, and how the service does it.

Five kinds of request (`KINDS`), each knowing its policy action, how to check its
parameters before it is queued (so bad input is refused at once, naming the field),
how many approvals it needs, and how it is carried out:

- ``command``: a signed downlink command (`applications.fleet.commands`); a
  ``relay_open`` for more meters than ``relay-open-approval-above`` needs a second
  operator's approval;
- ``dr.event``: a demand-response event (`applications.dr`); it opens relays, so a
  group of more enrolled meters than that threshold needs an approval too;
- ``archive.import``: a change of the meter archive, always approved by a second
  operator;
- ``rollout.start``: a staged software rollout (with its release package as the
  request's attachment), always approved by a second operator;
- ``supply``: an operator's ``manual`` or ``maintenance`` supply reason set or cleared
  (`applications.supply.state` decides the relay command). A ``command`` relay-open
  sets the ``manual`` reason and a relay-close clears it, refused while another reason
  holds the supply off.

`submit` is what a command line (or, later, an HTTP API) calls; `execute_ready` is
what the running service calls each tick. A kind that needs a key only the service
holds (the command key; the release key that checks a package) waits for the service;
an archive change needs none, so the approval that completes it also carries it out
(`execute_ready` with ``only=`` that request), through the same checks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_receiver.access import audit
from cloud_receiver.access import requests as queue
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Action, Denied, Principal, Resource, authorize
from cloud_receiver.access.requests import Request
from cloud_receiver.access.sessions import get_session
from cloud_receiver.applications import dr
from cloud_receiver.applications.fleet import archive, commands, rollout
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.errors import EXIT_USAGE, ReceiverError
from cloud_receiver.storage import MeterRecord, Storage
from contract import package
from contract.commands import CommandError

log = logging.getLogger(__name__)


class RequestInvalid(ReceiverError, ValueError):
    """A request whose parameters cannot be carried out (the message names the field)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Keys:
    """What the service holds: the command signing key, the release public key."""

    command: Ed25519PrivateKey | None = None
    release: Callable[[], Ed25519PublicKey] | None = None


class Kind:
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


# ------------------------------------------------------------------ command
COMMAND_ACTIONS = {
    "relay_open": Action.COMMAND_RELAY,
    "relay_close": Action.COMMAND_RELAY,
    "read": Action.COMMAND_QUERY,
    "clock_check": Action.COMMAND_QUERY,
    "time_sync": Action.COMMAND_CONFIGURE,
    "add_meter": Action.COMMAND_CONFIGURE,
    "remove_meter": Action.COMMAND_CONFIGURE,
}


class CommandKind(Kind):
    """params: id, concentrator, action, meters, params, not_before, valid_for_s."""

    name = "command"
    needs = frozenset({"command"})

    def action(self, params: dict[str, Any]) -> Action:
        found = COMMAND_ACTIONS.get(str(params.get("action")))
        if found is None:
            raise RequestInvalid(
                f"action {params.get('action')!r}: expected one of {', '.join(COMMAND_ACTIONS)}"
            )
        return found

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        self.action(params)
        _no_close_against_a_reason(storage, params)
        try:
            commands.draft_command(
                concentrator=params["concentrator"],
                action=params["action"],
                meters=params["meters"],
                params=params["params"],
                not_before=params["not_before"],
                valid_for_s=params["valid_for_s"],
                command_id=params["id"],
            )
        except CommandError as exc:
            raise RequestInvalid(str(exc)) from None

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        many = len(params.get("meters") or ()) > conf.relay_open_approval_above
        return 1 if params.get("action") == "relay_open" and many else 0

    def describe(self, params: dict[str, Any]) -> str:
        meters = list(params.get("meters") or ())
        shown = ", ".join(meters[:5]) + (f" and {len(meters) - 5} more" if len(meters) > 5 else "")
        what = str(params.get("action", "?")).replace("_", "-")
        return f"{what} on {params.get('concentrator')}" + (
            f" for {len(meters)} meter(s): {shown}" if meters else ""
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        assert keys.command is not None
        p = req.params
        by = f"operator:{req.requested_by} (request {req.id})"
        _no_close_against_a_reason(storage, p)  # a reason may have come since it was asked
        record = commands.issue(
            storage,
            keys.command,
            concentrator=p["concentrator"],
            action=p["action"],
            meters=p["meters"],
            params=p["params"],
            not_before=p["not_before"],
            valid_for_s=p["valid_for_s"],
            issued_by=by,
            now=now,
            command_id=p["id"],
        )
        # A manual relay order is the ``manual`` supply reason (this command moves it).
        ordered = supply.meters_with(storage, supply.MANUAL)
        for m in p["meters"] if p["action"] in ("relay_open", "relay_close") else ():
            if p["action"] == "relay_open":
                supply.set_reason(storage, keys.command, meter=m, concentrator=p["concentrator"],
                                  reason=supply.MANUAL, by=by, now=now, ref=f"request:{req.id}",
                                  send=False)  # fmt: skip
            elif m in ordered:
                supply.clear_reason(storage, keys.command, meter=m, reason=supply.MANUAL, by=by,
                                    now=now, send=False)  # fmt: skip
        return {"id": record.id, "counter": record.counter, "status": record.status}


def _no_close_against_a_reason(storage: Storage, params: dict[str, Any]) -> None:
    if params.get("action") == "relay_close":
        start = params.get("not_before")
        at = float(start) if isinstance(start, (int, float)) else time.time()
        supply.check_close(storage, [str(m) for m in params.get("meters") or ()], at)


# ------------------------------------------------------------------ supply orders
ORDERS = (supply.MANUAL, supply.MAINTENANCE)


class SupplyKind(Kind):
    """params: meter, concentrator (None: the one its supply state names), reason
    (``manual`` or ``maintenance``), set (True: set, False: clear)."""

    name = "supply"
    needs = frozenset({"command"})

    def action(self, params: dict[str, Any]) -> Action:
        return Action.COMMAND_RELAY

    def _concentrator(self, storage: Storage, p: dict[str, Any]) -> str:
        if p.get("concentrator"):
            return str(p["concentrator"])
        try:
            return supply.get(storage, str(p["meter"])).concentrator
        except supply.UnknownSupply:
            raise RequestInvalid(
                f"meter {p['meter']}: --concentrator is needed (no supply state names it yet)"
            ) from None

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        supply.check_meter(str(params.get("meter")))
        if params.get("reason") not in ORDERS:
            raise RequestInvalid(
                f"reason {params.get('reason')!r}: expected {' or '.join(ORDERS)} (prepayment"
                " and demand response set and clear their own)"
            )
        if params.get("set"):
            self._concentrator(storage, params)
        elif params["meter"] not in supply.meters_with(storage, params["reason"]):
            raise RequestInvalid(f"meter {params['meter']} has no {params['reason']} reason")

    def describe(self, params: dict[str, Any]) -> str:
        how = "set" if params.get("set") else "clear"
        return f"{how} the {params.get('reason')} supply reason of meter {params.get('meter')}"

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        assert keys.command is not None
        p, by = req.params, f"operator:{req.requested_by} (request {req.id})"
        if p["set"]:
            change = supply.set_reason(storage, keys.command, meter=p["meter"],
                                       concentrator=self._concentrator(storage, p),
                                       reason=p["reason"], by=by, now=now,
                                       ref=f"request:{req.id}")  # fmt: skip
        else:
            change = supply.clear_reason(storage, keys.command, meter=p["meter"],
                                         reason=p["reason"], by=by, now=now)  # fmt: skip
        holding = change.holding(now)
        return {"meter": p["meter"], "reasons": holding, "relay": supply.relay_for(holding),
                "command": None if change.command is None else change.command.id}  # fmt: skip


# ------------------------------------------------------------------ demand response
def _decimal(text: object, field: str) -> Decimal:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise RequestInvalid(f"{field} {text!r}: expected kW") from None
    return value


class DrEventKind(Kind):
    """params: id, group, start, end, limit_kw, tz, baseline_days."""

    name = "dr.event"
    needs = frozenset({"command"})

    def action(self, params: dict[str, Any]) -> Action:
        return Action.DR_EVENT

    def _meters(self, storage: Storage, p: dict[str, Any]) -> dict[str, str]:
        return dr.check_event(
            storage,
            group=p["group"],
            start=p["start"],
            end=p["end"],
            limit_kw=_decimal(p["limit_kw"], "--limit-kw"),
            tz=p["tz"],
        )

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        self._meters(storage, params)

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        try:
            n = len(self._meters(storage, params))
        except ReceiverError:
            return 0  # it will fail when run, changing nothing
        return 1 if n > conf.relay_open_approval_above else 0

    def describe(self, params: dict[str, Any]) -> str:
        return (
            f"demand-response event for group {params.get('group')}: at most"
            f" {params.get('limit_kw')} kW from {params.get('start')} to {params.get('end')}"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        assert keys.command is not None
        p = req.params
        return dr.create_event(
            storage,
            keys.command,
            group=p["group"],
            start=p["start"],
            end=p["end"],
            limit_kw=_decimal(p["limit_kw"], "--limit-kw"),
            tz=p["tz"],
            baseline_days=int(p["baseline_days"]),
            now=now,
            event_id=p["id"],
        )


# ------------------------------------------------------------------ the archive
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


class ArchiveKind(Kind):
    """params: records ([meter, area, role, account, group, multiplier] rows), replace,
    source (the file's name)."""

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

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        return 1

    def describe(self, params: dict[str, Any]) -> str:
        records = params.get("records") or []
        areas = {r[1] for r in records}
        how = "replacing the archive" if params.get("replace") else "merged into the archive"
        return (
            f"archive import of {len(records)} meters in {len(areas)} areas from"
            f" {params.get('source')}, {how}"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        p = req.params
        merged = self._merged(storage, p)
        storage.replace_archive(merged)
        return {
            "imported": len(p["records"]),
            "areas": len({r[1] for r in p["records"]}),
            "archive": len(merged),
        }


# ------------------------------------------------------------------ rollouts
class RolloutKind(Kind):
    """params: version, stages ([name, target] pairs), health_window_s; the attachment
    is the release package, when the version is not stored yet."""

    name = "rollout.start"
    needs = frozenset({"release"})

    def action(self, params: dict[str, Any]) -> Action:
        return Action.ROLLOUT_START

    def _stages(self, params: dict[str, Any]) -> list[rollout.Stage]:
        return [rollout.Stage.parse(f"{n}:{t}") for n, t in params["stages"]]

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        stages = self._stages(params)
        if not stages:
            raise rollout.RolloutError("a rollout needs at least one stage")
        if not float(params["health_window_s"]) > 0:
            raise rollout.RolloutError("the health window must be positive")
        version = str(params["version"])
        if attachment is not None:
            try:
                pkg = package.Package.from_bytes(attachment)
                m = package.Manifest.from_bytes(pkg.manifest)
            except package.PackageError as exc:
                raise rollout.RolloutError(str(exc)) from exc
            if m.version != version:
                raise rollout.RolloutError(f"the package holds release {m.version}, not {version}")
        elif version not in rollout.stored_versions(storage):
            raise rollout.RolloutError(
                f"no release {version}: add it with `rollout start --package`"
            )
        running = [d for d in rollout.status(storage) if d["state"] == rollout.RUNNING]
        if running:
            raise rollout.RolloutError(
                f"rollout {running[0]['id']} ({running[0]['version']}) is still running:"
                " abort it first"
            )

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        return 1

    def describe(self, params: dict[str, Any]) -> str:
        stages = ", ".join(f"{n}:{t}" for n, t in params.get("stages") or [])
        return (
            f"rollout of {params.get('version')} in stages {stages}, health window"
            f" {params.get('health_window_s')} s"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        assert keys.release is not None
        p = req.params
        version = str(p["version"])
        if attachment is not None:
            try:
                m = rollout.add_release(
                    storage, package.Package.from_bytes(attachment), keys.release(), now
                )
            except package.PackageError as exc:
                raise rollout.RolloutError(str(exc)) from exc
            if m.version != version:
                raise rollout.RolloutError(f"the package holds release {m.version}, not {version}")
        rollout_id = rollout.start(
            storage, version, self._stages(p), float(p["health_window_s"]), now
        )
        return {"id": rollout_id, "version": version}


KINDS: dict[str, Kind] = {
    k.name: k for k in (CommandKind(), DrEventKind(), ArchiveKind(), RolloutKind(), SupplyKind())
}


def kind_of(name: str) -> Kind:
    found = KINDS.get(name)
    if found is None:
        raise RequestInvalid(f"request kind {name!r}: expected one of {', '.join(KINDS)}")
    return found


def describe(req: Request) -> str:
    """What a request asks for, from its parameters (what an approver reads)."""
    kind = KINDS.get(req.kind)
    return f"unknown kind {req.kind}" if kind is None else kind.describe(req.params)


# ------------------------------------------------------------------ asking
def submit(
    storage: Storage,
    principal: Principal,
    key: Ed25519PrivateKey,
    kind_name: str,
    params: dict[str, Any],
    *,
    now: float,
    attachment: bytes | None = None,
) -> Request:
    """Authorize, check and queue a request signed with the operator's session key."""
    kind = kind_of(kind_name)
    action = kind.action(params)
    decision = authorize(principal, action, Resource(kind_name))
    with storage.transaction() as tx:
        conf = access_settings.load(tx)
        session = get_session(tx, principal.session or "")
        if not decision:
            audit.record(
                tx,
                principal,
                kind="denied",
                action=str(action),
                target=kind_name,
                at=now,
                outcome="denied",
                detail={"reason": decision.reason},
                key=key,
            )
    if not decision:
        raise Denied(decision.reason)
    assert session is not None
    kind.check(storage, params, attachment)
    needed = kind.approvals(storage, params, conf)
    return queue.submit(
        storage,
        principal,
        key,
        kind=kind_name,
        action=action,
        params=params,
        approvals_needed=needed,
        lifetime=conf.request_lifetime,
        session_expires=session.expires_at,
        now=now,
        attachment_bytes=attachment,
    )


# ------------------------------------------------------------------ carrying out
def execute_ready(
    storage: Storage,
    keys: Keys,
    now: float,
    *,
    by: Principal,
    only: int | None = None,
) -> list[str]:
    """Expire what is overdue, then carry out every ready request this process holds
    the keys for (``only``: that one request); returns what was done, for the log."""
    done: list[str] = []
    with storage.transaction() as tx:
        for req in queue.expire(tx, now):
            done.append(f"request {req.id} ({req.kind}) expired")
        ready = queue.ready(tx)
    held = {name for name, key in (("command", keys.command), ("release", keys.release)) if key}
    for req in ready:
        kind = KINDS.get(req.kind)
        if (only is not None and req.id != only) or (kind is not None and not kind.needs <= held):
            continue
        with storage.transaction() as tx:
            if not queue.claim(tx, req.id, now):
                continue  # another receiver (or command line) carries it out
        done.append(_execute(storage, kind, req, keys, now, by))
    return done


def _execute(
    storage: Storage, kind: Kind | None, req: Request, keys: Keys, now: float, by: Principal
) -> str:
    with storage.transaction() as tx:
        attachment = queue.attachment(tx, req.id)
        conf = access_settings.load(tx)
    required = req.approvals_needed
    why = None if kind is not None else f"request {req.id}: unknown kind {req.kind!r}"
    lie = None
    if kind is not None:
        try:  # the requester's command line said what and how many; the service decides
            asked = kind.action(req.params)
            required = max(required, kind.approvals(storage, req.params, conf))
        except Exception as exc:
            why = f"request {req.id}: unreadable parameters ({exc})"
        else:
            if str(asked) != req.action:
                why = lie = f"request {req.id}: it asks for {asked} but names {req.action}"
    with storage.transaction() as tx:
        forged = queue.signature_problem(tx, req, now) or lie
        why = why or queue.check(tx, req, required, now)
        digest = None if attachment is None else hashlib.sha256(attachment).hexdigest()
        if why is None and digest != req.attachment_sha256:
            why = forged = f"request {req.id}: its attachment is not the one signed (altered)"
        approvers = queue.valid_approvers(tx, req, now)
        if why is not None:
            queue.finish(tx, req.id, "refused", {"error": why}, now)
            audit.record(
                tx,
                by,
                kind="execution",
                action=req.action,
                target=f"request:{req.id}",
                at=now,
                outcome="refused",
                detail={"requested_by": req.requested_by, "reason": why},
            )
            if forged is not None:
                audit.alert(
                    tx,
                    "forged_request",
                    f"request:{req.id}",
                    now,
                    {"reason": forged, "requested_by": req.requested_by},
                    by.origin,
                )
    if why is not None:
        log.warning("%s: refused", why)
        return f"{why}: refused"
    assert kind is not None
    status = "done"
    try:
        result = kind.execute(storage, keys, req, attachment, now)
    except ReceiverError as exc:
        status, result = "failed", {"error": str(exc), "exit_code": exc.exit_code}
    except Exception as exc:  # a bug or the database: recorded, the service goes on
        log.exception("request %d (%s) failed", req.id, req.kind)
        status, result = "failed", {"error": repr(exc), "exit_code": 1}
    with storage.transaction() as tx:
        queue.finish(tx, req.id, status, result, now)
        audit.record(
            tx,
            by,
            kind="execution",
            action=req.action,
            target=f"request:{req.id}",
            at=now,
            outcome=status,
            detail={"requested_by": req.requested_by, "approved_by": approvers, "result": result},
        )
    return f"request {req.id} ({req.kind}) by {req.requested_by}: {status}"
