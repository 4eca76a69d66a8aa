"""Schema (SPEC §8): the migrations build exactly the models' schema from an empty database, and undo it."""

import os
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.database import make_engine
from app.models import Base, include_name
from app.schema import alembic_config, upgrade

from .conftest import PG_URL
from .pipeline_helpers import fetch, load, rec


@pytest.fixture
def empty_engine(tmp_path):
    """An engine on a database with no tables (on PostgreSQL with a linguistic, non-binary collation)."""
    if not PG_URL:
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL).set(drivername="postgresql+psycopg")
    name = f"sluice_migrations_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f'CREATE DATABASE "{name}" TEMPLATE template0 '
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    engine = make_engine(base.set(database=name).render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def differences(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True,
                        # the search index (FTS5 / pg_trgm) is outside the models: see env.py
                        "include_name": include_name}
        )
        return compare_metadata(context, Base.metadata)


def test_upgrade_from_empty_gives_exactly_the_models_schema(empty_engine):
    assert inspect(empty_engine).get_table_names() == []
    upgrade(empty_engine)
    assert differences(empty_engine) == []
    assert {t for t in inspect(empty_engine).get_table_names() if include_name(t, "table", {})} == (
        set(Base.metadata.tables) | {"alembic_version"})
    upgrade(empty_engine)  # every start upgrades: a second time is a no-op
    assert differences(empty_engine) == []


def test_downgrade_removes_everything_and_upgrade_rebuilds_it(empty_engine):
    upgrade(empty_engine)
    config = alembic_config()
    with empty_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_engine)
    assert differences(empty_engine) == []


def test_keys_sort_in_binary_order_on_every_database(empty_engine, write):
    upgrade(empty_engine)
    keys = ["b", "B", "a", "_x", "é", "Z9", "a b", "ab", "~", "10", "9"]
    with empty_engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # the database's own collation is not binary
            assert fetch(conn, "SELECT x FROM (VALUES ('a'), ('B')) AS v(x) ORDER BY x") == [("a",), ("B",)]
        load(conn, write, [rec(key=k) for k in keys])
        assert [r.key for r in fetch(conn, "SELECT key FROM target ORDER BY key")] == sorted(keys)
        assert [r.key for r in fetch(conn, "SELECT key FROM target WHERE key > 'Z' ORDER BY key")] == sorted(
            k for k in keys if k > "Z"
        )
        assert [r.key for r in fetch(conn, "SELECT DISTINCT key FROM lineage ORDER BY key")] == sorted(keys)
        assert [r.key for r in fetch(conn, "SELECT DISTINCT key FROM dead_letters ORDER BY key")] == []


