"""Finding every DL/T 645 meter on a bus by wildcard-address search, and saying so only
when it is sure.

The ``AA`` wildcard byte of abbreviated addressing (docs/protocols.md §1.4) lets one
read-address request (0x13) select every meter whose address matches the fixed bytes;
each selected meter answers with its real address. The search starts with all bytes
wild and settles each pattern by listening to the whole answer window, not only to the
first frame (`SerialBus.gather`): a second meter with a longer turnaround answers after
the first one, cleanly, and anything that is no clean frame (a collision, a partial
frame, a bad checksum, noise) is an answer too.

A line loses and garbles single answers (a meter misses a request, a reply is hit by
noise), so one probe proves nothing. A pattern is settled when ``retries + 1`` probes
in a row agree: all silent (nobody there), or all one clean answer naming the same
meter (that meter alone; then confirmed by a read of its full address). Garbage twice,
or two different meters in one window, splits the pattern: its lowest wildcard byte
(A0 = the last two digits) is fixed to each of its 100 BCD values, and each branch is
settled in turn. Consecutive addresses, as meters arrive from one delivery batch,
differ in the low byte, so most collisions resolve at the first split. A pattern that
stays undecided is split too: splitting is always safe, only slower.

A fully specified address cannot be split: if it keeps garbling (two meters with one
address, or a line too noisy) or answers only now and then, it is *unresolved*, listed,
and the scan is not complete. Every clean answer heard during the search, including
late ones that land in a later probe's window, is remembered; one that the search did
not end up with is read point to point at the end and added if it answers. The caller
reports a scan with unresolved branches as a failure: a list that may be wrong is never
presented as the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from drivers import dlt645, dlt645_1997, dlt698
from drivers.errors import BusTimeout, DriverError, FrameError, MeterError
from drivers.readers import Dlt645Reader, Dlt698Reader, Dlt6451997Reader
from drivers.serial_bus import SerialBus

# Probes of one pattern before it is split (or, fully specified, given up) undecided.
MAX_EXTRA_PROBES = 3

Verdict = Literal["empty", "one", "split", "unresolved"]
_FE = dlt645.PREAMBLE[0]  # the wake-up byte
PROBE_1997 = 0x9010  # forward active energy, total: what every 1997 meter has


@dataclass
class ScanResult:
    addresses: list[str] = field(default_factory=list)
    probes: int = 0
    collisions: int = 0  # patterns split
    # Fully specified addresses that stayed garbled or answered only now and then, with
    # why: while any is listed, the scan is not sure of its list.
    unresolved: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)  # found from stray answers only
    protocols: dict[str, str] = field(default_factory=dict)  # address -> what it answered

    @property
    def complete(self) -> bool:
        return not self.unresolved


@dataclass(frozen=True)
class Heard:
    """What one probe's answer window held."""

    addresses: tuple[str, ...]  # distinct meters that answered the pattern cleanly, in order
    others: tuple[str, ...]  # clean answers for other patterns (late ones)
    garbled: bool  # bytes that are no clean frame (a collision, noise, a broken frame)
    repeated: bool  # one meter's clean answer twice (two meters with one address?)


def hear(raw: bytes, pattern: str, protocol: str = "dlt645") -> Heard:
    """Decode an answer window: every clean answer to the probe of ``protocol``, and
    whether anything else was on the line. FE wake-up bytes before a frame are the
    protocol's, not garbage (docs/protocols.md §1.2); a valid frame that is no reply is
    our own echo. Frames of another protocol count as garbage: on a mixed line they
    cannot be answers to this probe, as no meter answers another protocol's request."""
    decoder: dlt645.Decoder | dlt698.Decoder = (
        dlt698.Decoder(max_buffer=max(1024, len(raw)))
        if protocol == "dlt698"
        else dlt645.Decoder(max_buffer=max(1024, len(raw)))
    )
    decoder.feed(raw)
    garbled = False
    seen: list[str] = []
    others: list[str] = []
    repeated = False
    while True:
        consumed = len(raw) - decoder.buffered
        try:
            frame = decoder.next_frame()
        except FrameError:
            garbled = True
            continue
        now = len(raw) - decoder.buffered
        size = 0 if frame is None else _frame_size(frame)
        if any(b != _FE for b in raw[consumed : now - size]):
            garbled = True
        if frame is None:
            break
        if not _is_reply(frame):
            continue  # our own request, heard back by an adapter that hears itself
        address = _reply_address(frame, protocol)
        if address is None:
            garbled = True  # a reply, but not a well-formed answer to this request
        elif not dlt645.address_matches(pattern, address):
            others.append(address)  # a late answer to an earlier probe
        elif address in seen:
            repeated = True
        else:
            seen.append(address)
    if decoder.buffered:
        garbled = True  # a frame cut short
    return Heard(tuple(seen), tuple(others), garbled, repeated)


