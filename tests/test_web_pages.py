"""The portal's pages over a real uvicorn and database (`web_harness`): every operator
and customer page renders in both languages with no untranslated message; the role
checks of the pages (a customer never reaches an operator page or another customer's
account, a viewer gets no action buttons, the audit log is for administrators); the
confirmation and second-operator approval of a relay order, the top-up and the
feedback round trip through forms with CSRF tokens; views audited."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from web_harness import (
    CONCENTRATOR,
    DAY0,
    M1,
    M2,
    World,
    build_world,
    csrf_of,
    logged_in,
    serving,
)

from clitools.timefmt import site_tz
from cloud_receiver.access import settings as access_settings
from cloud_receiver.applications import dr
from cloud_receiver.storage import completeness, open_storage
from cloud_receiver.storage.completeness import Plan
from cloud_receiver.storage.schema import audit_log
from cloud_receiver.web import i18n
from cloud_receiver.web.i18n import Gettext
from cloud_receiver.web.portal import reads
from cloud_receiver.web.settings import WebSettings
from contract.records import Reading

OPERATOR_PAGES = [
    "/ops/fleet", "/ops/meters", f"/ops/meters?q={M1[:6]}", f"/ops/meters/{M1}",
    f"/ops/meters/{M1}?since=2026-01-04&until=2026-01-05", "/ops/areas", "/ops/areas/TA-1",
    "/ops/accounts", "/ops/accounts/A1", "/ops/dr", "/ops/rollouts", "/ops/requests",
    "/ops/feedback", "/ops/audit",
]  # fmt: skip
CUSTOMER_PAGES = ["/my", "/my/usage", "/my/usage?month=2026-01", "/my/account", "/my/simple",
                  "/my/privacy", "/my/feedback"]  # fmt: skip
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World]]:
    tmp = tmp_path_factory.mktemp("portal")
    db = f"sqlite:///{tmp / 'r.db'}"
    open_storage(db).close()
    world = build_world(db, tmp)
    storage = open_storage(db)
    try:
        with storage.transaction() as tx:  # a single-meter relay-open needs a second operator
            access_settings.store(tx, "relay-open-approval-above", "0", "test")
    finally:
        storage.close()
    with serving(WebSettings(db, tmp / "secret.key", login_attempts=1000)) as base:
        yield base, world


def _visible_text(html: str) -> str:
    """The page's text outside tags, scripts-free (there are none) and attribute-free."""
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_operator_page_renders_in_both_languages(
    portal: tuple[str, World], lang: str
) -> None:
    base, world = portal
    admin = logged_in(base, world, "administrator")
    for page in OPERATOR_PAGES:
        sep = "&" if "?" in page else "?"
        r = admin.get(f"{page}{sep}lang={lang}")
        assert r.status_code == 200, (page, r.text[:500])
        assert "<script" not in r.text
        text = _visible_text(r.text)
        if lang == "zh":
            assert HAN.search(text), page
            assert "Fleet" not in text and "Meters" not in text, page  # the nav is translated
        else:
            assert "Fleet" in text, page


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_customer_page_renders_in_both_languages(
    portal: tuple[str, World], lang: str
) -> None:
    base, world = portal
    c1 = logged_in(base, world, "c1", "customer")
    for page in CUSTOMER_PAGES:
        sep = "&" if "?" in page else "?"
        r = c1.get(f"{page}{sep}lang={lang}")
        assert r.status_code == 200, (page, r.text[:500])
        text = _visible_text(r.text)
        expected = ("余额", "电") if lang == "zh" else ("Balance", "Usage")
        assert any(word in text for word in expected), page


def test_the_meter_page_draws_the_interval_curve(portal: tuple[str, World]) -> None:
    base, world = portal
    viewer = logged_in(base, world, "viewer")
    page = viewer.get(f"/ops/meters/{M1}?since=2026-01-05&until=2026-01-05&lang=en").text
    [line] = re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', page)
    assert len(line.split()) == 7  # 8 quarter-hour readings: 7 intervals
    assert page.count('class="point"') == 7
    empty = viewer.get(f"/ops/meters/{M1}?since=2026-02-01&until=2026-02-02&lang=en").text
    assert "No readings in this range" in empty and "<polyline" not in empty
    too_long = viewer.get(f"/ops/meters/{M1}?since=2026-01-01&until=2026-03-01")
    assert too_long.status_code == 422 and "at most 31 days" in too_long.text


