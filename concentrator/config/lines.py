"""Where each table header and ``key =`` line is in the raw TOML text.

``tomllib`` keeps no line numbers, so this small index maps table headers
(``[[meter]]`` counted in order) and ``key =`` lines back to lines; an issue points at
the key's line, or at its table's header when the key is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER_RE = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")

TableId = tuple[str, int | None]  # ("meter", 3), ("storage", None), ("", None) = top level


@dataclass
class _TableLines:
    header: int | None
    keys: dict[str, int] = field(default_factory=dict)


class LineIndex:
    """Where each table header and ``key =`` line is, from the raw text.

    Good enough for configs people write: it ignores lines inside multi-line arrays and
    strings, and maps ``[meter.x]`` sub-tables to key ``x`` of the latest ``[[meter]]``.
    """

    def __init__(self, text: str) -> None:
        # Built at the first question: a clean config asks none, and the index of a
        # site's thousands of meter lines costs the daemon megabytes of peak RSS.
        self._text: str | None = text
        self._tables: dict[TableId, _TableLines] = {}

    @property
    def tables(self) -> dict[TableId, _TableLines]:
        if self._text is not None:
            text, self._text = self._text, None
            self._build(text)
        return self._tables

    def _build(self, text: str) -> None:
        self._tables = {("", None): _TableLines(None)}
        counts: dict[str, int] = {}
        current: _TableLines | None = self._tables[("", None)]
        depth = 0  # open brackets of a multi-line array
        in_string: str | None = None
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if raw.count(in_string) % 2:
                    in_string = None
                continue
            if depth == 0:
                header = _HEADER_RE.match(raw)
                if header is not None:
                    names = [n.strip().strip("\"'") for n in header[2].split(".")]
                    current = self._header(names, header[1] == "[[", lineno, counts)
                    continue
                key = _KEY_RE.match(raw)
                if key is not None and current is not None:
                    current.keys.setdefault(key[1].strip("\"'"), lineno)
            value = raw.split("=", 1)[1] if depth == 0 and "=" in raw else raw
            for quote in ('"""', "'''"):
                if value.count(quote) % 2:
                    in_string = quote
            depth = max(0, depth + _bracket_balance(value))

    def _header(
        self, names: list[str], is_array: bool, lineno: int, counts: dict[str, int]
    ) -> _TableLines | None:
        top = names[0]
        if len(names) == 1:
            if is_array:
                index = counts.get(top, -1) + 1
                counts[top] = index
                table = _TableLines(lineno)
                self._tables[(top, index)] = table
                return table
            table = self._tables.setdefault((top, None), _TableLines(lineno))
            table.header = lineno
            return table
        # A sub-table: report it as the key it adds to its parent, and index no deeper.
        parent = self._tables.get((top, counts[top]) if top in counts else (top, None))
        if parent is not None:
            parent.keys.setdefault(names[1], lineno)
        return None

    def line(self, table: TableId, key: str | None = None) -> int | None:
        entry = self.tables.get(table)
        if entry is None:
            # e.g. ``meter = [{...}]`` inline: only the top-level key has a line
            return self.tables[("", None)].keys.get(table[0])
        if key is not None and key in entry.keys:
            return entry.keys[key]
        if table == ("", None) and key is not None:
            # a top-level key written as a table: its header is where it is
            sub = self.tables.get((key, None)) or self.tables.get((key, 0))
            return sub.header if sub is not None else None
        return entry.header


def _bracket_balance(text: str) -> int:
    balance = 0
    quote: str | None = None
    for ch in text:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            balance += 1
        elif ch in "]}":
            balance -= 1
    return balance
