"""Engines for Sluice's databases: SQLite pragmas, explicit transactions, the apply lock, WAL upkeep."""
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

# One constant advisory-lock id: every write that must not interleave with a run's apply takes it.
_PG_APPLY_LOCK = 0x51_1C_E0_01
# Another, taken by the brief transaction that records a run: run ids are then handed out in commit
# order, so a worker that sees run N knows every run before it is visible too (queue order = id order).
_PG_RECORD_LOCK = 0x51_1C_E0_02
# A write on SQLite waits for the single write lock, which a run's apply holds for as long as it
# writes: about 26 s per million records here, so some 20 min for the 4 GiB a run may decompress
# to. No wait may give up before the longest apply ends; submissions do not wait at all (intake).
BUSY_TIMEOUT_MS = 3_600_000
# The WAL is truncated to this size when it is reset, and checkpointed away after a run that grew
# it beyond (`checkpoint`), so the disk holds the database's own size, not that of its largest run.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
CHECKPOINT_BUSY_MS = 2_000
log = logging.getLogger(__name__)


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine for `url` with Sluice's connection settings applied."""
    engine = create_engine(url, **kwargs)
    configure_engine(engine)
    return engine


def configure_engine(engine: Engine) -> None:
    """Apply Sluice's settings to an engine (WAL and explicit BEGIN on SQLite)."""
    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _no_prepared_plans(dbapi_conn, _record):
            # psycopg prepares a statement run 5 times on a connection; once a dataset's string column
            # is widened (ALTER TYPE), that plan fails every later run with "cached plan must not
            # change result type". Sluice's statements are few and set-based: preparing gains nothing.
            dbapi_conn.prepare_threshold = None
        return
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not the driver, decide where transactions begin, so that a
        # write transaction can be BEGIN IMMEDIATE and readers never upgrade a lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enter_wal(cur)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA temp_store = FILE")
        cur.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("sluice_write_lock")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enter_wal(cur, attempts: int = 200) -> None:
    """Switch a connection's database to WAL, retrying while another connection does the same."""
    # Changing the journal mode takes locks for which SQLite does not always call the busy
    # handler (processes opening a fresh database together get "database is locked" at once),
    # so this waits here, up to some 10 s, instead of failing a process's start.
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


@contextmanager
def brief_lock_wait(conn: Connection, milliseconds: int):
    """Within the block, a SQLite connection gives up on a held write lock after `milliseconds`."""
    if conn.dialect.name != "sqlite":
        yield conn
        return
    raw = conn.connection.driver_connection  # a PRAGMA here would begin a transaction on `conn`
    raw.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
    try:
        yield conn
    finally:
        raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def is_locked(exc: Exception) -> bool:
    """Whether a database error is SQLite's "database is locked" (the write lock stayed held)."""
    return "database is locked" in str(getattr(exc, "orig", exc))


@contextmanager
def reading(conn: Connection):
    """Read in the caller's transaction, or in one of its own that leaves the connection idle."""
    if conn.in_transaction():
        yield conn
    else:
        with conn.begin():
            yield conn


@contextmanager
def write_transaction(conn: Connection, *, apply_lock: bool = True,
                      before_lock: Callable[[Connection], None] | None = None):
    """Run a block in a transaction that holds the database's apply lock until it commits.

    On SQLite that is the single write lock (BEGIN IMMEDIATE); on PostgreSQL a transaction-level
    advisory lock, so applies of runs and operator changes happen one at a time on both.
    `apply_lock=False` is for writes an apply does not depend on (recording a run, its status):
    PostgreSQL then lets them through during an apply; SQLite has only the one lock.
    `before_lock` runs in the transaction before PostgreSQL's lock is taken (SQLite's is taken by then).
    """
    conn.execution_options(sluice_write_lock=True)
    try:
        with conn.begin():
            conn.execution_options(sluice_write_lock=False)
            if before_lock is not None:
                before_lock(conn)
            if apply_lock and conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_APPLY_LOCK})")
            yield conn
    finally:
        conn.execution_options(sluice_write_lock=False)


def in_record_order(conn: Connection) -> None:
    """Inside a write transaction that records a run: the next run is recorded after this one commits (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_RECORD_LOCK})")


def checkpoint(engine: Engine) -> None:
    """Copy a large SQLite WAL into the database and truncate it (best effort; never inside an apply)."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return
    try:
        if os.path.getsize(f"{engine.url.database}-wal") <= JOURNAL_SIZE_LIMIT:
            return
        raw = engine.raw_connection()  # outside any transaction, which a checkpoint needs
        try:
            # A reader of an old snapshot holds the checkpoint up: give up soon and try after the next run.
            raw.driver_connection.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
            try:
                busy, _, _ = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                raw.driver_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        finally:
            raw.close()
        if busy:
            log.info("the WAL checkpoint was busy; it is retried after the next run")
    except FileNotFoundError:
        return
    except Exception:
        log.warning("the WAL checkpoint failed", exc_info=True)
