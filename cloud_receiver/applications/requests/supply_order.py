"""The ``supply`` kind: an operator's ``manual`` or ``maintenance`` supply reason set
or cleared; `applications.supply.state` decides the relay command it sends."""

from __future__ import annotations

from typing import Any

from cloud_receiver.access.policy import Action
from cloud_receiver.access.requests import Request
from cloud_receiver.applications.requests.kind import (
    Keys,
    Kind,
    RequestInvalid,
    _by,
    _command_key,
)
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.storage import Storage

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
        key = _command_key(keys)
        p, by = req.params, _by(req)
        if p["set"]:
            change = supply.set_reason(storage, key, meter=p["meter"],
                                       concentrator=self._concentrator(storage, p),
                                       reason=p["reason"], by=by, now=now,
                                       ref=f"request:{req.id}")  # fmt: skip
        else:
            change = supply.clear_reason(storage, key, meter=p["meter"],
                                         reason=p["reason"], by=by, now=now)  # fmt: skip
        holding = change.holding(now)
        return {"meter": p["meter"], "reasons": holding, "relay": supply.relay_for(holding),
                "command": None if change.command is None else change.command.id}  # fmt: skip
