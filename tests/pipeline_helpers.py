"""Helpers shared by the core tests: run records through the pipeline and read tables back with SQL."""

import json

from sqlalchemy import text

from app.pipeline import run_file


def load(conn, write, records, name="records.json", **kwargs) -> dict:
    """Write `records` as a JSON array and run the pipeline on it; return the run's summary."""
    return run_file(conn, write(name, json.dumps(records)), **kwargs)


def fetch(conn, sql: str, **params) -> list:
    """Rows of a query, read in a transaction of its own (the pipeline wants the connection idle)."""
    with conn.begin():
        return conn.execute(text(sql), params).all()


def scalar(conn, sql: str, **params):
    """The single value of a query."""
    with conn.begin():
        return conn.execute(text(sql), params).scalar()


def target(conn) -> dict:
    """The target table as {key: (name, value, ts)}."""
    return {r.key: (r.name, r.value, r.ts) for r in fetch(conn, "SELECT key, name, value, ts FROM target")}


def snapshot(conn) -> dict:
    """Everything a run may change except the runs table, to prove that a failed run changed nothing."""
    return {
        "target": fetch(conn, "SELECT * FROM target ORDER BY key"),
        "lineage": fetch(conn, "SELECT * FROM lineage ORDER BY id"),
        "dead_letters": fetch(conn, "SELECT * FROM dead_letters ORDER BY id"),
        "watermarks": fetch(conn, "SELECT * FROM watermarks ORDER BY name"),
        "watermark_history": fetch(conn, "SELECT * FROM watermark_history ORDER BY id"),
    }


def rec(key="k1", name="n", value=1, ts="2025-01-15T12:00:00", **extra) -> dict:
    """A valid record, with any field overridden."""
    return {"key": key, "name": name, "value": value, "ts": ts, **extra}
