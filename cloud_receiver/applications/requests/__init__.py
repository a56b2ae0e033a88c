"""What operators ask the service to do, and how the service does it.

Five kinds of request (`KINDS`), each knowing its policy action, how to check its
parameters before it is queued (so bad input is refused at once, naming the field),
how many approvals it needs, and how it is carried out:

- ``command``: a signed downlink command (`applications.fleet.commands`); a
  ``relay_open`` for more meters than ``relay-open-approval-above`` needs a second
  operator's approval;
- ``dr.event``: a demand-response event (`applications.dr`); it opens relays, so a
  group of more enrolled meters than that threshold needs an approval too;
- ``archive.import``: a change of the meter archive (and of which concentrator each
  meter sits behind), always approved by a second operator;
- ``archive.push``: the archive download, a signed ``archive`` command carrying the
  meters a concentrator owns; an archive change, so approved by a second operator;
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

The package: `kind` (`Kind`, `Keys`, `RequestInvalid` and the rules several kinds
share), one module a kind (`command`, `supply_order`, `dr_event`, `archive_change` for
both archive kinds, `rollout_start`), `registry` (`KINDS`, `kind_of`, `describe`),
`submission` (`submit`) and `execution` (`execute_ready`). Callers import the package,
which re-exports them.
"""

from __future__ import annotations

# Reached as ``requests.archive`` (its `ArchiveError` is what an import raises), as
# when this package was one module that imported it.
from cloud_receiver.applications.fleet import archive
from cloud_receiver.applications.requests.archive_change import ArchiveKind, ArchivePushKind
from cloud_receiver.applications.requests.command import COMMAND_ACTIONS, CommandKind
from cloud_receiver.applications.requests.dr_event import DrEventKind
from cloud_receiver.applications.requests.execution import execute_ready
from cloud_receiver.applications.requests.kind import ApprovedKind, Keys, Kind, RequestInvalid
from cloud_receiver.applications.requests.registry import KINDS, describe, kind_of
from cloud_receiver.applications.requests.rollout_start import RolloutKind
from cloud_receiver.applications.requests.submission import submit
from cloud_receiver.applications.requests.supply_order import ORDERS, SupplyKind

__all__ = [
    "COMMAND_ACTIONS",
    "KINDS",
    "ORDERS",
    "ApprovedKind",
    "ArchiveKind",
    "ArchivePushKind",
    "CommandKind",
    "DrEventKind",
    "Keys",
    "Kind",
    "RequestInvalid",
    "RolloutKind",
    "SupplyKind",
    "archive",
    "describe",
    "execute_ready",
    "kind_of",
    "submit",
]
