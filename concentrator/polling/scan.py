"""Finding every DL/T 645 meter on a bus by wildcard-address search.

The 0xAA wildcard byte of abbreviated addressing lets one request select every meter
whose address matches the fixed bytes. We start with all bytes wild; silence means no
meter below this pattern, one clean reply names one meter (confirmed point-to-point
before it counts, since a collision can by chance look valid), and garbage means a
collision: fix the next byte, lowest first (A0 = the last two digits), to each of its
100 BCD values and search each branch. Consecutive addresses, as meters arrive from one
delivery batch, differ in the low byte, so most collisions resolve at the first split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers import dlt645
from drivers.errors import BusTimeout, FrameError, MeterError
from drivers.readers import Dlt645Reader


@dataclass
class ScanResult:
    addresses: list[str] = field(default_factory=list)
    probes: int = 0
    collisions: int = 0
    unresolved: list[str] = field(default_factory=list)  # fully fixed, still garbled


def _children(pattern: str) -> list[str]:
    """Fix the lowest wildcard byte of ``pattern`` to 00..99."""
    pairs = [pattern[i : i + 2] for i in range(0, 12, 2)]
    for idx in range(5, -1, -1):  # pairs[5] is A0, the byte sent first
        if pairs[idx] == "AA":
            return [
                "".join(pairs[:idx]) + f"{v:02d}" + "".join(pairs[idx + 1 :]) for v in range(100)
            ]
    return []


async def scan(
    reader: Dlt645Reader,
    *,
    retries: int = 1,
    progress: Callable[[ScanResult, int], None] | None = None,
) -> ScanResult:
    """Search the whole address space; ``progress(result, pending)`` after every probe."""
    result = ScanResult()
    pending = [dlt645.WILDCARD_ALL]
    while pending:
        pattern = pending.pop()
        outcome = await _probe(reader, pattern, retries, result)
        if outcome == "collision":
            result.collisions += 1
            children = _children(pattern)
            if children:
                pending.extend(reversed(children))
            else:
                result.unresolved.append(pattern)
        elif outcome is not None and outcome not in result.addresses:
            result.addresses.append(outcome)
        if progress is not None:
            progress(result, len(pending))
    result.addresses.sort()
    return result


async def _probe(
    reader: Dlt645Reader, pattern: str, retries: int, result: ScanResult
) -> str | None:
    """None: silence; an address: one confirmed meter; "collision": several answered."""
    for attempt in range(retries + 1):
        result.probes += 1
        try:
            candidate = await reader.read_address(pattern)
        except BusTimeout:
            return None
        except (FrameError, MeterError):
            if attempt < retries and "AA" not in pattern:
                continue  # a fully fixed address that garbled: noise, try again
            return "collision"
        if candidate == pattern or await _confirm(reader, candidate, retries, result):
            return candidate
        return "collision"
    return "collision"


async def _confirm(reader: Dlt645Reader, address: str, retries: int, result: ScanResult) -> bool:
    for _ in range(retries + 1):
        result.probes += 1
        try:
            return await reader.read_address(address) == address
        except BusTimeout:
            return False
        except (FrameError, MeterError):
            continue
    return False
