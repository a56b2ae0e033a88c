"""Ground-truth log: every value each simulated meter reported, and when.

One JSON object per line, flushed per reply, so a test can later prove that what
arrived upstream equals what the meter measured. The value text is produced by the
same codec functions the concentrator uses to decode it, so equal means equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from clitools.files import open_text


@dataclass(frozen=True)
class TruthRecord:
    t: float  # simulated unix time the meter sampled the value
    meter: str
    protocol: str
    quantity: str
    key: str  # DL/T 645 DI (8 hex digits) or Modbus register address
    value: str
    unit: str
    fault: str | None = None  # set when the reply was corrupted or lost on the way


class TruthLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = open_text(path, append=True) if path else None

    def write(self, record: TruthRecord) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_truth(path: Path) -> Iterator[TruthRecord]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield TruthRecord(**json.loads(line))
