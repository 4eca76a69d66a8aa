"""Staging: every record a run reads, classified (skipped, rejected, staged) into per-run TEMP tables.

A TEMP table lives in the connection's own temporary schema, so filling it takes no lock on the
main database: while a large file is parsed, other writers go on.
"""
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, Double, MetaData, String, Table, Text
from sqlalchemy.engine import Connection

from ..models import binary_text
from .extract import Item, Unreadable
from .jsontext import dumps
from .validate import Invalid, ts_of, usable_key, validate

BATCH = 20_000

# Narrow tables, one per kind of record: binding parameters is most of the cost of a bulk insert,
# so a staged record carries only what the upsert needs.
staging_metadata = MetaData()
staged = Table(
    "sluice_stage", staging_metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("line", BigInteger),
    Column("key", binary_text(256), nullable=False),
    Column("name", Text, nullable=False),
    Column("value", Double, nullable=False),
    Column("ts", binary_text(26), nullable=False),
    prefixes=["TEMPORARY"],
)
skipped = Table(
    "sluice_skip", staging_metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("line", BigInteger),
    Column("key", binary_text(256)),
    Column("ts", binary_text(26), nullable=False),
    prefixes=["TEMPORARY"],
)
rejected = Table(
    "sluice_reject", staging_metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("line", BigInteger),
    Column("key", binary_text(256)),
    Column("error", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("fp", String(32), nullable=False),
    prefixes=["TEMPORARY"],
)
retried = Table(  # reprocess runs only: which dead letter each record retries, and the JSON it was retried with
    "sluice_retry", staging_metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("dl_id", BigInteger, nullable=False),
    Column("raw", Text),
    prefixes=["TEMPORARY"],
)
TABLES = (staged, skipped, rejected, retried)
DERIVED = ("sluice_out", "sluice_win", "sluice_upd")


@dataclass
class StageCounts:
    """What reading a run's input found."""

    input_records: int = 0
    skipped: int = 0
    rejected: int = 0
    staged: int = 0
    errors: dict = field(default_factory=dict)


def fingerprint(raw: str, error: str) -> str:
    """Identity of a rejected record for the same-record-again rule: its raw text and its error."""
    return hashlib.blake2b(f"{error}\x1f{raw}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def create(conn: Connection) -> None:
    """Create the run's empty staging tables (dropping leftovers first)."""
    drop(conn)
    staging_metadata.create_all(conn)


def drop(conn: Connection) -> None:
    """Drop the staging tables of this connection, whatever state they are in."""
    schema = "pg_temp" if conn.dialect.name == "postgresql" else "temp"
    for name in DERIVED + tuple(t.name for t in TABLES):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.{name}")


def bulk_insert(conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Insert many rows with the driver's own fast path (COPY on PostgreSQL, executemany on SQLite)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def fill(conn: Connection, items: Iterable[Item], *, watermark: str | None, latest: str,
         dl_ids: dict | None = None, tick: Callable[[int], None] | None = None) -> StageCounts:
    """Read every item into the staging tables, classified; return the counts.

    `watermark` is None when it does not apply (none yet, or a backfill); `latest` is the newest
    acceptable ts (now plus the tolerance); `dl_ids` maps positions to the dead letters a
    reprocess run retries; `tick(records)` is called every few thousand records.
    """
    counts = StageCounts()
    errors = counts.errors
    good, old, bad, retry = [], [], [], []

    def flush() -> None:
        counts.staged += len(good)
        counts.skipped += len(old)
        counts.rejected += len(bad)
        for table, columns, rows in ((staged, STAGE_COLUMNS, good), (skipped, SKIP_COLUMNS, old),
                                     (rejected, REJECT_COLUMNS, bad), (retried, RETRY_COLUMNS, retry)):
            bulk_insert(conn, table.name, columns, rows)
            rows.clear()
        if tick:
            tick(counts.input_records)

    n = 0
    for item in items:
        n += 1
        record = item.value
        if dl_ids:
            retry.append((item.pos, dl_ids[item.pos], None if type(record) is Unreadable else dumps(record)))
        if type(record) is Unreadable:  # malformed, or over the record limit: kept as its text
            raw = item.text or ""
            bad.append((item.pos, item.line, None, record.code, record.detail, raw, fingerprint(raw, record.code)))
            errors[record.code] = errors.get(record.code, 0) + 1
        else:
            ts = ts_of(record) if watermark is not None and type(record) is dict else None
            if ts is not None and ts < watermark:
                old.append((item.pos, item.line, usable_key(record), ts))
            else:
                try:
                    good.append((item.pos, item.line, *validate(record, latest)))
                except Invalid as exc:
                    raw = dumps(record)
                    bad.append((item.pos, item.line, usable_key(record), exc.code, exc.detail, raw,
                                fingerprint(raw, exc.code)))
                    errors[exc.code] = errors.get(exc.code, 0) + 1
        if n % BATCH == 0:
            counts.input_records = n
            flush()
    counts.input_records = n
    flush()
    return counts


STAGE_COLUMNS = [c.name for c in staged.columns]
SKIP_COLUMNS = [c.name for c in skipped.columns]
REJECT_COLUMNS = [c.name for c in rejected.columns]
RETRY_COLUMNS = [c.name for c in retried.columns]