def test_a_customer_sees_only_their_own(portal: tuple[str, World]) -> None:
    base, world = portal
    c1 = logged_in(base, world, "c1", "customer")
    assert c1.get("/my/account?account=A1").status_code == 200
    for page in ("/my?account=A2", "/my/usage?account=A2", "/my/account?account=A2",
                 "/my/simple?account=A2", "/my/account?account=A3"):  # fmt: skip
        r = c1.get(page)
        assert r.status_code == 403, (page, r.status_code)
        assert "A2" not in r.text.replace("account:A2", "") or "only their own" in r.text
    for page in ("/ops/fleet", f"/ops/meters/{M2}", "/ops/accounts/A2", "/ops/audit"):
        assert c1.get(page).status_code == 403, page
    anonymous = httpx.Client(base_url=base)
    r = anonymous.get("/my/account", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_roles_decide_the_pages_and_the_buttons(portal: tuple[str, World]) -> None:
    base, world = portal
    viewer = logged_in(base, world, "viewer")
    assert viewer.get("/ops/audit").status_code == 403
    page = viewer.get(f"/ops/meters/{M1}?lang=en").text
    assert "Open the relay" not in page
    assert viewer.get(f"/ops/meters/{M1}/relay?action=open").status_code == 403
    clerk = logged_in(base, world, "billingclerk")
    assert "Top up" in clerk.get("/ops/accounts/A1?lang=en").text
    assert "Top up (yuan)" not in viewer.get("/ops/accounts/A1?lang=en").text


def test_a_relay_order_is_confirmed_then_approved_by_a_second_operator(
    portal: tuple[str, World],
) -> None:
    base, world = portal
    olga = logged_in(base, world, "operator")
    confirm = olga.get(f"/ops/meters/{M1}/relay?action=open&lang=en")
    assert confirm.status_code == 200
    assert "relay-open on dc-web-1 for 1 meter(s)" in confirm.text
    assert "approval of a second operator" in confirm.text
    no_token = olga.post(f"/ops/meters/{M1}/relay", data={"action": "open"})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    asked = olga.post(f"/ops/meters/{M1}/relay",
                      data={"action": "open", "csrf_token": csrf_of(confirm.text)})  # fmt: skip
    assert asked.status_code == 303
    url = asked.headers["location"]
    mine = olga.get(url + "?lang=en").text
    assert "awaiting_approval" in mine or "waiting for approval" in mine.lower()
    assert "Approve" not in mine.replace("approval", "")  # not to the operator who asked
    own = olga.post(url + "/approve", data={"csrf_token": csrf_of(mine)})
    assert own.status_code == 403 and "a second operator must approve it" in own.text
    viewer = logged_in(base, world, "viewer")
    page = viewer.get(url + "?lang=en").text
    assert viewer.post(url + "/approve", data={"csrf_token": csrf_of(page)}).status_code == 403
    second = logged_in(base, world, "operator2")
    page = second.get(url + "?lang=en")
    assert 'action="' + url + '/approve"' in page.text
    done = second.post(url + "/approve", data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    after = second.get(url + "?lang=en").text
    assert "Approvals: 1 of 1 needed" in after and "operator2" in after
    again = second.post(url + "/approve", data={"csrf_token": csrf_of(after)})
    assert again.status_code == 409  # nothing left to approve


def test_a_top_up_from_the_account_page(portal: tuple[str, World]) -> None:
    base, world = portal
    clerk = logged_in(base, world, "billingclerk")
    before = clerk.get("/ops/accounts/A2?lang=en").text
    confirm = clerk.get("/ops/accounts/A2/topup?amount=12.50&lang=en")
    assert confirm.status_code == 200 and "by 12.50 yuan" in confirm.text
    bad = clerk.get("/ops/accounts/A2/topup?amount=-3")
    assert bad.status_code == 422
    done = clerk.post("/ops/accounts/A2/topup",
                      data={"amount": "12.50", "csrf_token": csrf_of(confirm.text)})  # fmt: skip
    assert done.status_code == 303
    after = clerk.get("/ops/accounts/A2?lang=en").text
    assert "¥12.50" in after and after != before


def test_feedback_raised_answered_and_resolved(portal: tuple[str, World]) -> None:
    base, world = portal
    c2 = logged_in(base, world, "c2", "customer")
    form = c2.get("/my/feedback?lang=en").text
    raised = c2.post("/my/feedback", data={
        "csrf_token": csrf_of(form), "account": "A2", "topic": "cutoff",
        "subject": "Cut off while I had credit", "message": "Why was I cut off on Monday?",
    })  # fmt: skip
    assert raised.status_code == 303
    mine = raised.headers["location"]
    other = c2.post("/my/feedback", data={
        "csrf_token": csrf_of(form), "account": "A1", "topic": "bill", "subject": "x",
        "message": "y",
    })  # fmt: skip
    assert other.status_code == 403  # not c2's account
    number = mine.rsplit("/", 1)[1]
    c1 = logged_in(base, world, "c1", "customer")
    assert c1.get(mine).status_code == 404  # another customer's matter is unknown
    clerk = logged_in(base, world, "billingclerk")
    page = clerk.get(f"/ops/feedback/{number}?lang=en").text
    assert "Why was I cut off on Monday?" in page
    answered = clerk.post(f"/ops/feedback/{number}", data={
        "csrf_token": csrf_of(page), "message": "A meter fault; fixed, and credited.",
        "resolve": "1",
    })  # fmt: skip
    assert answered.status_code == 303
    shown = c2.get(mine + "?lang=zh").text
    assert "A meter fault; fixed, and credited." in shown
    assert Gettext("zh").plain("resolved") in shown
    storage = open_storage(world.db_url)
    try:
        with storage.read() as conn:
            rows = conn.execute(select(audit_log.c.principal, audit_log.c.kind,
                                       audit_log.c.target)).all()  # fmt: skip
    finally:
        storage.close()
    assert ("operator:billingclerk", "read", "account:A2") in [tuple(r) for r in rows]
    assert ("operator:billingclerk", "change", "account:A2") in [tuple(r) for r in rows]


def test_every_message_the_portal_uses_has_a_chinese_translation() -> None:
    from babel.messages.extract import extract_from_dir

    root = Path(__file__).resolve().parents[1] / "cloud_receiver" / "web"
    method_map = [("**/templates/**.html", "jinja2"), ("**/portal/**.py", "python")]
    used = {
        msg if isinstance(msg, str) else msg[0]
        for _, _, msg, _, _ in extract_from_dir(
            str(root), method_map, keywords={"_": None, "plain": None}
        )
    }
    used |= DYNAMIC
    zh = Gettext("zh")
    missing = sorted(m for m in used if zh.plain(m) == m)
    assert not missing, f"untranslated: {missing}"
    assert len(used) > 150
    english = i18n.translations("en")
    labels = {m.id for m in _catalogue("en") if m.id}
    assert labels <= used, f"English labels of ids no page uses: {sorted(labels - used)}"
    assert english.gettext("awaiting_approval") == "awaiting approval"


def _catalogue(lang: str) -> Any:
    from babel.messages.pofile import read_po

    with i18n.catalogue_path(lang).open("rb") as f:
        return read_po(f, locale=lang)


# Message ids the templates pass through ``_`` as data (statuses, kinds, periods, topics).
DYNAMIC = {
    # requests, commands
    "awaiting_approval", "ready", "executing", "done", "failed", "refused", "expired",
    "cancelled", "issued", "published", "scheduled",
    # prepaid accounts and their ledger
    "connected", "disconnecting", "disconnected", "reconnecting", "open", "opening_credit",
    "opening_grace", "topup", "baseline", "register_reset", "charge", "low_balance", "command",
    "command_failed",
    # supply reasons, line-loss days, feedback, tariff periods
    "prepayment", "manual", "demand_response", "maintenance", "ok", "estimated", "incomplete",
    "answered", "resolved", "bill", "cutoff", "privacy", "other", "sharp", "peak", "flat",
    "valley",
    # rollouts and their targets
    "running", "halted", "pending", "offered", "downloading", "installed", "trial", "healthy",
    "rolled_back",
}  # fmt: skip


def test_every_page_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """The pages' own queries (fleet, search, curve, areas, DR, feedback) on the local
    PostgreSQL server, on a private schema."""
    world = build_world(pg_url, tmp_path)
    with serving(WebSettings(pg_url, tmp_path / "k", login_attempts=100)) as base:
        admin = logged_in(base, world, "administrator")
        for page in OPERATOR_PAGES:
            r = admin.get(page)
            assert r.status_code == 200, (page, r.text[:500])
        assert "dc-web-1" in admin.get("/ops/fleet").text
        assert f"/ops/meters/{M1}" in admin.get("/ops/meters?q=TA-").text  # by area prefix
        c2 = logged_in(base, world, "c2", "customer")
        form = c2.get("/my/feedback").text
        raised = c2.post("/my/feedback", data={
            "csrf_token": csrf_of(form), "account": "A2", "topic": "privacy",
            "subject": "Who reads my meter?", "message": "Who can see my readings?",
        })  # fmt: skip
        assert raised.status_code == 303
        for page in CUSTOMER_PAGES:
            r = c2.get(page)
            assert r.status_code == 200, (page, r.text[:500])
        assert "Who reads my meter?" in admin.get("/ops/feedback?lang=en").text


def test_a_dr_event_and_a_rollout_are_confirmed_then_requested(portal: tuple[str, World]) -> None:
    base, world = portal
    storage = open_storage(world.db_url)
    try:
        dr.enrol(storage, "north", [M1, M2], CONCENTRATOR)
    finally:
        storage.close()
    olga = logged_in(base, world, "operator")
    window = {"group": "north", "start": "2030-01-02T18:00", "end": "2030-01-02T19:00",
              "limit_kw": "1.5"}  # fmt: skip
    confirm = olga.get("/ops/dr/new", params={**window, "lang": "en"})
    assert confirm.status_code == 200, confirm.text
    assert "demand-response event for group north: at most 1.5 kW" in confirm.text
    assert "approval of a second operator" in confirm.text  # 2 meters > the setting's 0
    asked = olga.post("/ops/dr/new", data={**window, "csrf_token": csrf_of(confirm.text)})
    assert asked.status_code == 303 and "/ops/requests/" in asked.headers["location"]
    page = olga.get(asked.headers["location"] + "?lang=en").text
    assert "awaiting approval" in page and "group north" in page
    unknown = olga.get("/ops/dr/new", params={**window, "group": "south"})
    assert unknown.status_code == 422 and "no meter is enrolled in group 'south'" in unknown.text
    backwards = olga.get("/ops/dr/new", params={**window, "end": "2030-01-02T17:00"})
    assert backwards.status_code == 422 and "must end after it starts" in backwards.text
    # A rollout of a release the receiver does not hold is refused before it is asked for.
    none = olga.get("/ops/rollouts/new", params={"version": "9.9.9", "stages": "canary:dc-web-1"})
    assert none.status_code == 422 and "no release 9.9.9" in none.text
    viewer = logged_in(base, world, "viewer")
    assert viewer.get("/ops/dr/new", params=window).status_code == 403
    assert "New event" not in viewer.get("/ops/dr?lang=en").text


def test_the_fleet_page_counts_today_by_the_completeness_rule(tmp_path: Path) -> None:
    """Today's collection on the fleet page is the completeness module's figure: the
    archive's three meters are due every quarter hour since local midnight; none is
    assigned, so each counts for the concentrator that delivered it today or the day
    before: M1 (two readings today) for dc-web-1, M2 and M3 (heard long ago) for no
    one."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    build_world(db, tmp_path)
    now = time.time()
    plan = Plan(site_tz())
    midnight = plan.day_start(plan.day_of(now))
    due = (plan.grid_floor(now) - midnight) // plan.interval_s
    if due < 2:  # the first half hour after midnight: nothing to compare yet
        pytest.skip("too close to local midnight for two due slots")
    storage = open_storage(db)
    try:
        storage.ingest(CONCENTRATOR, 2, 1, [
            Reading(M1, "energy_fwd_total", midnight + 900 * i, f"{200 + i}.00", "kWh",
                    midnight + 900 * i + 3.0)
            for i in range(2)
        ], [], now)  # fmt: skip
        [row] = [r for r in reads.fleet(storage, now, plan) if r.concentrator == CONCENTRATOR]
        with storage.read() as conn:
            report = completeness.compute(
                conn, plan, plan.day_of(now), plan.day_of(now) + dt.timedelta(days=1), now
            )
    finally:
        storage.close()
    assert row.readings_today == 2
    assert row.expected_today == due
    assert report.overall().expected == 3 * due and report.overall().received == 2


def test_the_usage_page_shows_readings_that_arrive_after_it_was_viewed(tmp_path: Path) -> None:
    """The usage page reads the year through the server's `SeriesCache`: a reading
    delivered late (the next midnight's, after a concentrator's backlog) shows at the
    next view, in the day's energy and in the month's total."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    world = build_world(db, tmp_path)

    def day_row(html: str) -> list[str]:
        [row] = re.findall(r"<tr><td>2026-01-05</td>(.*?)</tr>", html)
        return re.findall(r'<td class="num">([^<]*)</td>', row)

    with serving(WebSettings(db, tmp_path / "secret.key")) as base:
        c1 = logged_in(base, world, "c1", "customer")
        before = c1.get("/my/usage?month=2026-01&lang=en")
        assert before.status_code == 200
        assert day_row(before.text)[-2] == "—"  # no 00:00 reading of the 6th yet
        assert day_row(c1.get("/my/usage?month=2026-01&lang=en").text) == day_row(before.text)
        storage = open_storage(db)
        try:
            storage.ingest(CONCENTRATOR, 2, 1, [
                Reading(M1, "energy_fwd_total", DAY0 + 86400, "130.00", "kWh", DAY0 + 86403),
            ], [], DAY0 + 90000)  # fmt: skip
        finally:
            storage.close()
        after = day_row(c1.get("/my/usage?month=2026-01&lang=en").text)
    assert after[-2] == "30.000"  # 130.00 - 100.000 kWh
    assert after[-1] != day_row(before.text)[-1]  # the late energy is charged too
