"""The PostgreSQL that tests and benchmarks use on a developer's machine or CI."""

from __future__ import annotations

import os

LOCAL_POSTGRES_URLS = (
    # The usual developer/CI set-up: trust authentication on loopback.
    "postgresql://postgres@127.0.0.1:5432/test",
    # A fresh Debian after `make setup`: peer authentication on the Unix socket, as a
    # database role named after the current user.
    "postgresql:///test?host=/var/run/postgresql",
)


def local_postgres_url(env: str = "MF_TEST_POSTGRES_URL") -> str:
    """``$env``, else the first local server that accepts a connection
    (``LOCAL_POSTGRES_URLS``), else a clear error."""
    import psycopg

    if os.environ.get(env):
        return os.environ[env]
    errors = []
    for url in LOCAL_POSTGRES_URLS:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip()}")
    raise RuntimeError(
        f"no PostgreSQL reachable (run `make setup`, or set {env}): " + "; ".join(errors)
    )