def _frame_size(frame: dlt645.Frame | dlt698.Frame) -> int:
    if isinstance(frame, dlt698.Frame):
        return len(dlt698.encode_frame(frame, preamble=0))
    return 12 + len(frame.data)


def _is_reply(frame: dlt645.Frame | dlt698.Frame) -> bool:
    return frame.from_server if isinstance(frame, dlt698.Frame) else frame.is_reply


def _reply_address(frame: dlt645.Frame | dlt698.Frame, protocol: str) -> str | None:
    """The meter's address if ``frame`` is a clean answer to this protocol's probe."""
    if isinstance(frame, dlt698.Frame):
        try:
            value = dlt698.parse_get_response(frame, "comm_address")
        except DriverError:
            return None
        ok = value == frame.address and len(frame.address) == 12 and frame.address.isdigit()
        return frame.address if ok else None
    if protocol == "dlt645-1997":
        try:
            reply = dlt645_1997.parse_read_reply(frame, frame.address, PROBE_1997)
            dlt645_1997.decode_value(dlt645_1997.lookup(PROBE_1997), reply.value)
        except DriverError:
            return None
        return frame.address if "AA" not in frame.address else None
    return _read_address_reply(frame)


def _read_address_reply(frame: dlt645.Frame) -> str | None:
    if frame.function != dlt645.Function.READ_ADDRESS or frame.is_error or len(frame.data) != 6:
        return None
    try:
        address = dlt645.decode_address(frame.data)
    except FrameError:
        return None
    return address if address == frame.address and "AA" not in address else None


def _children(pattern: str) -> list[str]:
    """Fix the lowest wildcard byte of ``pattern`` to 00..99."""
    pairs = [pattern[i : i + 2] for i in range(0, 12, 2)]
    for idx in range(5, -1, -1):  # pairs[5] is A0, the byte sent first
        if pairs[idx] == "AA":
            return [
                "".join(pairs[:idx]) + f"{v:02d}" + "".join(pairs[idx + 1 :]) for v in range(100)
            ]
    return []


