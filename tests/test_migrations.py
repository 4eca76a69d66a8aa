"""Schema (SPEC §8): the migrations build exactly the models' schema from an empty database, and undo it."""

import os
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.database import make_engine
from app.models import Base
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
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, Base.metadata)


def test_upgrade_from_empty_gives_exactly_the_models_schema(empty_engine):
    assert inspect(empty_engine).get_table_names() == []
    upgrade(empty_engine)
    assert differences(empty_engine) == []
    assert set(inspect(empty_engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
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
