"""The portal in a real headless browser (Debian's chromium driven by playwright) over
the whole chain — the simulated meters, the concentrator daemon, Mosquitto, the
receiver service and ``cloud-receiver web`` on one database (issue 21, acceptance):

- an operator logs in with password and TOTP, finds a meter, sees its curve, and orders
  its relay open; the confirmation says a second operator must approve; a second
  operator approves in their own browser, and the simulated meter's relay really opens;
- a customer whose prepaid supply was cut off logs in, sees the month's usage and the
  balance; a payment provider's top-up (the API, with its own reference) restores the
  supply — the simulated relay really closes; the customer's complaint is answered by
  an operator and shown resolved;
- every operator and customer page renders in both languages.

Screenshots of every step are saved as test artefacts (``$MF_ARTEFACTS``, default
``test-artefacts/``, ``web/``); with ``MF_UPDATE_SCREENSHOTS=1`` the main ones are copied
to ``docs/screenshots/`` (which the README shows).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import DaemonProcess, Operators, truth_of, wait_for
from mqtt_harness import Broker
from test_uplink_e2e import Receiver
from web_harness import build_world, serving

from cloud_receiver.access import customers, tokens
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Role
from cloud_receiver.applications import prepay
from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import MeterRecord, SqliteStorage, open_storage, ownership
from cloud_receiver.web.settings import WebSettings
from contract.records import Reading
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CID = "dc-web"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("MF_ARTEFACTS", ROOT / "test-artefacts")) / "web"
MAIN_SHOTS = {"operator-curve", "operator-approval", "operator-fleet", "customer-overview",
              "customer-usage", "customer-simple", "customer-feedback"}  # fmt: skip
PASSWORD = Operators.PASSWORD
OPERATOR_PAGES = ["/ops/fleet", "/ops/meters", "/ops/areas", "/ops/areas/TA-web",
                  "/ops/accounts", "/ops/accounts/A1", "/ops/dr", "/ops/rollouts",
                  "/ops/requests", "/ops/feedback", "/ops/audit"]  # fmt: skip
CUSTOMER_PAGES = ["/my", "/my/usage", "/my/account", "/my/simple", "/my/privacy", "/my/feedback"]


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if name in MAIN_SHOTS and os.environ.get("MF_UPDATE_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "screenshots"
        target.mkdir(exist_ok=True)
        shutil.copyfile(path, target / path.name)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make setup` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield found
        finally:
            found.close()


def _relay(sim: SimProcess, meter: str) -> list[str]:
    """What the simulated relay really did."""
    return [r.value for r in truth_of(sim.truth) if r.meter == meter and r.quantity == "relay"]


def _account(url: str) -> prepay.Account:
    s = open_storage(url)
    try:
        return prepay.get_account(s, "A1")
    finally:
        s.close()


def _readings(rdb: Path, meter: str) -> int:
    s = SqliteStorage(rdb)
    try:
        return sum(1 for r in s.readings(meter=meter) if r.quantity == "energy_fwd_total")
    finally:
        s.close()


def rdb_of(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _used_this_month(rdb: Path, meter: str) -> Decimal:
    """The month's energy so far, from the receiver's readings (the meter is new)."""
    s = SqliteStorage(rdb)
    try:
        values = [Decimal(r.value) for r in s.readings(meter=meter)
                  if r.quantity == "energy_fwd_total"]  # fmt: skip
    finally:
        s.close()
    return max(values) - min(values)


def _log_in(page: Any, base: str, name: str, *, code: str | None = None,
            customer: bool = False) -> None:  # fmt: skip
    page.goto(f"{base}/login?lang=en")
    if customer:
        page.check("input[name=kind][value=customer]")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    if code is not None:
        page.fill("input[name=totp]", code)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:2000]


def _world(url: str, ops: Operators, m1: str, m2: str) -> str:
    """The archive (two meters in area TA-web, owned by the concentrator), a prepaid
    account for m1 that runs out at once, its customer, the operators, one-meter relay
    orders needing a second operator, and a payment provider's API token."""
    now = time.time()
    s = open_storage(url)
    try:
        s.replace_archive([MeterRecord(m1, "TA-web", "customer", "A1"),
                           MeterRecord(m2, "TA-web", "customer", "")])  # fmt: skip
        with s.transaction() as tx:
            ownership.assign(tx, [ownership.Assignment(m, 0, CID, now, "test") for m in (m1, m2)])
            access_settings.store(tx, "relay-open-approval-above", "0", "test")
        prepay.open_account(s, "A1", m1, prepay.Tariff.parse(["flat=40"], opening="credit=0.01"),
                            concentrator=CID, low=Decimal(0), now=now)  # fmt: skip
        with s.transaction() as tx:
            customers.add(tx, "cora", PASSWORD, meters=[m1], account_ids=[], language="zh",
                          by="test", now=now)  # fmt: skip
            _, token = tokens.create(tx, "system", "payco", Role.BILLING_CLERK, lifetime=3600,
                                     note="payment provider", by="test", now=now)  # fmt: skip
    finally:
        s.close()
    ops.add("olga", "operator", totp=True)
    ops.add("otto", "operator", totp=True)
    ops.add("ada", "administrator", totp=True)
    return token


