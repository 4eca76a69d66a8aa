"""Engines for Sluice's databases: SQLite pragmas, explicit transactions and the apply lock."""
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

# One constant advisory-lock id: every write that must not interleave with a run's apply takes it.
_PG_APPLY_LOCK = 0x51_1C_E0_01
BUSY_TIMEOUT_MS = 120_000


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine for `url` with Sluice's connection settings applied."""
    engine = create_engine(url, **kwargs)
    configure_engine(engine)
    return engine


def configure_engine(engine: Engine) -> None:
    """Apply Sluice's settings to an engine (WAL and explicit BEGIN on SQLite)."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not the driver, decide where transactions begin, so that a
        # write transaction can be BEGIN IMMEDIATE and readers never upgrade a lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA temp_store = FILE")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("sluice_write_lock")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(conn: Connection, *, apply_lock: bool = True):
    """Run a block in a transaction that holds the database's apply lock until it commits.

    On SQLite that is the single write lock (BEGIN IMMEDIATE); on PostgreSQL a transaction-level
    advisory lock, so applies of runs and operator changes happen one at a time on both.
    `apply_lock=False` is for writes an apply does not depend on (recording a run, its status):
    PostgreSQL then lets them through during an apply; SQLite has only the one lock.
    """
    conn.execution_options(sluice_write_lock=True)
    try:
        with conn.begin():
            conn.execution_options(sluice_write_lock=False)
            if apply_lock and conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_APPLY_LOCK})")
            yield conn
    finally:
        conn.execution_options(sluice_write_lock=False)
