"""Who may do what: the one place role checks are made.

`authorize(principal, action, resource)` answers for every caller — the command line
today, a web portal or an HTTP API later — from one table (`PERMISSIONS`: role → the
actions it may take) and two rules that depend on the resource:

- approving a request needs a role that may take the request's action itself, and
  never the operator who asked for it;
- cancelling a request is for the operator who asked for it, or an administrator.

A `Principal` is who acts: an operator (named, with a role, acting through a login
session) or a system principal (the service itself today; per-system API tokens in a
later issue get a `system` principal and the `system` role's row, or rows of their own).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud_receiver.errors import EXIT_DENIED, ReceiverError


class Role(StrEnum):
    VIEWER = "viewer"
    BILLING_CLERK = "billing-clerk"
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"
    SYSTEM = "system"  # not an operator's: the service, later API tokens
    CUSTOMER = "customer"  # a customer of the portal: their own meters and accounts only


OPERATOR_ROLES = (Role.VIEWER, Role.BILLING_CLERK, Role.OPERATOR, Role.ADMINISTRATOR)
# Roles that can change supply or software log in with a second factor (TOTP).
TOTP_ROLES = frozenset({Role.OPERATOR, Role.ADMINISTRATOR})


class Action(StrEnum):
    DATA_READ = "data.read"  # readings, usage, loss, suspects, forecast, DR reports, archive
    FLEET_READ = "fleet.read"  # concentrators, commands, rollouts
    PREPAY_READ = "prepay.read"  # balances and ledgers
    REQUEST_READ = "request.read"  # the requests waiting or done
    PREPAY_OPEN = "prepay.open"
    PREPAY_TOPUP = "prepay.topup"
    CUSTOMER_MANAGE = "customer.manage"  # portal logins of customers, their meters
    DR_ENROL = "dr.enrol"
    DR_EVENT = "dr.event"
    COMMAND_QUERY = "command.query"  # read, clock-check
    COMMAND_CONFIGURE = "command.configure"  # time-sync, add-meter, remove-meter
    COMMAND_RELAY = "command.relay"  # relay-open, relay-close
    ARCHIVE_CHANGE = "archive.change"
    ROLLOUT_START = "rollout.start"
    ROLLOUT_ABORT = "rollout.abort"
    REQUEST_APPROVE = "request.approve"
    REQUEST_CANCEL = "request.cancel"
    OPERATOR_READ = "operator.read"
    OPERATOR_MANAGE = "operator.manage"
    SETTINGS_CHANGE = "settings.change"
    AUDIT_READ = "audit.read"
    BACKUP = "backup"
    KEY_REVOKE = "key.revoke"  # revoke a concentrator's certificates


_READ = frozenset({Action.DATA_READ, Action.FLEET_READ, Action.PREPAY_READ, Action.REQUEST_READ})
_OWN_REQUESTS = frozenset({Action.REQUEST_APPROVE, Action.REQUEST_CANCEL})
_SUPPLY_AND_SOFTWARE = frozenset(
    {
        Action.DR_ENROL,
        Action.DR_EVENT,
        Action.COMMAND_QUERY,
        Action.COMMAND_CONFIGURE,
        Action.COMMAND_RELAY,
        Action.ARCHIVE_CHANGE,
        Action.ROLLOUT_START,
        Action.ROLLOUT_ABORT,
    }
)
_BILLING = frozenset({Action.PREPAY_OPEN, Action.PREPAY_TOPUP, Action.CUSTOMER_MANAGE})
_ADMINISTRATION = frozenset(
    {
        Action.OPERATOR_READ,
        Action.OPERATOR_MANAGE,
        Action.SETTINGS_CHANGE,
        Action.AUDIT_READ,
        Action.BACKUP,
        Action.KEY_REVOKE,
    }
)

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: _READ,
    Role.BILLING_CLERK: _READ | _BILLING | _OWN_REQUESTS,
    Role.OPERATOR: _READ | _SUPPLY_AND_SOFTWARE | _OWN_REQUESTS,
    Role.ADMINISTRATOR: _READ | _BILLING | _SUPPLY_AND_SOFTWARE | _OWN_REQUESTS | _ADMINISTRATION,
    # The service's own work (prepaid cut-offs, rollout offers) and, later, API tokens.
    Role.SYSTEM: frozenset(
        {Action.DATA_READ, Action.FLEET_READ, Action.COMMAND_RELAY, Action.COMMAND_CONFIGURE}
    ),
    # A customer reads usage, balance and ledger — of what is theirs (`authorize`).
    Role.CUSTOMER: frozenset({Action.DATA_READ, Action.PREPAY_READ}),
}
# What a customer's resource may be: one of their meters or accounts, or themselves.
CUSTOMER_RESOURCES = frozenset({"meter", "account", "customer"})


def may(role: Role, action: Action) -> bool:
    """Whether ``role`` may take ``action`` at all (the table, without the resource)."""
    return action in PERMISSIONS.get(role, frozenset())


@dataclass(frozen=True)
class Principal:
    """Who acts. ``session`` names the login session an operator acts through."""

    kind: str  # "operator", "system" or "customer"
    name: str
    role: Role
    session: str | None = None
    origin: str = ""

    @classmethod
    def operator(cls, name: str, role: Role, session: str | None, origin: str) -> Principal:
        return cls("operator", name, role, session, origin)

    @classmethod
    def system(cls, name: str, origin: str = "") -> Principal:
        return cls("system", name, Role.SYSTEM, None, origin)

    @classmethod
    def customer(cls, name: str, origin: str = "") -> Principal:
        return cls("customer", name, Role.CUSTOMER, None, origin)

    @property
    def label(self) -> str:
        """``operator:alice``, ``system:receiver`` — as the audit log names it."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Resource:
    """What an action is taken on: ``kind`` and ``name`` (``meter``/``000000000001``,
    ``account``/``A1``, ``area``/``TA-1``, ``request``/``7``, ``all``/``*`` …); for a
    request, ``owner`` is the operator who asked and ``action`` what it asks for; for a
    meter or account, ``owner`` is the customer it is linked to (None: nobody's)."""

    kind: str
    name: str = "*"
    owner: str | None = None
    action: Action | None = None

    @classmethod
    def request(cls, request_id: int, owner: str, action: Action) -> Resource:
        return cls("request", str(request_id), owner, action)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


