"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched at run time.

Two shapes cover the portal: a *curve* (the 15-minute interval load of a meter over a
chosen range; gaps break the line rather than being drawn across) and *bars* (daily or
monthly energy, stacked by tariff period). Each returns one ``<svg>`` element as
`markupsafe.Markup`, with a ``<title>`` and per-point ``<title>`` tooltips (screen
readers and hovering both get the values), so a page can include it as it is. Labels
are escaped here; numbers are written with the precision the chart can show.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

from markupsafe import Markup

Number = float | Decimal | int

# Tariff periods in drawing order, each with its colour (colour-blind safe palette).
PERIOD_COLOURS: dict[str, str] = {
    "sharp": "#b2182b",
    "peak": "#ef8a62",
    "flat": "#67a9cf",
    "valley": "#2166ac",
    "total": "#4d4d4d",
}
_FALLBACK = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e")
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 40


@dataclass(frozen=True)
class Frame:
    """The plot area inside the SVG and the value range it maps."""

    width: int
    height: int
    y_max: float

    @property
    def plot_w(self) -> float:
        return float(self.width - LEFT - RIGHT)

    @property
    def plot_h(self) -> float:
        return float(self.height - TOP - BOTTOM)

    def y(self, value: float) -> float:
        return TOP + self.plot_h * (1 - value / self.y_max)


def nice_max(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^n at or above ``value`` (an axis that ends round)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exp
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exp + 1)  # pragma: no cover - the loop always returns


