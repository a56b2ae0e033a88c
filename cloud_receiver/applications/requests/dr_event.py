"""The ``dr.event`` kind: a demand-response event (`applications.dr`). It opens relays,
so a group of more enrolled meters than ``relay-open-approval-above`` needs a second
operator's approval, as a ``relay_open`` command does."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, TypedDict

from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Action
from cloud_receiver.access.requests import Request
from cloud_receiver.applications import dr
from cloud_receiver.applications.requests.kind import (
    Keys,
    Kind,
    RequestInvalid,
    _command_key,
    _relay_approvals,
)
from cloud_receiver.errors import ReceiverError
from cloud_receiver.storage import Storage


def _decimal(text: object, field: str) -> Decimal:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise RequestInvalid(f"{field} {text!r}: expected kW") from None
    return value


class EventWindow(TypedDict):
    """What `dr.check_event` and `dr.create_event` take of a request; a TypedDict, so
    that where it is unpacked the names are checked."""

    group: str
    start: float
    end: float
    limit_kw: Decimal
    tz: str


class DrEventKind(Kind):
    """params: id, group, start, end, limit_kw, tz, baseline_days."""

    name = "dr.event"
    needs = frozenset({"command"})

    def action(self, params: dict[str, Any]) -> Action:
        return Action.DR_EVENT

    def _window(self, p: dict[str, Any]) -> EventWindow:
        """The event the request asks for, checked before it is queued and created
        when it is carried out."""
        return {
            "group": p["group"],
            "start": p["start"],
            "end": p["end"],
            "limit_kw": _decimal(p["limit_kw"], "--limit-kw"),
            "tz": p["tz"],
        }

    def _meters(self, storage: Storage, p: dict[str, Any]) -> dict[str, str]:
        return dr.check_event(storage, **self._window(p))

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        self._meters(storage, params)

    def approvals(
        self, storage: Storage, params: dict[str, Any], conf: access_settings.Settings
    ) -> int:
        try:
            n = len(self._meters(storage, params))
        except ReceiverError:
            return 0  # it will fail when run, changing nothing
        return _relay_approvals(n, conf)

    def describe(self, params: dict[str, Any]) -> str:
        return (
            f"demand-response event for group {params.get('group')}: at most"
            f" {params.get('limit_kw')} kW from {params.get('start')} to {params.get('end')}"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        key = _command_key(keys)
        p = req.params
        return dr.create_event(
            storage,
            key,
            **self._window(p),
            baseline_days=int(p["baseline_days"]),
            now=now,
            event_id=p["id"],
        )