ANY = Resource("all")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def authorize(principal: Principal, action: Action, resource: Resource = ANY) -> Decision:
    """May ``principal`` take ``action`` on ``resource``? The reason says why not."""
    who = f"{principal.label} ({principal.role})"
    if not may(principal.role, action):
        return Decision(False, f"{who} may not {action}")
    if principal.kind == "customer" or principal.role is Role.CUSTOMER:
        # The caller names the customer a meter or account belongs to as its owner.
        if resource.kind not in CUSTOMER_RESOURCES or resource.owner != principal.name:
            return Decision(False, f"{who} may see only their own meters and accounts")
        return Decision(True, f"{who} may {action} on their own {resource.kind}")
    if action is Action.REQUEST_APPROVE:
        if resource.kind != "request" or resource.action is None:
            return Decision(False, "only a request can be approved")
        if principal.kind != "operator":
            return Decision(False, f"{who}: only an operator approves a request")
        if resource.owner == principal.name:
            return Decision(
                False, f"{who} asked for request {resource.name}: a second operator must approve it"
            )
        if not may(principal.role, resource.action):
            return Decision(
                False,
                f"{who} may not approve request {resource.name}: approving"
                f" {resource.action} needs a role that may do it",
            )
    own = resource.owner == principal.name
    if action is Action.REQUEST_CANCEL and not own and principal.role is not Role.ADMINISTRATOR:
        return Decision(False, f"{who} may cancel only their own requests")
    return Decision(True, f"{who} may {action}")


class AccessError(ReceiverError):
    """Not logged in, the session is over, the login was refused, or the role may not."""

    exit_code = EXIT_DENIED


class Denied(AccessError, PermissionError):
    """`authorize` said no."""


def require(principal: Principal, action: Action, resource: Resource = ANY) -> None:
    """`authorize`, raising `Denied` with its reason."""
    decision = authorize(principal, action, resource)
    if not decision:
        raise Denied(decision.reason)