def test_processes_starting_at_once_on_a_fresh_sqlite_database_all_migrate(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = ("import sys; from app.database import make_engine; from app.schema import upgrade; "
            "upgrade(make_engine(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err for _, err in results]


# Rows as the code of revision 0001 wrote them: one in every table, with plain SQL.
_ROWS_AT_0001 = {
    "runs": [
        ("INSERT INTO runs (kind, status, source_name, options, queued_at, finished_at, cancel_requested, "
        "input_records, skipped, rejected, staged, superseded, inserted, updated, unchanged, stale, dead_letters, "
        "lineage_entries, watermark_after) VALUES ('upload', 'succeeded', 'a.json', '{}', '2025-01-01T00:00:00.000000', "
        "'2025-01-01T00:00:01.000000', false, 3, 0, 1, 2, 0, 2, 0, 0, 0, 1, 3, '2025-01-15T12:00:00')"),
        ("INSERT INTO runs (kind, status, options, queued_at, cancel_requested, input_records, skipped, rejected, "
        "staged, superseded, inserted, updated, unchanged, stale, dead_letters, lineage_entries, retry_of_id) "
        "VALUES ('retry', 'queued', '{}', '2025-01-02T00:00:00.000000', false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)"),
    ],
    "target": [
        ("INSERT INTO target (key, name, value, ts, updated_at, run_id) VALUES "
        "('k1', 'first', 1.5, '2025-01-15T12:00:00', '2025-01-01T00:00:01.000000', 1), "
        "('k2', 'second', -2, '2025-01-14T12:00:00', '2025-01-01T00:00:01.000000', 1)"),
    ],
    "dead_letters": [
        "INSERT INTO dead_letters (run_id, last_run_id, pos, line, key, error, detail, raw, fingerprint, status, "
        "created_at, updated_at, attempts, sightings) VALUES (1, 1, 2, 4, 'k3', 'invalid_value', "
        "'value ''x'' is not a number', '{\"key\": \"k3\", \"value\": \"x\"}', '" + "f" * 64 + "', 'open', "
        "'2025-01-01T00:00:01.000000', '2025-01-01T00:00:01.000000', 0, 1)",
    ],
    "lineage": [
        ("INSERT INTO lineage (run_id, pos, line, key, step, at, detail) VALUES "
        "(1, 0, 2, 'k1', 'inserted', '2025-01-01T00:00:01.000000', ''), "
        "(1, 1, 3, 'k2', 'inserted', '2025-01-01T00:00:01.000000', ''), "
        "(1, 2, 4, 'k3', 'rejected', '2025-01-01T00:00:01.000000', 'invalid_value')"),
    ],
    "watermarks": [
        ("INSERT INTO watermarks (name, value, updated_at) VALUES ('events_ts', '2025-01-15T12:00:00', "
        "'2025-01-01T00:00:01.000000')"),
    ],
    "watermark_history": [
        ("INSERT INTO watermark_history (name, old_value, new_value, at, via, run_id) VALUES "
        "('events_ts', NULL, '2025-01-15T12:00:00', '2025-01-01T00:00:01.000000', 'pipeline', 1)"),
    ],
}
_ORDER = {"target": "key", "watermarks": "name"}


def _at_0001_with_rows(engine) -> dict:
    """Migrate to 0001, write a row or more in every table, and return them as read back."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with engine.begin() as conn:
        for statements in _ROWS_AT_0001.values():
            for statement in statements:
                conn.exec_driver_sql(statement)
    return _rows(engine)


def _rows(engine, columns_of: dict | None = None) -> dict:
    with engine.connect() as conn:
        return {
            table: [row._asdict() for row in conn.exec_driver_sql(
                f"SELECT {', '.join(columns_of[table]) if columns_of else '*'} FROM {table} "
                f"ORDER BY {_ORDER.get(table, 'id')}")]
            for table in _ROWS_AT_0001
        }


def test_upgrading_a_database_with_data_keeps_every_row_and_gives_it_to_events(empty_engine):
    from app.datasets.registry import get_dataset, list_datasets, shape_versions
    from app.datasets.shape import EVENTS_SHAPE

    before = _at_0001_with_rows(empty_engine)
    assert all(before[table] for table in _ROWS_AT_0001)
    upgrade(empty_engine)
    assert differences(empty_engine) == []

    after = _rows(empty_engine, {table: list(rows[0]) for table, rows in before.items()})
    assert after == before
    with empty_engine.connect() as conn:
        for table in ("runs", "dead_letters", "lineage", "watermarks", "watermark_history"):
            assert fetch(conn, f"SELECT DISTINCT dataset FROM {table}") == [("events",)], table
        assert fetch(conn, "SELECT shape_version FROM runs") == [(None,), (None,)]
        events = get_dataset(conn)
        assert (events.name, events.version, events.shape, events.table.name, events.watermark) == (
            "events", 1, EVENTS_SHAPE, "target", "events_ts")
        assert events.archived_at is None
        assert [d.name for d in list_datasets(conn)] == ["events"]
        [first] = shape_versions(conn, "events")
        assert (first["version"], first["shape"], first["changes"]) == (1, EVENTS_SHAPE.to_dict(), ["created"])
        # A row written now without naming a dataset belongs to events, and codes up to 80 characters fit.
        with conn.begin():
            conn.exec_driver_sql(
                "INSERT INTO dead_letters (run_id, last_run_id, pos, error, detail, raw, fingerprint, status, "
                "created_at, updated_at, attempts, sightings) VALUES (2, 2, 0, '" + "x" * 80 + "', '', '{}', "
                "'" + "e" * 64 + "', 'open', '2025-01-02T00:00:00.000000', '2025-01-02T00:00:00.000000', 0, 1)")
        assert fetch(conn, "SELECT dataset, length(error) FROM dead_letters WHERE run_id = 2") == [
            ("events", 80)]


def test_downgrading_to_0001_keeps_the_rows_and_refuses_while_other_datasets_exist(empty_engine):
    from app.datasets.registry import create_dataset

    before = _at_0001_with_rows(empty_engine)
    upgrade(empty_engine)
    config = alembic_config()
    with empty_engine.connect() as conn:
        create_dataset(conn, "orders", {"key": "id", "version": "at", "fields": []})
    with empty_engine.begin() as conn, pytest.raises(RuntimeError, match="datasets other than events exist: orders"):
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    assert "datasets" in inspect(empty_engine).get_table_names()

    with empty_engine.begin() as conn:  # what an operator does first: the dataset's catalogue rows go
        conn.exec_driver_sql("DELETE FROM datasets WHERE name = 'orders'")
    with empty_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    assert not {"datasets", "dataset_versions"} & set(inspect(empty_engine).get_table_names())
    assert "dataset" not in {c["name"] for c in inspect(empty_engine).get_columns("runs")}
    assert _rows(empty_engine) == before
