"""Shared fixtures: a fresh database per test (SQLite, or PostgreSQL when TEST_DATABASE_URL is set)."""
import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.config import EXECUTORS
from app.database import make_engine
from app.schema import upgrade

PG_URL = os.environ.get("TEST_DATABASE_URL")
# TEST_EXECUTOR=queue (PostgreSQL only): every app of the suite records its runs with a procrastinate
# job, as SLUICE_EXECUTOR=queue does; tests still execute them in-process (drain), as a worker would.
EXECUTOR = os.environ.get("TEST_EXECUTOR", "embedded")
ROOT = Path(__file__).resolve().parents[1]
SAMPLE_INPUT = ROOT / "tests" / "data" / "sample_input.json"  # the seed's sample and its summary, shipped
SAMPLE_SUMMARY = ROOT / "tests" / "data" / "sample_summary.json"
MAKE_RECORDS = ROOT / "bench" / "make_records.py"  # the benchmark generator, shipped
TABLES = ("target", "dead_letters", "lineage", "watermarks", "watermark_history", "runs", "audit_log",
          "api_tokens", "users", "run_progress")
SERIAL_TABLES = tuple(t for t in TABLES if t not in ("target", "watermarks", "run_progress"))  # ids from a sequence
PASSWORD = "correct horse battery staple"  # every test user's password
PROCRASTINATE_TABLES = ("procrastinate_periodic_defers", "procrastinate_events", "procrastinate_jobs",
                        "procrastinate_workers")  # the order their foreign keys allow deleting in


def pytest_configure(config):
    if EXECUTOR not in EXECUTORS:
        raise pytest.UsageError(f"TEST_EXECUTOR must be embedded or queue, not {EXECUTOR!r}")
    if EXECUTOR == "queue" and not PG_URL:
        raise pytest.UsageError("TEST_EXECUTOR=queue needs PostgreSQL: set TEST_DATABASE_URL too")


def pytest_report_header(config):
    return (f"database: {'PostgreSQL ' + make_url(PG_URL).render_as_string() if PG_URL else 'SQLite'}; "
            f"executor of the suite's apps: {EXECUTOR}")


@pytest.fixture(scope="session")
def database_template(tmp_path_factory):
    """A migrated database for the whole session: a fresh PostgreSQL database, or a SQLite file to copy."""
    if PG_URL:
        base = make_url(PG_URL)
        if base.drivername == "postgresql":
            base = base.set(drivername="postgresql+psycopg")
        name = f"sluice_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = make_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE \'en-US\' LOCALE \'C.UTF-8\'')  # a linguistic collation, so binary ordering is proven
        url = base.set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "sluice.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        yield str(path)


_EVENTS_ROW: dict = {}  # the migrations' events row, read from the first test's fresh database


@pytest.fixture
def db_url(database_template, tmp_path):
    """The URL of an empty, migrated database for this test."""
    if PG_URL:
        engine = make_engine(database_template)
        with engine.begin() as conn:
            # Datasets a test made: their tables go, and the catalogue is back to the migrations' events rows.
            made = conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                        "AND tablename LIKE 'ds\\_%%'").scalars().all()
            for table in made:
                conn.exec_driver_sql(f'DROP TABLE "{table}"')
            conn.exec_driver_sql("DELETE FROM dataset_versions WHERE dataset <> 'events' OR version > 1; "
                                 "DELETE FROM datasets WHERE name <> 'events'")
            if not _EVENTS_ROW:
                _EVENTS_ROW.update(conn.exec_driver_sql("SELECT version, title, description, archived_at, "
                                                        "archived_by FROM datasets WHERE name = 'events'").one()._mapping)
            conn.exec_driver_sql("UPDATE datasets SET version = %(version)s, title = %(title)s, "
                                 "description = %(description)s, archived_at = %(archived_at)s, "
                                 "archived_by = %(archived_by)s WHERE name = 'events'", _EVENTS_ROW)
            if conn.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar() is not None:
                # Made by the first app with the queue executor: no job or worker outlives its test.
                conn.exec_driver_sql("; ".join(f"DELETE FROM {t}" for t in PROCRASTINATE_TABLES))
            conn.exec_driver_sql("; ".join([f"DELETE FROM {t}" for t in TABLES] + [f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), 1, false)" for t in SERIAL_TABLES]))  # 15x faster than TRUNCATE on small tables
        engine.dispose()
        return database_template
    path = tmp_path / "sluice.db"
    shutil.copyfile(database_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(engine):
    """A connection outside any transaction, as the pipeline's public functions expect."""
    with engine.connect() as connection:
        yield connection


@pytest.fixture
def executor():
    """The executor of this test's app: TEST_EXECUTOR's, unless the test names one (parametrize)."""
    return EXECUTOR


@pytest.fixture
def app(db_url, tmp_path, monkeypatch, executor):
    """The Flask app on this test's database; runs are not executed by a background thread here."""
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": db_url,
        "SECRET_KEY": "test",
        "SLUICE_UPLOAD_DIR": str(tmp_path / "uploads"),
        "SLUICE_EMBEDDED_WORKER": False,
        "SLUICE_EXECUTOR": executor,
    })
    yield app
    from app.extensions import db

    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def password_hash():
    """The Argon2id hash of PASSWORD, made once: each test's users are inserted with it."""
    from app.accounts.passwords import hash_password

    return hash_password(PASSWORD)


@pytest.fixture
def make_user(app, password_hash):
    """`make_user(name, role, disabled=False)`: a user (password PASSWORD) in this test's database."""
    from app.accounts.actor import Actor
    from app.accounts.users import create_user
    from app.extensions import db

    def _make(name: str, role: str = "admin"):
        with app.app_context(), db.engine.connect() as conn:
            return create_user(conn, name, role, Actor(label="test"), password_hash=password_hash)
    return _make


def sign_in_as(client, user) -> None:
    """Put `user`'s session into a test client's cookie, as a successful sign-in does."""
    with client.session_transaction() as session:
        session["_user_id"] = user.session_id()
        session["_fresh"] = True


@pytest.fixture
def admin_user(make_user):
    return make_user("admin", "admin")


@pytest.fixture
def client(app, admin_user):
    """A test client signed in as an administrator (every page and action is open to it)."""
    client = app.test_client()
    sign_in_as(client, admin_user)
    return client


@pytest.fixture
def anon_client(app):
    """A test client with no session."""
    return app.test_client()


@pytest.fixture
def write(tmp_path):
    """Write a file for a test: `write(name, text_or_bytes)` returns its path."""
    def _write(name: str, content) -> Path:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return _write


@pytest.fixture
def loaded(app, engine):
    """The app with the seed's sample loaded: run 1, dead letters 1 and 2, five target rows (evt-001…)."""
    from app.pipeline import run_file

    with engine.connect() as conn:
        run_file(conn, SAMPLE_INPUT)
    return app