def _num(value: float) -> str:
    """An axis label: no more digits than the axis can show."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _open(frame: Frame, title: str, css: str) -> list[str]:
    t = escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css}" role="img"'
        f' viewBox="0 0 {frame.width} {frame.height}" width="100%"'
        f' preserveAspectRatio="xMidYMid meet" aria-label="{t}">',
        f"<title>{t}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{t}</text>',
    ]


def _y_axis(frame: Frame, unit: str) -> list[str]:
    mantissa = frame.y_max / 10 ** math.floor(math.log10(frame.y_max))
    ticks = 5 if round(mantissa, 6) in (2.5, 5.0) else 4  # round labels: 5, 10 … / 0.25 …
    out = []
    for i in range(ticks + 1):
        value = frame.y_max * i / ticks
        y = frame.y(value)
        out.append(
            f'<line x1="{LEFT}" x2="{frame.width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
            f' stroke="#ddd" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
            f"{_num(value)}</text>"
        )
    out.append(
        f'<text x="12" y="{TOP + frame.plot_h / 2:.1f}" font-size="11" text-anchor="middle"'
        f' transform="rotate(-90 12 {TOP + frame.plot_h / 2:.1f})">{escape(unit)}</text>'
    )
    return out


def empty(title: str, message: str, *, width: int = 720, height: int = 120) -> Markup:
    """A chart frame that says why there is nothing to draw."""
    frame = Frame(width, height, 1.0)
    out = _open(frame, title, "chart-empty")
    out.append(
        f'<text x="{width / 2:.0f}" y="{height / 2 + 10:.0f}" font-size="14"'
        f' text-anchor="middle" fill="#666">{escape(message)}</text>'
    )
    out.append("</svg>")
    return Markup("".join(out))


def curve(
    points: Sequence[tuple[float, Number | None]],
    *,
    title: str,
    unit: str,
    tz: dt.tzinfo,
    no_data: str = "no data",
    width: int = 720,
    height: int = 260,
    step_s: float = 900.0,
) -> Markup:
    """A line through ``(unix time, value)`` points; a ``None`` value or a gap longer
    than two ``step_s`` breaks the line. The x axis is labelled in ``tz``."""
    known = [(t, float(v)) for t, v in points if v is not None]
    if not known:
        return empty(title, no_data, width=width)
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, step_s)
    frame = Frame(width, height, nice_max(max(max(v for _, v in known), 0.0)))

    def x(t: float) -> float:
        return LEFT + frame.plot_w * (t - t0) / span

    out = _open(frame, title, "chart-curve")
    out += _y_axis(frame, unit)
    out += _time_ticks(frame, t0, t1, tz, x)
    runs: list[list[tuple[float, float]]] = []
    last_t: float | None = None
    for t, v in points:
        if v is None:
            last_t = None
            continue
        if last_t is None or t - last_t > 2 * step_s:
            runs.append([])
        runs[-1].append((t, float(v)))
        last_t = t
    for run in runs:
        coords = " ".join(f"{x(t):.1f},{frame.y(v):.1f}" for t, v in run)
        if len(run) == 1:
            (t, v) = run[0]
            out.append(f'<circle cx="{x(t):.1f}" cy="{frame.y(v):.1f}" r="2" fill="#2166ac"/>')
        else:
            out.append(
                f'<polyline class="series" fill="none" stroke="#2166ac" stroke-width="1.5"'
                f' points="{coords}"/>'
            )
    # Hover targets: one invisible dot per point, each with its value.
    for t, v in known:
        when = dt.datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")
        out.append(
            f'<circle class="point" cx="{x(t):.1f}" cy="{frame.y(v):.1f}" r="3"'
            f' fill="transparent"><title>{when} {_num(v)} {escape(unit)}</title></circle>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def _time_ticks(
    frame: Frame, t0: float, t1: float, tz: dt.tzinfo, x: Callable[[float], float]
) -> list[str]:
    """Ticks at local midnights for ranges over two days, else at round minutes or
    hours: at most about eight."""
    span = t1 - t0
    start = dt.datetime.fromtimestamp(t0, tz)
    if span > 2 * 86400:
        step = dt.timedelta(days=max(1, math.ceil(span / 86400 / 8)))
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        fmt = "%m-%d"
    else:
        seconds = next((s for s in (60, 300, 600, 1800, 3600, 10800) if span / s <= 8), 21600)
        step = dt.timedelta(seconds=seconds)
        first = start.replace(minute=0, second=0, microsecond=0)
        fmt = "%H:%M"
    out = []
    tick = first
    base = TOP + frame.plot_h
    while tick.timestamp() <= t1:
        if tick.timestamp() >= t0:
            px = x(tick.timestamp())
            out.append(
                f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{base:.1f}" y2="{base + 4:.1f}"'
                f' stroke="#333"/>'
            )
            out.append(
                f'<text x="{px:.1f}" y="{base + 16:.1f}" font-size="11" text-anchor="middle">'
                f"{tick.strftime(fmt)}</text>"
            )
        tick += step
    return out


def _total(values: Iterable[Number | None]) -> float:
    return sum((float(v) for v in values if v is not None), 0.0)


def bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[Number | None]],
    *,
    title: str,
    unit: str,
    names: Mapping[str, str] | None = None,
    no_data: str = "no data",
    width: int = 720,
    height: int = 260,
) -> Markup:
    """One bar per label, stacked by series (tariff periods: ``PERIOD_COLOURS`` order);
    a label with no value in any series is left as a gap. ``names`` translates the
    series names in the legend and the tooltips."""
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r}: {len(values)} values for {len(labels)} labels")
    totals = [_total(vs[i] for vs in series.values()) for i in range(len(labels))]
    if not labels or max(totals) <= 0:
        return empty(title, no_data, width=width)
    frame = Frame(width, height, nice_max(max(totals)))
    order = sorted(
        series, key=lambda s: list(PERIOD_COLOURS).index(s) if s in PERIOD_COLOURS else 99
    )
    colours = {s: PERIOD_COLOURS.get(s, _FALLBACK[i % len(_FALLBACK)]) for i, s in enumerate(order)}
    shown = names or {}
    slot = frame.plot_w / len(labels)
    bar_w = max(1.0, slot * 0.7)
    out = _open(frame, title, "chart-bars")
    out += _y_axis(frame, unit)
    every = max(1, math.ceil(len(labels) / 12))
    base = TOP + frame.plot_h
    for i, label in enumerate(labels):
        left = LEFT + slot * i + (slot - bar_w) / 2
        bottom = 0.0
        for name in order:
            value = series[name][i]
            if value is None or float(value) <= 0:
                continue
            v = float(value)
            y_top, y_bottom = frame.y(bottom + v), frame.y(bottom)
            out.append(
                f'<rect class="bar" data-series="{escape(name)}" x="{left:.1f}"'
                f' y="{y_top:.1f}" width="{bar_w:.1f}" height="{y_bottom - y_top:.1f}"'
                f' fill="{colours[name]}"><title>{escape(label)} {escape(shown.get(name, name))}:'
                f" {_num(v)} {escape(unit)}</title></rect>"
            )
            bottom += v
        if i % every == 0:
            out.append(
                f'<text x="{left + bar_w / 2:.1f}" y="{base + 16:.1f}" font-size="11"'
                f' text-anchor="middle">{escape(label)}</text>'
            )
    if len(order) > 1 or names:
        lx = LEFT
        for name in order:
            out.append(
                f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{colours[name]}"/>'
                f'<text x="{lx + 14}" y="{height - 5}" font-size="11">'
                f"{escape(shown.get(name, name))}</text>"
            )
            lx += 24 + 8 * len(shown.get(name, name))
    out.append("</svg>")
    return Markup("".join(out))
