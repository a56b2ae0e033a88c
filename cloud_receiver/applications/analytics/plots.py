"""PNG plots of the reports: a load curve, an area's line loss over time, a forecast.

matplotlib is an optional extra (``pip install 'meterflow[analytics]'``), imported only
when a plot is asked for, and only its object-oriented API with the Agg canvas: no
pyplot, no global figure state, no display needed. Each function returns the Figure
(title, axis labels with units) so a caller can inspect it before `save_png`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from cloud_receiver.applications.analytics.energy import SLOT_S
from cloud_receiver.applications.analytics.forecast import Forecast
from cloud_receiver.applications.analytics.lineloss import AreaDay
from cloud_receiver.applications.analytics.usage import UsageReport
from cloud_receiver.errors import ReceiverError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class PlotError(ReceiverError, RuntimeError):
    """No plot could be made (matplotlib missing, or nothing to plot)."""


def _figure(width: float = 10.0, height: float = 4.5) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(
            "plots need matplotlib: pip install 'meterflow[analytics]' (or matplotlib>=3.8)"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def load_curve(report: UsageReport, tz: dt.tzinfo) -> Figure:
    """The 15-minute load (kW) over the report's range; gaps stay gaps."""
    times = [
        dt.datetime.fromtimestamp(report.since + i * SLOT_S, tz) for i in range(len(report.curve))
    ]
    kw = [s.kw if s is not None else float("nan") for s in report.curve]
    if all(s is None for s in report.curve):
        raise PlotError(f"{report.scope} {report.name}: no measured load to plot in the range")
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(_dates(times), kw, linewidth=0.8, color="tab:blue", label="15-min demand")
    ax.set_title(
        f"Load curve, {report.scope} {report.name}, {report.first} to"
        f" {report.end - dt.timedelta(days=1)}"
    )
    ax.xaxis_date(tz)
    ax.set_xlabel(f"local time (UTC{_offset(tz)})")
    ax.set_ylabel("load (kW)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return fig


def line_loss(days: Sequence[AreaDay], area: str) -> Figure:
    """Daily loss rate (%) with supply (kWh) behind it; incomplete days marked apart."""
    if not days:
        raise PlotError(f"area {area}: no days to plot")
    fig = _figure()
    ax = fig.add_subplot()
    good = [d for d in days if d.loss_rate is not None]
    ax.plot(
        _dates(d.day for d in good),
        [100 * (d.loss_rate or 0.0) for d in good],
        marker="o",
        markersize=3,
        color="tab:red",
        label="line loss rate",
    )
    bad = [d.day for d in days if d.status == "incomplete"]
    if bad:
        ax.scatter(
            _dates(bad), [0.0] * len(bad), marker="x", color="grey", label="incomplete (not loss)"
        )
    ax.set_title(f"Line loss, area {area}, {days[0].day} to {days[-1].day}")
    ax.xaxis_date(dt.UTC)  # plain dates: no time zone to shift them
    ax.set_xlabel("day")
    ax.set_ylabel("line loss rate (%)")
    ax.grid(True, alpha=0.3)
    supply = ax.twinx()
    supply.bar(
        _dates(d.day for d in days),
        [float(d.supply_kwh or 0) for d in days],
        alpha=0.15,
        color="tab:blue",
        label="supply",
    )
    supply.set_ylabel("supply (kWh/day)")
    supply.set_zorder(ax.get_zorder() - 1)
    ax.set_frame_on(False)
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = supply.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper left")
    fig.autofmt_xdate()
    return fig


def forecast(result: Forecast, tz: dt.tzinfo, actual: Sequence[float | None] | None) -> Figure:
    start = dt.datetime.combine(result.day, dt.time(), tzinfo=tz)
    times = [start + dt.timedelta(seconds=q * SLOT_S) for q in range(len(result.kw))]
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(_dates(times), result.kw, color="tab:green", label=f"forecast ({result.method})")
    if result.baseline_kw:
        ax.plot(_dates(times), result.baseline_kw, color="grey", linestyle="--", label="yesterday")
    if actual is not None:
        ax.plot(_dates(times), [float("nan") if v is None else v for v in actual], label="actual")
    ax.set_title(f"Load forecast, area {result.area}, {result.day}")
    ax.xaxis_date(tz)
    ax.set_xlabel(f"local time (UTC{_offset(tz)})")
    ax.set_ylabel("load (kW)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def _dates(values: Iterable[dt.date]) -> list[float]:
    """Matplotlib date numbers: its typed plotting API takes numbers, not datetimes (the
    caller then says ``ax.xaxis_date(tz)``). A plain date counts as midnight UTC."""
    from matplotlib import dates

    to_number = cast(Callable[[dt.date], float], dates.date2num)
    return [to_number(v) for v in values]


def save_png(fig: Figure, path: Path) -> None:
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise PlotError(f"{path}: {exc.strerror or exc}") from None


def _offset(tz: dt.tzinfo) -> str:
    text = dt.datetime(2000, 1, 1, tzinfo=tz).strftime("%z")
    return f"{text[:3]}:{text[3:]}" if text else ""
