"""Shared fixtures: simulators as real processes on PTYs, always stopped by the test, and
a PostgreSQL schema of its own per test.

PostgreSQL: the server named by MF_TEST_POSTGRES_URL, else the machine's own
(``cloud_receiver.storage.local_postgres_url``; `make setup` provides one).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import Operators
from hypothesis import HealthCheck, settings

from cloud_receiver.storage import Storage, local_postgres_url, open_storage
from hil_sim.process import SimProcess

# The suite shares 2 cores with other work: a property test is judged by what it finds,
# never by how fast examples were generated or ran (too_slow and the deadline failed
# tests/test_package.py once on a loaded machine). A test's own @settings overrides
# only what it names.
settings.register_profile("meterflow", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("meterflow")


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start ``hil-sim bus`` with the given options; the link lives in tmp_path."""
    started: list[SimProcess] = []

    def start(*args: str, link_name: str = "bus1") -> SimProcess:
        proc = SimProcess(["bus", "--link", str(tmp_path / link_name), *args])
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        return local_postgres_url()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_server else "?"
    yield f"{pg_server}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def receiver_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A receiver database on each backend: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = open_storage(url)
    yield s
    s.close()


@pytest.fixture
def operators(tmp_path: Path) -> Callable[[str], Operators]:
    """``operators(db_url)``: the `helpers.Operators` of that receiver database (known
    passwords and TOTP secrets; ``.login(name, role)`` gives a session file)."""
    made: dict[str, Operators] = {}

    def of(db_url: str) -> Operators:
        return made.setdefault(db_url, Operators(db_url, tmp_path / "sessions"))

    return of
