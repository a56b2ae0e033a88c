"""Bringing a database to the current schema when it is opened (Alembic, in code).

Three cases, told apart by the ``alembic_version`` table:

- a new, empty database: the migrations build it;
- a database made by a release before migrations (its tables, no ``alembic_version``):
  its tables are checked against the schema (names, columns, primary keys), then it is
  stamped as revision 0001, the schema that release had (`FIRST_TABLES`). Tables that such a release
  added on open and this database lacks are created by revision 0001 (idempotent);
- a migrated database: the revisions it lacks are applied.

Runs on the caller's connection inside its set-up transaction, so two receivers that
start at once migrate one after the other.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, inspect

from cloud_receiver.errors import StorageError
from cloud_receiver.storage.schema import metadata

BEFORE_MIGRATIONS = "0001"  # the revision whose schema the pre-Alembic releases had
# The tables of that schema: a database holding all of them is stamped as 0001.
FIRST_TABLES = frozenset(
    {
        "accounts", "batches", "command_counters", "command_log", "commands",
        "concentrators", "dr_enrolment", "dr_events", "events", "ledger", "meters",
        "quarantine", "readings", "releases", "rollout_targets", "rollouts",
        "software_seen",
    }
)  # fmt: skip


# Columns that revisions after 0001 added to its tables: a database from before
# migrations lacks them (the revisions add them after the stamp).
ADDED_LATER: dict[str, frozenset[str]] = {"quarantine": frozenset({"size", "charged"})}


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "cloud_receiver.storage:migrations")
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn: Connection) -> None:
    """Migrate (or adopt, then migrate) the database of ``conn`` to the newest schema."""
    cfg = _config(conn)
    present = set(inspect(conn).get_table_names())
    ours = set(metadata.tables)
    if "alembic_version" not in present and present & ours:
        check_tables(conn)
        if present >= FIRST_TABLES:
            command.stamp(cfg, BEFORE_MIGRATIONS)
    command.upgrade(cfg, "head")


def require_ours(conn: Connection) -> None:
    """`StorageError` unless the database holds the receiver's tables (a query on a new,
    empty database is a wrong URL, not a database to create)."""
    if not set(inspect(conn).get_table_names()) & set(metadata.tables):
        raise StorageError(
            f"{conn.engine.url.render_as_string(hide_password=True)} holds no receiver "
            "tables: a wrong --db? (`cloud-receiver run` creates them)"
        )


def check_tables(conn: Connection) -> None:
    """`StorageError` unless every table of ours present has our columns and key."""
    insp = inspect(conn)
    present = set(insp.get_table_names())
    for name, table in metadata.tables.items():
        if name not in present:
            continue
        columns = {c["name"] for c in insp.get_columns(name)}
        expected = {c.name for c in table.columns}
        key = list(insp.get_pk_constraint(name)["constrained_columns"])
        expected_key = [c.name for c in table.primary_key.columns]
        older = expected - ADDED_LATER.get(name, frozenset())
        if columns not in (expected, older) or key != expected_key:
            raise StorageError(
                f"table {name} is not the receiver's: columns {sorted(columns)}, key {key};"
                f" expected {sorted(expected)}, key {expected_key}"
            )