class _Search:
    def __init__(
        self,
        bus: SerialBus,
        retries: int,
        progress: Callable[[ScanResult, int], None] | None,
        protocol: str = "dlt645",
    ) -> None:
        self.bus = bus
        self.protocol = protocol
        self.reader = Dlt645Reader(bus)
        self.agree = retries + 1  # probes in a row that settle a pattern
        self.progress = progress
        self.result = ScanResult()
        self.heard: list[str] = []  # every meter heard cleanly, in order

    async def run(self) -> ScanResult:
        result = self.result
        pending = [dlt645.WILDCARD_ALL]
        while pending:
            pattern = pending.pop()
            verdict, address = await self._settle(pattern)
            if verdict == "split":
                result.collisions += 1
                pending.extend(reversed(_children(pattern)))
            elif verdict == "one" and address is not None and address not in result.addresses:
                result.addresses.append(address)
            if self.progress is not None:
                self.progress(result, len(pending))
        await self._recover()
        result.addresses.sort()
        return result

    async def _listen(self, pattern: str) -> Heard:
        self.result.probes += 1
        heard = hear(await self.bus.gather(probe(pattern, self.protocol)), pattern, self.protocol)
        for address in (*heard.addresses, *heard.others):
            if address not in self.heard:
                self.heard.append(address)
        return heard

    async def _settle(self, pattern: str) -> tuple[Verdict, str | None]:
        """Probe ``pattern`` until its answers agree ``self.agree`` times in a row."""
        wild = "AA" in pattern
        garbled = 0
        last: str | None = None
        streak = 0
        for _ in range(self.agree + MAX_EXTRA_PROBES):
            heard = await self._listen(pattern)
            if wild and len(heard.addresses) > 1:
                return "split", None  # two meters answered: certainly a collision
            if heard.garbled or heard.repeated or len(heard.addresses) > 1:
                garbled += 1
                streak = 0
                if garbled >= 2:
                    break
                continue
            answer = heard.addresses[0] if heard.addresses else None
            streak = streak + 1 if streak and answer == last else 1
            last = answer
            if streak < self.agree:
                continue
            if last is None:
                return "empty", None
            if not wild or await self._confirm(last):
                return "one", last
            break  # answers wildcards, not its own address: a collision that looked clean
        if wild:
            return "split", None
        why = (
            "garbled even when fully addressed (two meters with this address, or a very noisy line)"
            if garbled >= 2
            else "answers only now and then"
        )
        self.result.unresolved.append(pattern)
        self.result.reasons[pattern] = why
        return "unresolved", None

    async def _confirm(self, address: str) -> bool:
        """A point-to-point read of the full address: only the meter itself answers."""
        for _ in range(self.agree):
            self.result.probes += 1
            try:
                if self.protocol == "dlt645-1997":
                    await Dlt6451997Reader(self.bus).read(address, dlt645_1997.lookup(PROBE_1997))
                    return True
                if self.protocol == "dlt698":
                    reader = Dlt698Reader(self.bus)
                    values, _ = await reader.read_many(address, [dlt698.lookup("comm_address")])
                    return [v.value for v in values] == [address]
                return await self.reader.read_address(address) == address
            except (BusTimeout, FrameError, MeterError):
                continue
        return False

    async def _recover(self) -> None:
        """Meters heard cleanly that the search did not end up with (a late answer, or
        one that was silent when its branch was settled): read point to point."""
        result = self.result
        for address in self.heard:
            if address in result.addresses or address in result.unresolved:
                continue
            verdict, found = await self._settle(address)
            if verdict == "one" and found is not None:
                result.addresses.append(found)
                result.recovered.append(found)
            if self.progress is not None:
                self.progress(result, 0)


def probe(pattern: str, protocol: str = "dlt645") -> bytes:
    """The request that makes every meter matching ``pattern`` (AA: any two digits)
    answer with its own address: 645-2007 read address (0x13); 645-1997 read 9010 (it
    has no read-address function; every 1997 meter has 9010, and answers from its own
    address); 698.45 GET 4001 to a wildcard server address (docs/protocols-dlt698-645-
    1997.md, "Finding meters")."""
    if protocol == "dlt645-1997":
        return dlt645_1997.build_read(pattern, PROBE_1997)
    if protocol == "dlt698":
        server = (
            dlt698.ServerAddress.wildcard(pattern)
            if "AA" in pattern
            else dlt698.ServerAddress(pattern)
        )
        return dlt698.build_get(server, "comm_address")
    return dlt645.build_read_address(pattern)


async def scan(
    bus: SerialBus,
    *,
    retries: int = 1,
    progress: Callable[[ScanResult, int], None] | None = None,
    protocols: Sequence[str] = ("dlt645",),
) -> ScanResult:
    """Search the whole address space of an open bus in each of ``protocols`` in turn
    (`probe`); ``progress(result, pending)`` after every settled pattern. The answer
    window of each probe is the bus's response timeout; ``retries + 1`` agreeing probes
    settle a pattern. ``result.protocols`` says which protocol each meter answered."""
    total = ScanResult()
    for protocol in protocols:

        def step(part: ScanResult, pending: int, done: ScanResult = total) -> None:
            if progress is not None:
                progress(_merged(done, part), pending)

        part = await _Search(bus, retries, step, protocol).run()
        total = _merged(total, part)
        for address in part.addresses:
            total.protocols.setdefault(address, protocol)
    total.addresses.sort()
    return total


def _merged(a: ScanResult, b: ScanResult) -> ScanResult:
    return ScanResult(
        addresses=sorted({*a.addresses, *b.addresses}),
        probes=a.probes + b.probes,
        collisions=a.collisions + b.collisions,
        unresolved=[*a.unresolved, *b.unresolved],
        reasons={**a.reasons, **b.reasons},
        recovered=[*a.recovered, *b.recovered],
        protocols=dict(a.protocols),
    )
