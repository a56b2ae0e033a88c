"""How a site's time zone is written in configs and commands: a fixed UTC offset such
as ``+08:00`` (China Standard Time has no daylight saving; a fixed offset is what the
meters' own clocks keep)."""

from __future__ import annotations

import datetime as dt
import re

_TZ_RE = re.compile(r"([+-])(\d{2}):(\d{2})")


def parse_utc_offset(text: str) -> dt.timezone | None:
    """``+HH:MM`` / ``-HH:MM`` (hours up to 14) as a fixed zone, or None if malformed."""
    m = _TZ_RE.fullmatch(text)
    if m is None or int(m[2]) > 14 or int(m[3]) > 59:
        return None
    minutes = int(m[2]) * 60 + int(m[3])
    return dt.timezone(dt.timedelta(minutes=-minutes if m[1] == "-" else minutes))


def iso_time(t: float, tz: dt.tzinfo = dt.UTC) -> str:
    """Unix seconds as ISO 8601 with its offset, to the second: how both ends write a
    time for people (docs/output.md); in UTC where the site's zone is not known."""
    return dt.datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")
