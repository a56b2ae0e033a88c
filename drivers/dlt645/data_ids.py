"""Data identifiers: what each register holds and how its value bytes are laid out.

A frame can be valid while its DI is unknown to us, so this table is apart from the
framing. Its names are the canonical quantity names (docs/quantities.md); the daily
freeze families 050600nn / 050601nn are resolved by ``lookup`` for every nn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from drivers.dlt645.frame import _is_digits
from drivers.errors import EncodeError

Kind = Literal[
    "bcd",  # unsigned BCD with implied decimals
    "sbcd",  # BCD, most significant bit of the top byte is the sign
    "date",  # YYMMDDWW (WW weekday, 0 = Sunday), sent WW first
    "time",  # hhmmss, sent ss first
    "datetime5",  # YYMMDDhhmm, sent mm first (freeze times)
    "word",  # 2-byte bit field (status words), little-endian
    "count",  # unsigned BCD integer
    "address",  # 6-byte BCD address
    "energy_block",  # N x 4-byte XXXXXX.XX: total then tariffs 1..4
]


@dataclass(frozen=True)
class DataId:
    di: int
    name: str
    description: str
    kind: Kind
    length: int
    decimals: int = 0
    unit: str = ""

    @property
    def code(self) -> str:
        return f"{self.di:08X}"


def _table(entries: Iterable[DataId]) -> dict[int, DataId]:
    return {e.di: e for e in entries}


_TARIFFS = {1: "sharp", 2: "peak", 3: "flat", 4: "valley"}  # 尖 峰 平 谷

DATA_IDS: dict[int, DataId] = _table(
    [
        DataId(
            0x00000000,
            "energy_combined_total",
            "combined active energy, total",
            "sbcd",
            4,
            2,
            "kWh",
        ),
        DataId(0x00010000, "energy_fwd_total", "forward active energy, total", "bcd", 4, 2, "kWh"),
        *(
            DataId(
                0x00010000 | t << 8,
                f"energy_fwd_t{t}",
                f"forward active energy, tariff {t} ({n})",
                "bcd",
                4,
                2,
                "kWh",
            )
            for t, n in _TARIFFS.items()
        ),
        DataId(0x00020000, "energy_rev_total", "reverse active energy, total", "bcd", 4, 2, "kWh"),
        *(
            DataId(
                0x02010000 | p << 8, f"voltage_{c}", f"phase {c.upper()} voltage", "bcd", 2, 1, "V"
            )
            for p, c in ((1, "a"), (2, "b"), (3, "c"))
        ),
        *(
            DataId(
                0x02020000 | p << 8, f"current_{c}", f"phase {c.upper()} current", "sbcd", 3, 3, "A"
            )
            for p, c in ((1, "a"), (2, "b"), (3, "c"))
        ),
        DataId(0x02030000, "power_total", "instantaneous total active power", "sbcd", 3, 4, "kW"),
        *(
            DataId(
                0x02030000 | p << 8,
                f"power_{c}",
                f"phase {c.upper()} active power",
                "sbcd",
                3,
                4,
                "kW",
            )
            for p, c in ((1, "a"), (2, "b"), (3, "c"))
        ),
        DataId(0x02060000, "power_factor", "total power factor", "sbcd", 2, 3, ""),
        DataId(0x02800002, "frequency", "grid frequency", "bcd", 2, 2, "Hz"),
        DataId(0x04000101, "meter_date", "meter date and weekday", "date", 4),
        DataId(0x04000102, "meter_time", "meter time", "time", 3),
        DataId(0x04000401, "meter_address", "communication address", "address", 6),
        *(
            DataId(0x04000500 | n, f"status_word_{n}", f"meter running status word {n}", "word", 2)
            for n in range(1, 8)
        ),
        DataId(0x03300D00, "cover_open_count", "meter cover opened, total count", "count", 3),
        DataId(0x05060001, "frozen_daily_time", "last daily freeze: time", "datetime5", 5),
        DataId(
            0x05060101,
            "frozen_daily_energy_fwd",
            "last daily freeze: forward active energy, total and tariffs 1-4",
            "energy_block",
            20,
            2,
            "kWh",
        ),
    ]
)

DATA_IDS_BY_NAME: dict[str, DataId] = {d.name: d for d in DATA_IDS.values()}

# Bit 4 of status word 3 is the relay (load switch) state: 0 closed (supply on), 1 open.
STATUS3_RELAY_OPEN = 0x0010

# What a plain `concentrator read` (no quantity named) asks a single-phase meter for.
DEFAULT_QUANTITIES: tuple[str, ...] = (
    "energy_fwd_total",
    "energy_fwd_t1",
    "energy_fwd_t2",
    "energy_fwd_t3",
    "energy_fwd_t4",
    "energy_rev_total",
    "voltage_a",
    "voltage_b",
    "voltage_c",
    "current_a",
    "current_b",
    "current_c",
    "power_total",
    "power_a",
    "power_b",
    "power_c",
    "power_factor",
    "frequency",
    "meter_date",
    "meter_time",
    "status_word_3",
    "cover_open_count",
    "frozen_daily_time",
    "frozen_daily_energy_fwd",
)

MAX_DAILY_FREEZES = 62  # DI0 = 01..3E: the meter keeps the last 62 daily freezes
_DAILY_FREEZE_FAMILIES = (0x05060000, 0x05060100)  # DI0 = nn: time / forward energy block


def daily_frozen_time_di(n: int) -> int:
    """DI of the time of the n-th previous daily freeze (1 = most recent)."""
    _check_freeze_index(n)
    return 0x05060000 | n


def daily_frozen_energy_di(n: int) -> int:
    """DI of the forward energy block of the n-th previous daily freeze."""
    _check_freeze_index(n)
    return 0x05060100 | n


def _check_freeze_index(n: int) -> None:
    if not 1 <= n <= MAX_DAILY_FREEZES:
        raise EncodeError(f"daily freeze index {n}: expected 1..{MAX_DAILY_FREEZES}")


def lookup(key: str | int) -> DataId:
    """Find a data identifier by name ("voltage_a"), hex code ("02010100") or number.

    The daily-freeze families 050600nn / 050601nn are resolved for every nn in 01..62.
    """
    if isinstance(key, str):
        if key in DATA_IDS_BY_NAME:
            return DATA_IDS_BY_NAME[key]
        # "frozen_daily_time_5": the name lookup() itself gives the 5th previous freeze
        base_name, _, suffix = key.rpartition("_")
        named = DATA_IDS_BY_NAME.get(base_name)
        if (
            named is not None
            and named.di & 0xFFFFFF00 in _DAILY_FREEZE_FAMILIES
            and _is_digits(suffix)
            and len(suffix) <= 2
            and 1 <= int(suffix) <= MAX_DAILY_FREEZES
        ):
            return lookup(named.di & 0xFFFFFF00 | int(suffix))
        try:
            key = int(key, 16)
        except ValueError:
            raise KeyError(f"unknown DL/T 645 quantity {key!r}") from None
    if key in DATA_IDS:
        return DATA_IDS[key]
    family, n = key & 0xFFFFFF00, key & 0xFF
    if family in _DAILY_FREEZE_FAMILIES and 1 <= n <= MAX_DAILY_FREEZES:
        base = DATA_IDS[family | 1]
        return DataId(
            key,
            f"{base.name}_{n}",
            base.description.replace("last", f"{_ordinal(n)} previous"),
            base.kind,
            base.length,
            base.decimals,
            base.unit,
        )
    raise KeyError(f"unknown DL/T 645 data identifier {key:08X}")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
