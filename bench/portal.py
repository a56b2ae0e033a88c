"""Portal benchmark: a customer's month of 15-minute data on a large receiver database.

Prints ``BENCH <name> <value> <unit>`` lines:
- portal_month_view_p95_ms: the 95th percentile round trip of the customer's month page
  (``/my/usage?month=``: the month's 2,976 quarter hours of the account's meter split by
  tariff period into days, with its charges, the daily chart and the twelve-month chart
  drawn as SVG) from a ``cloud-receiver web`` process over loopback, logged in through
  the login form as that customer: the session, the ownership check, the queries, the
  audit entry and the HTML. Target <= 150 ms (issue 21).
- portal_month_api_p95_ms: the same month's readings through the API
  (``GET /api/v1/meters/{meter}/readings``, one page of 2,976), same session.
- portal_month_query_p95_ms: the same month read straight from the database in this
  process (`cloud_receiver.web.data.readings_page`): how much of the view is the query;
  portal_month_query_pk_only_p95_ms: the same after dropping ``readings_by_meter``
  (the schema before revision 0011: the primary key alone), same run.
- portal_db_readings: how many readings the database holds.

The database (SQLite) holds 421 meters x 4 quantities x 62 days x 96 slots
(10,023,168 readings, December and January); the customer views January. It is filled
with bulk inserts in one transaction in slot order (as concentrators deliver), its
secondary indexes dropped meanwhile and rebuilt after, so the figure is of the schema
``open_storage`` creates. ``--quick`` (the CI smoke test): 20 meters x 4 days.
``--db-cache PATH``: a copy of the freshly filled database is kept at PATH, and a later
run with the same PATH starts from a copy of it instead of filling again (filling takes
minutes); each run still measures its own copy, so what is timed is the same.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from api import serve

from cloud_receiver.access import customers
from cloud_receiver.applications import prepay
from cloud_receiver.public import MeterRecord, open_storage
from cloud_receiver.web import data

DAY0 = 1764518400  # 2025-12-01 00:00 +08:00
SLOT_S = 900
PASSWORD = "bench-portal-pw-1"
CUSTOMER = "c-bench"
ACCOUNT = "A-bench"
SVG = re.compile(r"<svg\b")
QUANTITIES = (("energy_fwd_total", "kWh"), ("voltage_a", "V"), ("current_a", "A"),
              ("power_total", "kW"))  # fmt: skip
VIEWS = 40
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def fill(path: Path, meters: list[str], days: int) -> int:
    """The schema from ``open_storage`` (migrated to the newest revision), the archive
    and a customer owning the first meter, then every reading in one transaction."""
    storage = open_storage(f"sqlite:///{path}")
    try:
        storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in meters])
        prepay.open_account(storage, ACCOUNT, meters[0],
                            prepay.Tariff.parse(["peak=0.62", "flat=0.48", "valley=0.31"]),
                            concentrator="cn-0001", now=time.time())  # fmt: skip
        with storage.transaction() as tx:
            customers.add(tx, CUSTOMER, PASSWORD, meters=[meters[0]], account_ids=[ACCOUNT],
                          language="en", by="bench", now=time.time())  # fmt: skip
    finally:
        storage.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings'"
            " AND sql IS NOT NULL"
        ).fetchall()
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        n = 0
        for slot_no in range(days * 96):
            slot = DAY0 + slot_no * SLOT_S
            rows = [
                (m, q, slot, _value(i, q, slot_no), unit, slot + 3.0, "interval", "cn-0001",
                 slot_no + 1)
                for i, m in enumerate(meters)
                for q, unit in QUANTITIES
            ]  # fmt: skip
            conn.executemany(
                "INSERT INTO readings (meter, quantity, slot, value, unit, read_at, source,"
                " concentrator, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            n += len(rows)
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")  # no ANALYZE: the receiver never runs one
    finally:
        conn.close()
    return n


def _value(meter_no: int, quantity: str, slot_no: int) -> str:
    if quantity == "energy_fwd_total":
        return f"{1000 + meter_no + slot_no * 0.25:.2f}"
    if quantity == "voltage_a":
        return f"{220 + (slot_no + meter_no) % 17 * 0.3:.1f}"
    if quantity == "current_a":
        return f"{(slot_no * 7 + meter_no) % 400 * 0.025:.3f}"
    return f"{(slot_no * 7 + meter_no) % 400 * 0.0055:.4f}"


def month_views(
    url: str, meter: str, since: int, until: int
) -> tuple[list[float], list[float], int]:
    """The customer logs in through the form, then views the month's page and the
    month's readings through the API ``VIEWS`` times each."""
    params = {"since": since, "until": until, "quantity": "energy_fwd_total",
              "limit": data.MAX_LIMIT}  # fmt: skip
    with httpx.Client(base_url=url, timeout=60) as client:
        found = CSRF.search(client.get("/login").text)
        if found is None:
            raise RuntimeError("no CSRF token in the login page")
        form = {"csrf_token": found.group(1), "name": CUSTOMER,
                "password": PASSWORD, "kind": "customer", "totp": ""}  # fmt: skip
        if client.post("/login", data=form).status_code != 303:
            raise RuntimeError("the customer could not log in")
        month = time.strftime("%Y-%m", time.gmtime(since + 8 * 3600))  # the site's +08:00
        page = {"account": ACCOUNT, "month": month}
        first = client.get("/my/usage", params=page)
        first.raise_for_status()
        if len(SVG.findall(first.text)) < 2 or "No readings this month yet" in first.text:
            raise RuntimeError("the month page drew no usage chart")
        pages: list[float] = []
        for _ in range(VIEWS):
            t0 = time.perf_counter()
            client.get("/my/usage", params=page).raise_for_status()
            pages.append(time.perf_counter() - t0)
        client.get(f"/api/v1/meters/{meter}/readings", params=params).raise_for_status()
        times: list[float] = []
        got = 0
        for _ in range(VIEWS):
            t0 = time.perf_counter()
            done = client.get(f"/api/v1/meters/{meter}/readings", params=params)
            done.raise_for_status()
            doc = done.json()
            times.append(time.perf_counter() - t0)
            if doc["next"] is not None:
                raise RuntimeError("a month did not fit one page")
            got = len(doc["items"])
        return pages, times, got


