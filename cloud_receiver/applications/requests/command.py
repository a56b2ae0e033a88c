"""The ``command`` kind: a signed downlink command (`applications.fleet.commands`). A
``relay_open`` for more meters than ``relay-open-approval-above`` needs a second
operator's approval; a relay-open sets the meters' ``manual`` supply reason and a
relay-close clears it, refused while another reason holds the supply off."""

from __future__ import annotations

import time
from typing import Any

from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Action
from cloud_receiver.access.requests import Request
from cloud_receiver.applications.fleet import commands
from cloud_receiver.applications.requests.kind import (
    CommandFields,
    Keys,
    Kind,
    RequestInvalid,
    _by,
    _check_command,
    _command_key,
    _issued,
    _relay_approvals,
)
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.storage import Storage

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

    def _fields(self, p: dict[str, Any]) -> CommandFields:
        """The command the request asks for, checked before it is queued and signed
        when it is carried out."""
        return {
            "concentrator": p["concentrator"],
            "action": p["action"],
            "meters": p["meters"],
            "params": p["params"],
            "not_before": p["not_before"],
            "valid_for_s": p["valid_for_s"],
            "command_id": p["id"],
        }

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        self.action(params)
        _no_close_against_a_reason(storage, params)
        _check_command(self._fields(params))

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        meters = len(params.get("meters") or ())
        return _relay_approvals(meters, conf) if params.get("action") == "relay_open" else 0

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
        key = _command_key(keys)
        p, by = req.params, _by(req)
        _no_close_against_a_reason(storage, p)  # a reason may have come since it was asked
        record = commands.issue(storage, key, **self._fields(p), issued_by=by, now=now)
        # A manual relay order is the ``manual`` supply reason (this command moves it).
        ordered = supply.meters_with(storage, supply.MANUAL)
        for m in p["meters"] if p["action"] in ("relay_open", "relay_close") else ():
            if p["action"] == "relay_open":
                supply.set_reason(storage, key, meter=m, concentrator=p["concentrator"],
                                  reason=supply.MANUAL, by=by, now=now, ref=f"request:{req.id}",
                                  send=False)  # fmt: skip
            elif m in ordered:
                supply.clear_reason(storage, key, meter=m, reason=supply.MANUAL, by=by,
                                    now=now, send=False)  # fmt: skip
        return _issued(record)


def _no_close_against_a_reason(storage: Storage, params: dict[str, Any]) -> None:
    if params.get("action") == "relay_close":
        start = params.get("not_before")
        at = float(start) if isinstance(start, (int, float)) else time.time()
        supply.check_close(storage, [str(m) for m in params.get("meters") or ()], at)
