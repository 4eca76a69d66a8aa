"""Staging: every record a run reads, classified (skipped, rejected, staged) into a per-run TEMP table.

A TEMP table lives in the connection's own temporary schema, so filling it takes no lock on the
main database: while a large file is parsed, other writers go on.
"""
import hashlib
import math
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson
from sqlalchemy import BigInteger, Column, Double, MetaData, String, Table, Text
from sqlalchemy.engine import Connection

from ..models import binary_text
from .extract import MALFORMED, Item
from .validate import Invalid, show, ts_of, usable_key, validate

BATCH = 20_000

staging_metadata = MetaData()
staging = Table(
    "sluice_stage", staging_metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("line", BigInteger),
    Column("kind", String(16), nullable=False),  # skipped, rejected, staged
    Column("key", binary_text(256)),
    Column("name", Text),
    Column("value", Double),
    Column("ts", binary_text(26)),
    Column("error", String(32)),
    Column("detail", Text),
    Column("raw", Text),
    Column("fp", String(32)),
    Column("dl_id", BigInteger),
    prefixes=["TEMPORARY"],
)
COLUMNS = [c.name for c in staging.columns]


@dataclass
class StageCounts:
    """What reading a run's input found."""

    input_records: int = 0
    skipped: int = 0
    rejected: int = 0
    staged: int = 0
    errors: dict = field(default_factory=dict)


_SURROGATE = re.compile("[\ud800-\udfff]")


def raw_text(value) -> str:
    """The record as JSON text, keys in their order; NUL and unpaired surrogates escaped."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass
    # Lone surrogates, huge integers or a number beyond the double range: the stdlib writes them;
    # a non-finite float (from a literal such as 1e400) is written back as 1e999, not `Infinity`.
    token = uuid.uuid4().hex

    def finite(v):
        if isinstance(v, float) and math.isinf(v):
            return f"{token}{'-' if v < 0 else ''}"
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [finite(x) for x in v]
        return v

    text = json.dumps(finite(value), ensure_ascii=False, separators=(",", ":"))
    text = text.replace(f'"{token}-"', "-1e999").replace(f'"{token}"', "1e999")
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def fingerprint(raw: str, error: str) -> str:
    """Identity of a rejected record for the same-record-again rule: its raw text and its error."""
    return hashlib.blake2b(f"{error}\x1f{raw}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def create(conn: Connection) -> None:
    """Create the run's empty staging table (dropping a leftover one first)."""
    drop(conn)
    staging.create(conn)


def drop(conn: Connection) -> None:
    """Drop the staging tables of this connection, whatever state they are in."""
    for name in ("sluice_out", "sluice_win", "sluice_upd", "sluice_stage"):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {'pg_temp.' if conn.dialect.name == 'postgresql' else 'temp.'}{name}")


def bulk_insert(conn: Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Insert many rows with the driver's own fast path (COPY on PostgreSQL, executemany on SQLite)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def fill(conn: Connection, items: Iterable[Item], *, watermark: str | None, latest: str,
         dl_ids: dict | None = None, tick: Callable[[int], None] | None = None) -> StageCounts:
    """Read every item into the staging table, classified; return the counts.

    `watermark` is None when it does not apply (none yet, or a backfill); `latest` is the newest
    acceptable ts (now plus the tolerance); `dl_ids` maps positions to the dead letters a
    reprocess run retries; `tick(records)` is called every few thousand records.
    """
    counts = StageCounts()
    errors = counts.errors
    batch = []
    for item in items:
        record = item.value
        dl_id = dl_ids.get(item.pos) if dl_ids else None
        row = None
        if record is MALFORMED:
            raw = item.text or ""
            row = (item.pos, item.line, "rejected", None, None, None, None, "malformed_json",
                   "the line is not valid JSON", raw, fingerprint(raw, "malformed_json"), dl_id)
        else:
            if watermark is not None and isinstance(record, dict):
                ts = ts_of(record)
                if ts is not None and ts < watermark:
                    row = (item.pos, item.line, "skipped", usable_key(record), None, None, ts,
                           None, None, None, None, dl_id)
                    counts.skipped += 1
            if row is None:
                try:
                    key, name, value, ts = validate(record, latest)
                    # A retried dead letter keeps the JSON it was retried with.
                    raw = raw_text(record) if dl_id is not None else None
                    row = (item.pos, item.line, "staged", key, name, value, ts, None, None, raw, None, dl_id)
                    counts.staged += 1
                except Invalid as bad:
                    raw = raw_text(record)
                    row = (item.pos, item.line, "rejected", usable_key(record), None, None, None, bad.code,
                           bad.detail, raw, fingerprint(raw, bad.code), dl_id)
        if row[2] == "rejected":
            counts.rejected += 1
            errors[row[7]] = errors.get(row[7], 0) + 1
        batch.append(row)
        if len(batch) >= BATCH:
            counts.input_records += len(batch)
            bulk_insert(conn, "sluice_stage", COLUMNS, batch)
            batch = []
            if tick:
                tick(counts.input_records)
    counts.input_records += len(batch)
    bulk_insert(conn, "sluice_stage", COLUMNS, batch)
    if tick:
        tick(counts.input_records)
    return counts


__all__ = ["StageCounts", "create", "drop", "fill", "raw_text", "fingerprint", "bulk_insert", "show"]
