"""Tables for people, by one rule on every command line (issue 18, item 4).

- Identifiers (meter addresses, command ids, concentrator ids) are never cut: a command
  that prints one needs it in full for the next command. Numbers and times are never
  split across lines. Only free text folds. When the terminal (or a pipe, 80 columns)
  is too narrow for the identifiers and numbers side by side, the table is printed wider
  than the terminal rather than cut.
- A long result is truncated by ``--limit``, and says so on stderr: ``N more rows; use
  --limit/--since`` (`limit_option`, `more_note`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import click

T = TypeVar("T")

F = TypeVar("F", bound=Callable[..., Any])
Kind = Literal["id", "number", "time", "text"]
DEFAULT_LIMIT = 1000
_FOLDED_MIN = 8  # the least a folding column keeps, in characters
_UNFOLDED: frozenset[str] = frozenset({"id", "number", "time"})


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: its heading and what its cells hold (how they may be broken)."""

    name: str
    kind: Kind = "text"


# Columns whose values name something a later command needs whole, and columns of times.
ID_COLUMNS = frozenset(
    {"meter", "account", "area", "concentrator", "id", "command", "command_id", "group",
     "operator", "request", "key_id", "rollout"}
)  # fmt: skip
TIME_COLUMNS = frozenset({"day", "slot", "month", "time", "at", "when", "read_at", "last_seen"})


def infer_columns(names: Sequence[str], rows: Sequence[Sequence[object]]) -> list[Column]:
    """Columns by their names and cells: identifiers and times by name, numbers where
    every non-empty cell is one, the rest text (the only cells that may fold)."""

    def numeric(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    cols = []
    for i, name in enumerate(names):
        key = name.lower().replace(" ", "_")
        cells = [str(r[i]) for r in rows if r[i] not in (None, "")]
        if key in ID_COLUMNS:
            cols.append(Column(name, "id"))
        elif key in TIME_COLUMNS:
            cols.append(Column(name, "time"))
        elif cells and all(numeric(c) for c in cells):
            cols.append(Column(name, "number"))
        else:
            cols.append(Column(name))
    return cols


# A meter's register values, as `read` shows them (direct and through the daemon).
READING_COLUMNS = (Column("quantity", "id"), Column("id", "id"), Column("value", "number"),
                   Column("unit"))  # fmt: skip


def limit_option(default: int = DEFAULT_LIMIT) -> Callable[[F], F]:
    """``--limit N``: at most N rows (0: all of them)."""
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help="At most this many rows (0: all); a note on stderr says how many more there are.",
    )


def window(
    rows: Sequence[T],
    time_of: Callable[[T], float],
    since: float | None,
    until: float | None,
    limit: int,
    *,
    newest: bool = True,
) -> tuple[list[T], int]:
    """The rows (in time order) with ``since <= time < until``, at most ``limit`` of them
    (0: all) — the newest, or with ``newest=False`` the oldest — and how many more there
    were: for the lists a command reads whole (a ledger, the requests)."""
    kept = [r for r in rows if (since is None or time_of(r) >= since)
            and (until is None or time_of(r) < until)]  # fmt: skip
    if not limit or len(kept) <= limit:
        return kept, 0
    return (kept[-limit:] if newest else kept[:limit]), len(kept) - limit


def more_note(more: int | None, hint: str = "use --limit/--since") -> None:
    """On stderr, when rows were left out: how many (None: some, not counted), and how
    to see them."""
    if more is None:
        click.echo(f"more rows; {hint}", err=True)
    elif more > 0:
        click.echo(f"{more} more row{'s' if more != 1 else ''}; {hint}", err=True)


def print_table(
    columns: Sequence[Column | str],
    rows: Sequence[Sequence[object]],
    *,
    title: str | None = None,
) -> None:
    """``rows`` as a table on stdout, by the rules in the module docstring. Cells are
    text as they are (``[meter]`` in a message is not console markup)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    table = Table(title=title)
    needed = len(cols) + 1  # the borders
    for i, col in enumerate(cols):
        longest = max([len(col.name), *(len(r[i]) for r in cells)]) if cells else len(col.name)
        if col.kind in _UNFOLDED:
            table.add_column(
                col.name,
                no_wrap=True,
                min_width=longest,
                justify="right" if col.kind == "number" else "left",
            )
            needed += longest + 2
        else:
            table.add_column(col.name, overflow="fold")
            needed += min(longest, _FOLDED_MIN) + 2
    for row in cells:
        table.add_row(*(Text(c) for c in row))  # data, never console markup
    console = Console()
    if console.width < needed:
        console = Console(width=needed)
    console.print(table)
