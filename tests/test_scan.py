"""The bus scan's decisions (`concentrator.polling.scan`): what an answer window holds, and
when a branch counts as settled. The real line (PTYs, line faults, collisions) is in
test_cli_direct.py and bench/scan.py; here a scripted line shows each decision in turn,
including the two that made the old search report wrong lists with exit 0: a clean
first answer taken as the only meter, and a meter that missed one probe taken as none."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from concentrator.polling.scan import hear, scan
from drivers import dlt645
from drivers.errors import BusTimeout


def answer(address: str, preamble: int = 0) -> bytes:
    """A meter's reply to read address (0x13): its address as data."""
    return dlt645.build_reply(
        address, dlt645.Function.READ_ADDRESS, dlt645.encode_address(address), preamble=preamble
    )


def test_an_answer_window_is_read_in_full() -> None:
    a, b = "000000000001", "000000000002"
    wild = dlt645.WILDCARD_ALL
    assert hear(b"", wild) == hear(b"", wild)
    silent = hear(b"", wild)
    assert (silent.addresses, silent.garbled) == ((), False)
    # Wake-up bytes are the protocol's, not garbage; our own request heard back is ignored.
    clean = hear(dlt645.build_read_address(wild) + answer(a, preamble=4), wild)
    assert (clean.addresses, clean.garbled, clean.repeated) == ((a,), False, False)
    # A second meter answering after the first one: both are heard.
    assert hear(answer(a) + answer(b), wild).addresses == (a, b)
    # Anything that is no clean frame: a collision, a cut frame, a bad checksum, noise.
    overlapped = bytes(x & y for x, y in zip(answer(a), answer(b), strict=True))
    assert hear(overlapped, wild).garbled
    assert hear(answer(a)[:-3], wild).garbled
    assert hear(answer(a)[:-2] + b"\x00\x16", wild).garbled
    assert hear(b"\x13\x37" + answer(a), wild).garbled
    # One meter's answer twice in one window (two meters with one address?).
    assert hear(answer(a) + answer(a), a).repeated
    # A late answer to an earlier probe does not belong to this pattern.
    late = hear(answer(b), "AAAAAAAAAA01")
    assert (late.addresses, late.others, late.garbled) == ((), (b,), False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["AAAAAAAAAAAA", "AAAAAAAAAA07", "000000000007"]))
def test_any_bytes_are_heard_without_an_error(raw: bytes, pattern: str) -> None:
    heard = hear(raw, pattern)
    assert all(dlt645.address_matches(pattern, a) for a in heard.addresses)
    assert len(set(heard.addresses)) == len(heard.addresses)
    if raw.strip(b"\xfe") == b"":
        assert not heard.garbled and not heard.addresses  # wake-up bytes only: silence


@dataclass
class ScriptedLine:
    """Meters on a line without wire time; each answer a meter gives may be scripted
    away (``drops``: meter -> which of its answers, 0-based, never arrive)."""

    meters: list[str]
    drops: dict[str, set[int]] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    probes: list[str] = field(default_factory=list)

    def _answers(self, request: bytes) -> list[bytes]:
        frame = dlt645.decode_frame(request)
        self.probes.append(frame.address)
        out = []
        for meter in self.meters:
            if not dlt645.address_matches(frame.address, meter):
                continue
            n = self.answers[meter]
            self.answers[meter] += 1
            if n not in self.drops.get(meter, set()):
                out.append(answer(meter))
        return out

    async def gather(self, request: bytes, *, window: float | None = None) -> bytes:
        # Meters with different turnarounds: one after the other, each clean.
        return b"".join(self._answers(request))

    async def transact(self, request, decoder, accept=lambda f: True, *, response_timeout=None):  # type: ignore[no-untyped-def]
        replies = self._answers(request)
        if len(replies) != 1:
            raise BusTimeout("no reply")
        decoder.feed(replies[0])
        frame = decoder.next_frame()

        class Exchange:
            pass

        ex = Exchange()
        ex.frame = frame  # type: ignore[attr-defined]
        return ex

    async def send(self, request: bytes) -> None:
        raise AssertionError("a scan sends no broadcast")


def run_scan(line: ScriptedLine, retries: int = 1):  # type: ignore[no-untyped-def]
    return asyncio.run(scan(line, retries=retries))  # type: ignore[arg-type]


def test_a_clean_first_answer_is_not_taken_as_the_only_meter() -> None:
    # The second meter misses the first probe: one clean answer, which the old search
    # took as the bus's only meter. The second probe must agree, and it does not.
    line = ScriptedLine(["000000000001", "000000000002"], drops={"000000000002": {0}})
    result = run_scan(line)
    assert result.addresses == ["000000000001", "000000000002"] and result.complete
    assert result.collisions == 1


def test_a_meter_that_misses_one_probe_is_still_found() -> None:
    # Meter 2 misses its first answer at its own branch: that branch is probed again
    # before it counts as empty.
    line = ScriptedLine(["000000000001", "000000000002"], drops={"000000000002": {1}})
    result = run_scan(line)
    assert result.addresses == ["000000000001", "000000000002"] and result.complete
    assert line.probes.count("AAAAAAAAAA02") >= 2


def test_every_empty_branch_is_probed_as_often_as_retries_ask() -> None:
    line = ScriptedLine(["000000000001", "000000000002"])
    result = run_scan(line, retries=2)
    empty = [p for p in line.probes[1:] if p.startswith("AAAAAAAAAA") and p[-2:] not in "01 02"]
    assert Counter(empty) == {f"AAAAAAAAAA{v:02d}": 3 for v in range(100) if v not in (1, 2)}
    assert result.addresses == ["000000000001", "000000000002"]


def test_a_meter_alone_on_its_line_is_settled_and_confirmed() -> None:
    line = ScriptedLine(["123456789012"])
    result = run_scan(line)
    assert result.addresses == ["123456789012"] and result.collisions == 0
    # Two agreeing wildcard probes and one point-to-point read of the full address.
    assert line.probes == [dlt645.WILDCARD_ALL] * 2 + ["123456789012"]
    assert result.probes == 3
