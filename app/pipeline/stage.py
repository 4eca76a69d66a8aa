"""Staging: every record a run reads, classified (skipped, rejected, staged) into per-run TEMP tables.

A TEMP table lives in the connection's own temporary schema, so filling it takes no lock on the
main database: while a large file is parsed, other writers go on. The staged table is built per
shape: the key, one column per payload field (in shape order, typed like the target's) and the
version; its columns have fixed names (`key`, `p0`…, `ver`), so no field name can meet the
staging's own columns and the load's SQL reads the same for every dataset.
"""
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, text
from sqlalchemy.engine import Connection

from ..models import binary_text
from .extract import Item, Unreadable
from .jsontext import dumps
from .validate import Invalid

BATCH = 20_000
ERROR_LENGTH = 80  # the longest error code is missing_/invalid_ and a 63-character field name

STAGE, SKIP, REJECT, RETRY = "sluice_stage", "sluice_skip", "sluice_reject", "sluice_retry"
DERIVED = ("sluice_out", "sluice_win", "sluice_upd", "sluice_dl")

# Narrow tables, one per kind of record: binding parameters is most of the cost of a bulk insert,
# so a staged record carries only what the upsert needs.
_fixed = MetaData()
skipped = Table(
    SKIP, _fixed,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("line", BigInteger),
    Column("key", binary_text(256)),
    Column("ver", binary_text(26), nullable=False),
    prefixes=["TEMPORARY"],
)
rejected = Table(
    REJECT, _fixed,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("line", BigInteger),
    Column("key", binary_text(256)),
    Column("error", String(ERROR_LENGTH), nullable=False),
    Column("detail", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("fp", String(32), nullable=False),
    # The record's version when it has a valid one: a reject older than a watermark that moved
    # while the run was read is skipped instead (`reskip`), as it would have been had it waited.
    Column("ver", binary_text(26)),
    prefixes=["TEMPORARY"],
)
retried = Table(  # reprocess runs only: which dead letter each record retries, and the JSON it was retried with
    RETRY, _fixed,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("dl_id", BigInteger, nullable=False),
    Column("raw", Text),
    prefixes=["TEMPORARY"],
)
_staged_tables: dict = {}


def payload_names(dataset) -> list[str]:
    """The staged table's payload column names, in shape order (p0, p1, …)."""
    return [f"p{i}" for i in range(len(dataset.payload_cols))]


def staged_table(dataset) -> Table:
    """The staged table of a dataset's shape: pos, line, key, one column per payload field, ver."""
    cache_key = (dataset.name, dataset.version, dataset.shape)
    table = _staged_tables.get(cache_key)
    if table is None:
        table = Table(
            STAGE, MetaData(),
            Column("pos", BigInteger, primary_key=True, autoincrement=False),
            Column("line", BigInteger),
            Column("key", binary_text(256), nullable=False),
            *(Column(name, col.type, nullable=col.nullable)
              for name, col in zip(payload_names(dataset), dataset.payload_cols, strict=True)),
            Column("ver", binary_text(26), nullable=False),
            prefixes=["TEMPORARY"],
        )
        if len(_staged_tables) > 256:
            _staged_tables.clear()
        _staged_tables[cache_key] = table
    return table


@dataclass
class Staging:
    """A run's staging on one connection: the dataset it loads and its staged table."""

    conn: Connection
    dataset: object  # app.datasets.registry.Dataset
    staged: Table


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


def create(conn: Connection, dataset) -> Staging:
    """Create the run's empty staging tables for `dataset` (dropping leftovers first)."""
    drop(conn)
    staged = staged_table(dataset)
    staged.create(conn)
    _fixed.create_all(conn)
    return Staging(conn, dataset, staged)


def drop(conn: Connection) -> None:
    """Drop the staging tables of this connection, whatever state they are in."""
    schema = "pg_temp" if conn.dialect.name == "postgresql" else "temp"
    for name in DERIVED + (STAGE, SKIP, REJECT, RETRY):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.{name}")


def bulk_insert(conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Insert many rows with the driver's own fast path (COPY on PostgreSQL, executemany on SQLite).

    `table` and `columns` are the staging's own names, never a user's.
    """
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


def fill(staging: Staging, items: Iterable[Item], *, watermark: str | None, latest: str,
         dl_ids: dict | None = None, tick: Callable[[int], None] | None = None,
         counts: StageCounts | None = None, versions: bool = False,
         read_steps: Callable[[list, list], None] | None = None) -> StageCounts:
    """Read every item into the staging tables with the dataset's validator, classified; return the counts.

    `watermark` is None when it does not apply (none yet, or a backfill); `latest` is the newest
    acceptable version (now plus the tolerance); `dl_ids` maps positions to the dead letters a
    reprocess run retries; `tick(records)` is called every few thousand records. `counts`, when
    given, is the StageCounts filled: its skipped and rejected are exact at any moment (for progress).
    `versions` keeps each reject's version even without a watermark, for a later `reskip`.
    `read_steps(staged, skipped)` is handed each batch's staged and skipped rows as they are stored.
    """
    conn = staging.conn
    validator = staging.dataset.validator
    validate, version_of, usable_key = validator.validate, validator.version_of, validator.usable_key
    stage_columns = [c.name for c in staging.staged.columns]
    counts = StageCounts() if counts is None else counts
    errors = counts.errors
    good, old, bad, retry = [], [], [], []

    def flush() -> None:
        counts.staged += len(good)
        if read_steps is not None:
            read_steps(good, old)
        for table, columns, rows in ((STAGE, stage_columns, good), (SKIP, SKIP_COLUMNS, old),
                                     (REJECT, REJECT_COLUMNS, bad), (RETRY, RETRY_COLUMNS, retry)):
            bulk_insert(conn, table, columns, rows)
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
            bad.append((item.pos, item.line, None, record.code, record.detail, raw, fingerprint(raw, record.code),
                        None))
            counts.rejected += 1
            errors[record.code] = errors.get(record.code, 0) + 1
        else:
            version = version_of(record) if watermark is not None and type(record) is dict else None
            if version is not None and version < watermark:
                old.append((item.pos, item.line, usable_key(record), version))
                counts.skipped += 1
            else:
                try:
                    good.append((item.pos, item.line, *validate(record, latest)))
                except Invalid as exc:
                    raw = dumps(record)
                    if version is None and versions and type(record) is dict:
                        version = version_of(record)
                    bad.append((item.pos, item.line, usable_key(record), exc.code, exc.detail, raw,
                                fingerprint(raw, exc.code), version))
                    counts.rejected += 1
                    errors[exc.code] = errors.get(exc.code, 0) + 1
        if n % BATCH == 0:
            counts.input_records = n
            flush()
    counts.input_records = n
    flush()
    return counts


def reskip(staging: Staging, counts: StageCounts, watermark: str) -> None:
    """Skip the staged and rejected records older than `watermark`, a newer one than the run was read with.

    The records move into the skipped table and `counts` follows. Only for a run read with
    `versions` kept, before `load.prepare`; a reject without a valid version stays a reject.
    """
    conn = staging.conn
    old = {"wm": watermark}
    for code, n in conn.execute(text(f"SELECT error, count(*) FROM {REJECT} WHERE ver < :wm GROUP BY error"), old):
        counts.errors[code] -= n
        counts.rejected -= n
    for table in (STAGE, REJECT):
        n = conn.execute(text(f"INSERT INTO {SKIP} (pos, line, key, ver) SELECT pos, line, key, ver "
                              f"FROM {table} WHERE ver < :wm"), old).rowcount
        conn.execute(text(f"DELETE FROM {table} WHERE ver < :wm"), old)
        counts.skipped += n
        if table == STAGE:
            counts.staged -= n


SKIP_COLUMNS = [c.name for c in skipped.columns]
REJECT_COLUMNS = [c.name for c in rejected.columns]
RETRY_COLUMNS = [c.name for c in retried.columns]
