"""Every MQTT topic both ends use, one function each, so no module spells a topic.

Version 1 of the topic tree. A concentrator's id is its MQTT username, which is how
the broker's ACL (`pattern ... mf/v1/%u/...`) confines it to its own branch::

    mf/v1/<id>/up       concentrator -> receiver   sealed batches (contract.wire), QoS 1
    mf/v1/<id>/ack      receiver -> concentrator   MACed acks (contract.wire), QoS 1
    mf/v1/<id>/cmd      receiver -> concentrator   signed commands (contract.commands), QoS 1
    mf/v1/<id>/pkg      receiver -> concentrator   release chunks (contract.package), QoS 0
    mf/v1/<id>/pkgreq   concentrator -> receiver   chunk requests (contract.package), QoS 0
"""

from __future__ import annotations

import re

ROOT = "mf/v1"
ANY = "+"  # the MQTT single-level wildcard, in place of a concentrator id
ACL_USER = "%u"  # Mosquitto's ACL pattern for the connected username

_ID = r"([A-Za-z0-9._-]{1,64})"
_UP = re.compile(rf"{re.escape(ROOT)}/{_ID}/up")
_PKGREQ = re.compile(rf"{re.escape(ROOT)}/{_ID}/pkgreq")


def up(concentrator_id: str) -> str:
    return f"{ROOT}/{concentrator_id}/up"


def ack(concentrator_id: str) -> str:
    return f"{ROOT}/{concentrator_id}/ack"


def cmd(concentrator_id: str) -> str:
    return f"{ROOT}/{concentrator_id}/cmd"


def pkg(concentrator_id: str) -> str:
    """Receiver -> concentrator: chunks ``{"v": version, "i": index, "d": bytes}``."""
    return f"{ROOT}/{concentrator_id}/pkg"


def pkgreq(concentrator_id: str) -> str:
    """Concentrator -> receiver: ``{"v": version, "i": index}``."""
    return f"{ROOT}/{concentrator_id}/pkgreq"


def shared(group: str, topic: str) -> str:
    """``topic`` as an MQTT v5 shared subscription: the broker gives each message to
    one member of ``group``, which is how receivers scale out."""
    return f"$share/{group}/{topic}"


def up_sender(topic: str) -> str | None:
    """The concentrator id of an ``up`` topic, or None when ``topic`` is not one."""
    m = _UP.fullmatch(topic)
    return m[1] if m else None


def pkgreq_sender(topic: str) -> str | None:
    """The concentrator id of a ``pkgreq`` topic, or None when ``topic`` is not one."""
    m = _PKGREQ.fullmatch(topic)
    return m[1] if m else None
