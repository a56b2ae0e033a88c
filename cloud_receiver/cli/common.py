"""What several command groups share: opening the database, parsing times, durations
and concentrator ids, and printing tables."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import click

from clitools.output import json_cell, print_json
from clitools.table import infer_columns, print_table
from cloud_receiver.applications.fleet import pki
from cloud_receiver.errors import StorageError

if TYPE_CHECKING:
    from cloud_receiver.storage import Storage

F = TypeVar("F", bound=Callable[..., Any])


def open_db(db_url: str, *, create: bool = False) -> Storage:
    """The receiver's database; `StorageError` (exit 1) naming the URL if it cannot be
    opened (a wrong URL, an unreachable server, a foreign schema, or — unless
    ``create``, which only the service, ``restore`` and the first ``operator add`` ask
    for — a database that does not exist yet: a query never creates one)."""
    from cloud_receiver.storage import open_storage

    try:
        return open_storage(db_url, create=create)
    except Exception as exc:
        raise StorageError(f"cannot open database {db_url}: {exc}") from exc


@contextlib.contextmanager
def opened(db_url: str, *, create: bool = False) -> Iterator[Storage]:
    """`open_db`, closed afterwards."""
    storage = open_db(db_url, create=create)
    try:
        yield storage
    finally:
        storage.close()


def check_concentrator_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return pki.validate_concentrator_id(value)
    except pki.PkiError as exc:
        raise click.BadParameter(str(exc)) from None


def time_arg(text: str | None) -> int | None:
    """Unix seconds or an ISO date/time (local time when no offset is given)."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return int(dt.datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected unix seconds or an ISO date/time") from None


def duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``90s``, ``10m``, ``2h``, ``1d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    factor = units.get(text[-1:], 1) if text else 1
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * factor
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise click.BadParameter(f"{value!r}: expected a duration such as 90s, 10m, 2h or 1d")
    return seconds


def collection_interval(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A `duration` that divides a day: the slots of the collection plan."""
    seconds = duration(ctx, param, value)
    if seconds != int(seconds) or 86_400 % int(seconds):
        raise click.BadParameter(
            f"{value!r}: expected an interval that divides a day (1m, 5m, 15m, 30m, 1h ...)"
        )
    return int(seconds)


def collection_options(flag: str = "--interval") -> Callable[[F], F]:
    """The collection plan's ``flag`` (env ``MF_COLLECTION_INTERVAL``) and
    ``--late-after``: one setting for the ``completeness`` report and the metrics of
    ``run`` (`cloud_receiver.storage.completeness`)."""

    def apply(fn: F) -> F:
        fn = click.option(
            "--late-after", "late_after", default="2h", show_default=True,
            envvar="MF_COLLECTION_LATE_AFTER", show_envvar=True, callback=duration,
            help="A reading is late when it reached the receiver this long after the end "
            "of its local day (when the day's report is drawn).",
        )(fn)  # fmt: skip
        return click.option(
            flag, "interval_s", default="15m", show_default=True,
            envvar="MF_COLLECTION_INTERVAL", show_envvar=True, callback=collection_interval,
            help="One interval reading expected per meter per this period: the "
            "concentrators' interval task as the utility set it.",
        )(fn)  # fmt: skip

    return apply


def size_arg(ctx: click.Context, param: click.Parameter, text: str) -> int:
    """A size in bytes: ``4096``, ``512K``, ``64M``, ``1G`` (binary multiples)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in units else t
    if not (digits.isascii() and digits.isdigit()) or int(digits) < 1:
        raise click.BadParameter(f"{text!r}: expected a size such as 4096, 512K, 64M or 1G")
    return int(digits) * factor


def num(value: object, places: int = 2) -> str:
    """A table/CSV cell: empty for None, fixed decimals for numbers."""
    if value is None:
        return ""
    if isinstance(value, float | Decimal):
        return f"{value:.{places}f}"
    return str(value)


def emit(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str,
    as_csv: bool,
    as_json: bool = False,
    summary: Mapping[str, object] | None = None,
) -> None:
    """A report's rows as CSV, JSON (``{"title", "rows": [{column: value}], ...summary}``,
    numbers as numbers, empty cells as null) or a table (`clitools.table`: identifiers
    and numbers never cut)."""
    if as_json:
        print_json(
            {
                "title": title,
                "rows": [
                    {c: json_cell(v) for c, v in zip(columns, row, strict=True)} for row in rows
                ],
                **(summary or {}),
            }
        )
        return
    if as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows(rows)
        return
    print_table(infer_columns(columns, rows), rows, title=title)