def month_queries(path: Path, meter: str, since: int, until: int) -> list[float]:
    storage = open_storage(f"sqlite:///{path}", create=False)
    try:
        times = []
        for _ in range(VIEWS):
            t0 = time.perf_counter()
            data.readings_page(storage, meter, since=since, until=until,
                               quantities=("energy_fwd_total",), limit=data.MAX_LIMIT,
                               after=None)  # fmt: skip
            times.append(time.perf_counter() - t0)
        return times
    finally:
        storage.close()


def p95_ms(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] * 1000


def prepared(path: Path, meters: list[str], days: int, cache: Path | None) -> int:
    """The filled database at ``path``: copied from ``cache`` when a run kept one there
    (same meters and days, recorded beside it), else filled (and kept when asked)."""
    shape = f"{len(meters)} {days}\n"
    tag = cache.with_name(cache.name + ".shape") if cache is not None else None
    if cache is not None and tag is not None and tag.exists() and tag.read_text() == shape:
        shutil.copyfile(cache, path)
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            conn.close()
    n = fill(path, meters, days)
    if cache is not None and tag is not None:
        shutil.copyfile(path, cache)
        tag.write_text(shape)
    return n


def main() -> None:
    quick = "--quick" in sys.argv
    cache = Path(sys.argv[sys.argv.index("--db-cache") + 1]) if "--db-cache" in sys.argv else None
    n_meters, days, view_days = (20, 4, 2) if quick else (421, 62, 31)
    meters = [f"{300000000000 + i:012d}" for i in range(n_meters)]
    since = DAY0 + (days - view_days) * 86400
    until = DAY0 + days * 86400
    with tempfile.TemporaryDirectory(prefix="mf-bench-portal-") as d:
        tmp = Path(d)
        path = tmp / "r.db"
        n = prepared(path, meters, days, cache)
        proc, url = serve(f"sqlite:///{path}", tmp)
        try:
            views, api, got = month_views(url, meters[0], since, until)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        queries = month_queries(path, meters[0], since, until)
        conn = sqlite3.connect(path)
        try:  # the same query as before revision 0011 (the primary key alone)
            conn.execute("DROP INDEX readings_by_meter")
        finally:
            conn.close()
        unindexed = month_queries(path, meters[0], since, until)
    if got != view_days * 96:
        raise RuntimeError(f"the month view showed {got} readings, expected {view_days * 96}")
    print(f"BENCH portal_month_view_p95_ms {p95_ms(views):.1f} ms")
    print(f"BENCH portal_month_api_p95_ms {p95_ms(api):.1f} ms")
    print(f"BENCH portal_month_query_p95_ms {p95_ms(queries):.1f} ms")
    print(f"BENCH portal_month_query_pk_only_p95_ms {p95_ms(unindexed):.1f} ms")
    print(f"BENCH portal_db_readings {n} readings")


if __name__ == "__main__":
    main()
