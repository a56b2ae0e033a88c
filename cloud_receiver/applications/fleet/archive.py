"""The meter archive (档案): which meter belongs to which transformer area, and which one
is the area's total meter.

Line loss compares an area's total meter (台区总表, on the transformer's low-voltage side)
with the sum of its customer meters, so the receiver has to know the topology; readings
alone do not tell. The archive comes from the utility's marketing system as a CSV file::

    meter,area,role,account,group,multiplier
    000100000000,TA-0001,total,,,1
    000100000001,TA-0001,customer,ACC-0001,household,1

- ``meter``, ``area`` and ``role`` (``total`` or ``customer``) are required, the other
  columns optional: ``account`` (the billing account; several meters may share one),
  ``group`` (the tariff class customers are compared within: ``household``,
  ``commercial``…), ``multiplier`` (the CT/PT ratio, 倍率: register kWh × multiplier =
  real kWh; 1 when left out or empty).
- ``concentrator`` (optional): the concentrator the meter sits behind. The archive is
  the authority on it (`cloud_receiver.storage.ownership`): an import adds an
  assignment, effective from ``archive import --effective`` (default: when it was
  asked), for every meter whose owner it changes; the ingest then refuses that meter's
  readings from any other concentrator. Empty: ownership left as it is.
- An area has at most one total meter; a meter appears once. Extra columns are refused,
  so a misspelt header (``acount``) is reported instead of being silently dropped.

Errors name the line and the column (`ArchiveError`). Parsing is pure: the storage keeps
the records (`Storage.replace_archive`), `Archive` answers lookups.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from cloud_receiver.errors import EXIT_ARCHIVE, NotFound, ReceiverError
from cloud_receiver.storage.records import MeterRecord, Role

ROLES: tuple[Role, ...] = ("total", "customer")
COLUMNS = ("meter", "area", "role", "account", "group", "multiplier")
OWNER_COLUMN = "concentrator"  # optional, kept apart: `cloud_receiver.storage.ownership`
REQUIRED = ("meter", "area", "role")

# Printable, no whitespace or commas: meter addresses and names that survive CSV, shells
# and URLs unquoted. DL/T 645 addresses are 12 digits; Modbus meters here are named by
# slave number, so digits alone are not required.
_NAME = re.compile(r"[^\s,\"]{1,64}")


class ArchiveError(ReceiverError, ValueError):
    """The archive file is wrong: fix the file (the message names line and column)."""

    exit_code = EXIT_ARCHIVE


class UnknownName(NotFound, LookupError):
    """A report named an area, meter or account the archive does not hold."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        names = sorted(set(known))
        hint = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        super().__init__(
            f"{kind} {name!r} is not in the archive"
            + (f" (known: {hint})" if names else " (the archive is empty: run `archive import`)")
        )
        self.kind = kind
        self.name = name


def parse_archive_csv(text: str) -> list[MeterRecord]:
    """Records of an archive CSV (the text, a UTF-8 BOM allowed); `ArchiveError` if wrong."""
    return parse_archive(text)[0]


def parse_archive(text: str) -> tuple[list[MeterRecord], dict[str, str]]:
    """Records of an archive CSV and the owners its ``concentrator`` column names
    (meter -> concentrator, rows with one only); `ArchiveError` if wrong."""
    text = text.removeprefix("\ufeff")  # Excel writes one
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ArchiveError(f"not a CSV file: {exc}") from None
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(c.strip() for c in row)]
    if not numbered:
        raise ArchiveError(f"empty file: expected a header row ({','.join(COLUMNS)})")
    header_line, header = numbered[0]
    names = [h.strip().lower() for h in header]
    unknown = [h for h in names if h not in (*COLUMNS, OWNER_COLUMN)]
    if unknown:
        raise ArchiveError(
            f"line {header_line}: unknown column(s) {', '.join(map(repr, unknown))};"
            f" expected {', '.join(COLUMNS)}[,{OWNER_COLUMN}]"
        )
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ArchiveError(
            f"line {header_line}: the header lacks {', '.join(missing)}"
            f" (required: {', '.join(REQUIRED)})"
        )
    if len(set(names)) != len(names):
        raise ArchiveError(f"line {header_line}: a column appears twice in the header")
    records: list[MeterRecord] = []
    owners: dict[str, str] = {}
    for n, row in numbered[1:]:
        if len(row) != len(names):
            raise ArchiveError(f"line {n}: {len(row)} fields, the header has {len(names)}")
        fields = dict(zip(names, (c.strip() for c in row), strict=True))
        record = _record(n, fields)
        records.append(record)
        owner = fields.get(OWNER_COLUMN, "")
        if owner:
            if not _NAME.fullmatch(owner):
                raise ArchiveError(
                    f"line {n}, column {OWNER_COLUMN}: {owner!r} is not a concentrator id"
                    " (1-64 characters, no spaces, commas or quotes)"
                )
            owners[record.meter] = owner
    if not records:
        raise ArchiveError("no meters: the file holds only a header row")
    validate(records, lines=[n for n, _ in numbered[1:]])
    return records, owners


