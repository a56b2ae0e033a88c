"""The portal's server-side SVG charts: well-formed SVG, no script and nothing fetched,
values where they belong, gaps left as gaps, labels escaped; and the catalogue."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_receiver.web import charts, i18n

NS = {"s": "http://www.w3.org/2000/svg"}
CST = dt.timezone(dt.timedelta(hours=8))
T0 = int(dt.datetime(2026, 3, 1, tzinfo=CST).timestamp())


def _svg(markup: str) -> ET.Element:
    root = ET.fromstring(str(markup))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = str(markup)
    assert "<script" not in text and "href" not in text  # nothing runs, nothing fetched
    assert text.count("http") == 1  # the namespace only
    return root


def test_a_curve_breaks_at_gaps_and_labels_each_point() -> None:
    points: list[tuple[float, Decimal | None]] = [
        (T0 + i * 900, Decimal("1.5") if i < 10 else Decimal("2")) for i in range(20)
    ]
    points[5] = (points[5][0], None)  # a missing slot
    root = _svg(charts.curve(points, title="Load <kW>", unit="kW", tz=CST))
    lines = root.findall("s:polyline", NS)
    assert len(lines) == 2  # broken at the gap, never drawn across it
    assert [len(p.get("points", "").split()) for p in lines] == [5, 14]
    tips = [t.text for t in root.findall("s:circle/s:title", NS)]
    assert len(tips) == 19 and tips[0] == "2026-03-01 00:00 1.5 kW"
    assert root.find("s:title", NS) is not None
    assert root.findtext("s:title", namespaces=NS) == "Load <kW>"  # escaped, then parsed back


def test_a_curve_with_no_values_says_so() -> None:
    root = _svg(charts.curve([(T0, None)], title="t", unit="kW", tz=CST, no_data="没有数据"))
    assert "没有数据" in "".join(root.itertext())


def test_bars_stack_by_period_in_the_tariff_order() -> None:
    labels = ["03-01", "03-02", "03-03"]
    series = {
        "valley": [Decimal("1"), None, Decimal("2")],
        "peak": [Decimal("3"), None, Decimal("1")],
    }
    root = _svg(charts.bars(labels, series, title="Daily", unit="kWh",
                            names={"peak": "峰", "valley": "谷"}))  # fmt: skip
    rects = root.findall("s:rect[@class='bar']", NS)
    assert [r.get("data-series") for r in rects] == ["peak", "valley", "peak", "valley"]
    heights = [float(r.get("height", "0")) for r in rects]
    assert heights[0] == pytest.approx(3 * heights[1], rel=0.01)  # 3 kWh over 1 kWh
    titles = [r.findtext("s:title", namespaces=NS) for r in rects]
    assert titles[0] == "03-01 峰: 3 kWh"
    legend = "".join(root.itertext())
    assert "峰" in legend and "谷" in legend


def test_bars_refuse_a_series_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="series 'flat': 1 values for 2 labels"):
        charts.bars(["a", "b"], {"flat": [1]}, title="t", unit="kWh")


@given(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False))
def test_nice_max_is_round_and_not_below(value: float) -> None:
    top = charts.nice_max(value)
    assert top >= value * (1 - 1e-9)
    assert top <= value * 2.5 + 1e-12
    mantissa = top / 10 ** __import__("math").floor(__import__("math").log10(top) + 1e-12)
    assert round(mantissa, 6) in (1.0, 2.0, 2.5, 5.0, 10.0)


def test_the_chinese_catalogue_compiles_and_translates_with_escaped_values() -> None:
    zh = i18n.Gettext("zh")
    assert str(zh("Balance")) == "余额"
    filled = zh("Hello, %(name)s", name="<b>")
    assert "&lt;b&gt;" in str(filled)
    en = i18n.Gettext("en")
    assert str(en("Balance")) == "Balance"
    with pytest.raises(ValueError, match="language 'fr'"):
        i18n.translations("fr")
