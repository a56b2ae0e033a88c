"""The kinds of request by name (`KINDS`): what `submit` looks a request's kind up in,
what `execute_ready` carries it out with, and what an approver reads (`describe`)."""

from __future__ import annotations

from cloud_receiver.access.requests import Request
from cloud_receiver.applications.requests.archive_change import ArchiveKind, ArchivePushKind
from cloud_receiver.applications.requests.command import CommandKind
from cloud_receiver.applications.requests.dr_event import DrEventKind
from cloud_receiver.applications.requests.kind import Kind, RequestInvalid
from cloud_receiver.applications.requests.rollout_start import RolloutKind
from cloud_receiver.applications.requests.supply_order import SupplyKind

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        CommandKind(),
        DrEventKind(),
        ArchiveKind(),
        ArchivePushKind(),
        RolloutKind(),
        SupplyKind(),
    )
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