def test_operators_and_a_customer_in_a_real_browser_over_the_whole_chain(
    tmp_path: Path, operators: Callable[[str], Operators], browser: Any
) -> None:
    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    url = f"sqlite:///{rdb}"
    broker = Broker(tmp_path / "broker")
    broker.start()
    sim = SimProcess(
        ["bus", "--link", str(tmp_path / "bus1"), "--meters", "2", "--baud", "9600",
         "--peak-kw", "70", "--cadence", "5s", "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    add_uplink(cfg, frag, concentrator_id=CID, overrides={"ack_timeout_s": 5.0, "poll_s": 0.5})
    receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
    receiver.args += ["--cutoff-hours", "00:00-24:00"]
    receiver.start()
    daemon = DaemonProcess(cfg)
    m1, m2 = sim.meters
    try:
        wait_for(lambda: rdb.exists() and _readings(rdb, m2) >= 3, 120, "first readings")
        ops = operators(url)
        payco = _world(url, ops, m1, m2)
        with serving(WebSettings(url, tmp_path / "web.key", login_attempts=1000)) as base:
            _operators_order_a_relay(browser, base, ops, sim, m2)
            _a_customer_is_cut_off_topped_up_and_answered(browser, base, ops, sim, url, payco, m1)
            _every_page_in_both_languages(browser, base, ops)
    finally:
        assert daemon.stop() == 0
        receiver.stop()
        sim.stop()
        broker.stop()


def _operators_order_a_relay(browser: Any, base: str, ops: Operators, sim: SimProcess,
                             meter: str) -> None:  # fmt: skip
    olga = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(olga, base, "olga", code=ops.code("olga"))
    olga.goto(f"{base}/ops/fleet?lang=en")
    _shot(olga, "operator-fleet")
    assert "dc-web" in olga.inner_text("table")
    olga.click("nav >> text=Meters")
    olga.wait_for_load_state()
    olga.fill("input[name=q]", meter)  # find the meter: one match opens its page
    olga.click("form.search button")
    olga.wait_for_load_state()
    assert olga.url.split("?")[0].endswith(f"/ops/meters/{meter}")
    points = olga.get_attribute("svg.chart-curve polyline.series", "points") or ""
    assert len(points.split()) >= 2, "the curve has a line"
    _shot(olga, "operator-meter")
    olga.click("text=Open the relay (cut off)")
    olga.wait_for_load_state()
    assert "approval of a second operator" in olga.inner_text("main")
    _shot(olga, "operator-confirm")
    olga.click("button[name=confirm]")
    olga.wait_for_load_state()
    request_url = olga.url.split("?")[0]
    assert "/ops/requests/" in request_url
    assert olga.inner_text("#status") == "awaiting approval"
    assert olga.locator("form[action$='/approve']").count() == 0  # not for the one who asked
    otto = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(otto, base, "otto", code=ops.code("otto"))
    otto.goto(request_url + "?lang=en")
    _shot(otto, "operator-approval")
    otto.click("form[action$='/approve'] button")
    otto.wait_for_load_state()
    wait_for(lambda: _relay(sim, meter) == ["open"], 120, "the simulated relay opened")

    def command_done() -> bool:
        otto.goto(request_url + "?lang=en")
        return otto.locator("#command-status").count() == 1 and (
            otto.inner_text("#command-status") == "done"
        )

    wait_for(command_done, 120, "the command reported done", interval=1.0)
    _shot(otto, "operator-request-done")
    olga.goto(f"{base}/ops/meters/{meter}?lang=en")
    assert "open (supply off)" in olga.inner_text("main")


def _a_customer_is_cut_off_topped_up_and_answered(browser: Any, base: str, ops: Operators,
                                                   sim: SimProcess, url: str, payco: str,
                                                   meter: str) -> None:  # fmt: skip
    wait_for(lambda: _account(url).state == "disconnected", 180, "the prepaid cut-off")
    wait_for(lambda: _relay(sim, meter) == ["open"], 60, "the simulated relay opened")
    cora = browser.new_context(viewport={"width": 1024, "height": 900}).new_page()
    _log_in(cora, base, "cora", customer=True)
    cora.goto(f"{base}/my?lang=en")
    assert cora.inner_text("#balance").startswith("-¥")
    used = _used_this_month(rdb_of(url), meter)
    assert cora.inner_text("#month-kwh") == f"{used} kWh" and used > 0
    assert "cut off because your balance ran out" in cora.inner_text("main")
    _shot(cora, "customer-overview")
    cora.goto(f"{base}/my/usage?lang=zh")
    assert cora.locator("svg.chart").count() == 2  # daily and monthly, by tariff period
    assert cora.locator("table.grid tbody tr").count() >= 1
    _shot(cora, "customer-usage")
    # The payment provider's top-up: an API call with its own reference, made twice.
    body = {"amount": "500.00", "reference": "PAY-2026-0001", "provider": "payco"}
    headers = {"Authorization": f"Bearer {payco}"}
    first = httpx.post(f"{base}/api/v1/accounts/A1/topups", json=body, headers=headers)
    again = httpx.post(f"{base}/api/v1/accounts/A1/topups", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
    assert again.json()["replayed"] is True
    wait_for(lambda: _relay(sim, meter) == ["open", "closed"], 120, "the relay closed again")
    wait_for(lambda: _account(url).state == "connected", 60, "the account reconnected")
    cora.goto(f"{base}/my/simple?lang=zh")
    assert cora.inner_text("#balance").startswith("¥")
    _shot(cora, "customer-simple")
    # A complaint, answered and resolved by an operator.
    cora.goto(f"{base}/my/feedback?lang=en")
    cora.select_option("select[name=topic]", "cutoff")
    cora.fill("input[name=subject]", "Cut off this morning")
    cora.fill("textarea[name=message]", "Why was my power cut off?")
    cora.click("form.form button[type=submit]")
    cora.wait_for_load_state()
    matter = cora.url.split("?")[0]
    number = matter.rsplit("/", 1)[1]
    assert cora.inner_text("#feedback-status") == "open"
    ada = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(ada, base, "ada", code=ops.code("ada"))
    ada.goto(f"{base}/ops/feedback/{number}?lang=en")
    ada.fill("textarea[name=message]", "Your balance ran out; your top-up restored it.")
    ada.click("button[name=resolve]")
    ada.wait_for_load_state()
    assert ada.inner_text("#feedback-status") == "resolved"
    cora.goto(matter + "?lang=zh")
    assert cora.inner_text("#feedback-status") == "已解决"
    assert "your top-up restored it" in cora.inner_text("main")
    _shot(cora, "customer-feedback")


def _every_page_in_both_languages(browser: Any, base: str, ops: Operators) -> None:
    ada = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(ada, base, "ada", code=ops.code("ada"))
    cora = browser.new_context(viewport={"width": 1024, "height": 900}).new_page()
    _log_in(cora, base, "cora", customer=True)
    for page, paths in ((ada, OPERATOR_PAGES), (cora, CUSTOMER_PAGES)):
        for path in paths:
            for lang in ("zh", "en"):
                response = page.goto(f"{base}{path}?lang={lang}")
                assert response is not None and response.status == 200, (path, lang)
                assert page.get_attribute("html", "lang") == lang
                name = path.strip("/").replace("/", "-") or "home"
                _shot(page, f"{name}-{lang}")


M9 = "000000000909"


def _month_of_quarter_hours(url: str) -> None:
    """Five weeks of 15-minute register readings of meter M9 up to now, a household's
    day (a morning and an evening peak), a time-of-use account for it and its customer."""
    import datetime as dt

    zone = dt.timezone(dt.timedelta(hours=8))
    today = dt.datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    start = int((today - dt.timedelta(days=35)).timestamp())
    now = time.time()
    register, rows = Decimal("1200.00"), []
    for slot in range(start, int(now) - 900, 900):
        hour = dt.datetime.fromtimestamp(slot, zone).hour
        kw = 0.3 + (1.6 if 18 <= hour < 22 else 0.9 if 7 <= hour < 9 else 0.0)
        kw *= 1.0 + 0.15 * ((slot // 86400) % 5)  # days differ
        register += Decimal(str(round(kw / 4, 2)))
        rows.append(Reading(M9, "energy_fwd_total", slot, str(register), "kWh", slot + 7.0))
    s = open_storage(url)
    try:
        for seq, i in enumerate(range(0, len(rows), 2000), start=1):
            s.ingest("dc-hist", seq, 1, rows[i : i + 2000], [], now)
        prices = ["peak=0.85", "flat=0.55", "valley=0.30"]
        tariff = prepay.Tariff.parse(prices, "peak=08-11,18-23;valley=23-07", opening="credit=80")
        prepay.open_account(s, "A9", M9, tariff, concentrator="dc-hist", now=now)
        with s.transaction() as tx:
            customers.add(tx, "wang", PASSWORD, meters=[M9], account_ids=[], language="zh",
                          by="test", now=now)  # fmt: skip
    finally:
        s.close()


def test_a_month_of_quarter_hours_in_the_browser(tmp_path: Path, browser: Any) -> None:
    """The usage page and the meter's curve over five weeks of field-like data (the
    screenshots the README shows)."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_storage(url).close()
    world = build_world(url, tmp_path)
    _month_of_quarter_hours(url)
    with serving(WebSettings(url, tmp_path / "web.key", login_attempts=1000)) as base:
        wang = browser.new_context(viewport={"width": 1024, "height": 900}).new_page()
        _log_in(wang, base, "wang", customer=True)
        wang.goto(f"{base}/my/usage?lang=zh")
        bars = wang.locator("svg.chart-bars rect.bar")
        assert bars.count() > 3 * 2  # the days so far and the months, by tariff period
        periods = {bars.nth(i).get_attribute("data-series") for i in range(bars.count())}
        assert periods == {"peak", "flat", "valley"}
        assert "¥" in wang.inner_text("tfoot")
        _shot(wang, "customer-usage")
        ops = world.ops
        viewer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        _log_in(viewer, base, "viewer", code=ops.code("viewer"))
        viewer.goto(f"{base}/ops/meters/{M9}?lang=en")
        points = viewer.get_attribute("svg.chart-curve polyline.series", "points") or ""
        assert len(points.split()) > 96  # yesterday and today so far, in quarter hours
        _shot(viewer, "operator-curve")
        # A chosen range: three whole days, through the form.
        import datetime as dt

        day = dt.date.today() - dt.timedelta(days=10)
        viewer.fill("input[name=since]", (day - dt.timedelta(days=2)).isoformat())
        viewer.fill("input[name=until]", day.isoformat())
        viewer.click("form.range button")
        viewer.wait_for_load_state()
        points = viewer.get_attribute("svg.chart-curve polyline.series", "points") or ""
        assert abs(len(points.split()) - 3 * 96) <= 1
        # The language switch in the header.
        viewer.click("span.lang >> text=中文")
        viewer.wait_for_load_state()
        assert viewer.get_attribute("html", "lang") == "zh"
        assert "电能表" in viewer.inner_text("h1")
        viewer.goto(f"{base}/ops/fleet")
        assert viewer.get_attribute("html", "lang") == "zh"  # kept in the session