def _record(line: int, row: dict[str, str]) -> MeterRecord:
    def name(column: str, required: bool) -> str:
        value = row.get(column, "")
        if not value and not required:
            return ""
        if not _NAME.fullmatch(value):
            raise ArchiveError(
                f"line {line}, column {column}: {value!r} is not a name"
                " (1-64 characters, no spaces, commas or quotes)"
            )
        return value

    role = row["role"].lower()
    if role not in ROLES:
        raise ArchiveError(
            f"line {line}, column role: {row['role']!r}; expected {' or '.join(ROLES)}"
        )
    text = row.get("multiplier", "") or "1"
    try:
        multiplier = Decimal(text)
    except InvalidOperation:
        multiplier = Decimal("NaN")
    if not multiplier.is_finite() or multiplier <= 0:
        raise ArchiveError(
            f"line {line}, column multiplier: {text!r} is not a positive number (CT ratio)"
        )
    return MeterRecord(
        meter=name("meter", True),
        area=name("area", True),
        role=role,
        account=name("account", False),
        group=name("group", False),
        multiplier=multiplier,
    )


def validate(records: Sequence[MeterRecord], lines: Sequence[int] | None = None) -> None:
    """One row per meter, at most one total meter per area (`ArchiveError` otherwise).
    ``lines`` are the records' line numbers in a file, for the messages."""
    seen: dict[str, str] = {}
    totals: dict[str, tuple[str, str]] = {}
    for i, r in enumerate(records):
        at = f"line {lines[i]}" if lines is not None else f"meter {r.meter}"
        if r.meter in seen:
            raise ArchiveError(f"{at}: meter {r.meter} already listed at {seen[r.meter]}")
        seen[r.meter] = at
        if r.role == "total":
            if r.area in totals:
                other, other_at = totals[r.area]
                where = f" ({other_at})" if lines is not None else ""
                raise ArchiveError(
                    f"{at}: area {r.area} already has total meter {other}{where};"
                    " an area has one total meter"
                )
            totals[r.area] = (r.meter, at)


def merge(existing: Sequence[MeterRecord], new: Sequence[MeterRecord]) -> list[MeterRecord]:
    """The archive after an import: rows of ``new`` replace the same meters' old rows."""
    by_meter = {r.meter: r for r in existing}
    by_meter.update({r.meter: r for r in new})
    merged = sorted(by_meter.values(), key=lambda r: (r.area, r.role != "total", r.meter))
    validate(merged)
    return merged


def format_archive_csv(records: Iterable[MeterRecord], owners: dict[str, str] | None = None) -> str:
    """The import format; with ``owners``, the ``concentrator`` column too."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((*COLUMNS, OWNER_COLUMN) if owners is not None else COLUMNS)
    for r in records:
        row = [r.meter, r.area, r.role, r.account, r.group, str(r.multiplier)]
        writer.writerow([*row, owners.get(r.meter, "")] if owners is not None else row)
    return out.getvalue()


@dataclass(frozen=True)
class Area:
    name: str
    total: MeterRecord | None
    customers: tuple[MeterRecord, ...]

    @property
    def meters(self) -> tuple[MeterRecord, ...]:
        return ((self.total,) if self.total else ()) + self.customers


@dataclass
class Archive:
    """Lookups over the archive's records; unknown names raise `UnknownName`."""

    records: Sequence[MeterRecord]
    _by_meter: dict[str, MeterRecord] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_meter = {r.meter: r for r in self.records}

    def area(self, name: str) -> Area:
        members = [r for r in self.records if r.area == name]
        if not members:
            raise UnknownName("area", name, (r.area for r in self.records))
        total = next((r for r in members if r.role == "total"), None)
        customers = tuple(sorted((r for r in members if r.role == "customer"), key=_by_address))
        return Area(name, total, customers)

    def meter(self, address: str) -> MeterRecord:
        try:
            return self._by_meter[address]
        except KeyError:
            raise UnknownName("meter", address, self._by_meter) from None

    def account(self, name: str) -> list[MeterRecord]:
        members = sorted((r for r in self.records if r.account == name and name), key=_by_address)
        if not members:
            raise UnknownName("account", name, (r.account for r in self.records if r.account))
        return members


def _by_address(r: MeterRecord) -> str:
    return r.meter
