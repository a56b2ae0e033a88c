"""Signed downlink commands (`contract.commands`): what a concentrator accepts, and
every way a command is refused with its reason."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import commands as c

NOW = 1_800_000_000.0
KEY = c.new_key()
PUB = KEY.public_key()


def command(**kw: object) -> c.Command:
    base: dict[str, object] = {
        "id": "cmd-1",
        "concentrator": "dc-1",
        "counter": 5,
        "action": "relay_open",
        "meters": ("000000000001",),
        "not_before": NOW - 10,
        "not_after": NOW + 600,
        "issued_at": NOW - 10,
    }
    base.update(kw)
    return c.Command(**base)  # type: ignore[arg-type]


def accept(
    blob: bytes, seen: tuple[int, ...] = (4,), now: float = NOW, cid: str = "dc-1"
) -> c.Command:
    window = c.CounterWindow()
    for n in seen:
        window.add(n)
    return c.accept(blob, PUB, concentrator_id=cid, now=now, window=window)


def test_a_signed_fresh_command_is_accepted_as_signed() -> None:
    cmd = command(params={"quantities": ["energy_fwd_total"]}, action="read")
    assert accept(c.sign(cmd, KEY)) == cmd


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (c.sign(command(), c.new_key()), "bad signature"),
        (c.sign(command(not_after=NOW - 1), KEY), "expired"),
        (c.sign(command(not_before=NOW + 8 * 86400, not_after=NOW + 8 * 86400 + 60), KEY),
         "more than 604800 s ahead"),
        (c.sign(command(counter=4), KEY), "duplicate: counter 4 was accepted before"),
        (c.sign(command(concentrator="dc-2"), KEY), "addressed to concentrator 'dc-2'"),
        (b"\x00garbage", "not a command"),
        (cbor2.dumps({"v": 2, "body": b"", "sig": b""}), "command format 2"),
        (cbor2.dumps({"v": 1, "body": b"x", "sig": b"short"}), "64-byte signature"),
    ],
    ids=["bad-signature", "expired", "early", "replayed", "other-concentrator", "garbage",
         "version", "no-signature"],
)  # fmt: skip
def test_refusals_name_their_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(c.CommandRefused, match=reason):
        accept(blob)


def test_counters_may_arrive_out_of_order_but_never_twice_or_too_old() -> None:
    blob = c.sign(command(counter=8), KEY)
    assert accept(blob, seen=(10,)).counter == 8  # a later one came first
    with pytest.raises(c.CommandDuplicate):
        accept(blob, seen=(10, 8))
    with pytest.raises(c.CommandRefused, match="replayed: counter 8 is older than the last 64"):
        accept(blob, seen=(8 + c.COUNTER_WINDOW,))
    window = c.CounterWindow()
    for n in range(1, 200):
        window.add(n)
    assert len(window.seen) == c.COUNTER_WINDOW and window.high == 199
    assert c.CounterWindow.from_state(window.state()) == window


def test_commands_issued_before_the_log_began_are_refused() -> None:
    blob = c.sign(command(issued_at=NOW - 100), KEY)
    with pytest.raises(c.CommandRefused, match="before this concentrator's command log"):
        c.accept(blob, PUB, concentrator_id="dc-1", now=NOW, window=c.CounterWindow(),
                 issued_after=NOW - 50)  # fmt: skip
    assert c.accept(blob, PUB, concentrator_id="dc-1", now=NOW, window=c.CounterWindow(),
                    issued_after=NOW - 200).id == "cmd-1"  # fmt: skip


def test_a_tampered_body_fails_the_signature() -> None:
    outer = cbor2.loads(c.sign(command(), KEY))
    body = cbor2.loads(outer["body"])
    body["action"] = "relay_close"
    outer["body"] = cbor2.dumps(body)
    with pytest.raises(c.CommandRefused, match="bad signature"):
        accept(cbor2.dumps(outer))


def test_a_refusal_carries_the_command_when_it_could_be_read() -> None:
    with pytest.raises(c.CommandRefused) as caught:
        accept(c.sign(command(counter=4), KEY))
    assert caught.value.command is not None and caught.value.command.id == "cmd-1"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"action": "format_disk"}, "action 'format_disk'"),
        ({"meters": ("12345",)}, "12-digit address"),
        ({"meters": ()}, "needs at least one meter"),
        ({"not_after": NOW - 20}, "not_after must be later"),
        ({"not_after": NOW + 30 * 86400}, "exceeds"),
        ({"counter": 0}, "counter 0"),
        ({"id": ""}, "id ''"),
    ],
)
def test_malformed_commands_are_refused_when_signed(kw: dict[str, object], message: str) -> None:
    with pytest.raises(c.CommandError, match=message):
        c.sign(command(**kw), KEY)


def test_a_modbus_meter_may_be_read_but_not_switched_or_clock_checked() -> None:
    # docs/quantities.md: an SDM meter has neither relay nor clock
    assert accept(c.sign(command(action="read", meters=("7",)), KEY)).meters == ("7",)
    for action in ("relay_open", "relay_close", "clock_check"):
        with pytest.raises(c.CommandError, match="expected a 12-digit address"):
            c.sign(command(action=action, meters=("7",)), KEY)
    with pytest.raises(c.CommandError, match=r"or a Modbus slave id 1\.\.247"):
        c.sign(command(action="read", meters=("248",)), KEY)


def test_a_scheduled_command_is_taken_now_and_due_later() -> None:
    cmd = accept(c.sign(command(not_before=NOW + 3600, not_after=NOW + 7200), KEY))
    assert not c.is_due(cmd, NOW) and c.is_due(cmd, NOW + 3600)
    assert not c.is_due(cmd, NOW + 3599.9)  # not a moment early


def test_time_sync_needs_no_meter() -> None:
    cmd = command(action="time_sync", meters=())
    assert accept(c.sign(cmd, KEY)).action == "time_sync"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_never_crash(blob: bytes) -> None:
    with pytest.raises(c.CommandRefused):
        accept(blob)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_byte_of_a_signed_command_is_refused(data: st.DataObject) -> None:
    blob = bytearray(c.sign(command(), KEY))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(c.CommandRefused):
        accept(bytes(blob))
