"""Loading a staged run: in-run dedup, outcome per record, then one set-based apply.

`prepare` and `classify` only read the main database; `apply` writes target, dead letters,
lineage and watermark, and is meant to run inside `write_transaction`.
"""
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from .stage import bulk_insert

OUTCOMES = ("inserted", "updated", "unchanged", "stale")


@dataclass
class LoadCounts:
    """What applying a staged run did."""

    superseded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    dead_letters: int = 0
    lineage_entries: int = 0


def _number(value: float) -> str:
    return repr(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def update_detail(old_name, name, old_value, value, old_ts, ts) -> str:
    """The detail of an `updated` lineage entry: each changed field as old → new."""
    parts = []
    if old_name != name:
        parts.append(f"name: {old_name!r} → {name!r}")
    if old_value != value:
        parts.append(f"value: {_number(old_value)} → {_number(value)}")
    if old_ts != ts:
        parts.append(f"ts: {old_ts} → {ts}")
    return "; ".join(parts)


def prepare(conn: Connection) -> int:
    """Rank the staged records of each key (latest ts wins, ties to the later one); return superseded."""
    conn.exec_driver_sql("CREATE INDEX ix_sluice_stage_key ON sluice_stage (key, ts, pos)")
    conn.exec_driver_sql(
        "CREATE TEMP TABLE sluice_win AS "
        "SELECT pos, line, key, name, value, ts, dl_id, "
        "FIRST_VALUE(pos) OVER (PARTITION BY key ORDER BY ts DESC, pos DESC) AS winner "
        "FROM sluice_stage WHERE kind = 'staged'"
    )
    return conn.exec_driver_sql("SELECT count(*) FROM sluice_win WHERE pos <> winner").scalar()


def classify(conn: Connection) -> dict:
    """Decide inserted / updated / unchanged / stale for each winner against the target table."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS sluice_out")
    conn.exec_driver_sql("DROP TABLE IF EXISTS sluice_upd")
    conn.exec_driver_sql(
        "CREATE TEMP TABLE sluice_out AS "
        "SELECT w.pos, w.line, w.key, w.name, w.value, w.ts, w.dl_id, "
        "CASE WHEN t.key IS NULL THEN 'inserted' WHEN w.ts < t.ts THEN 'stale' "
        "WHEN w.name = t.name AND w.value = t.value AND w.ts = t.ts THEN 'unchanged' "
        "ELSE 'updated' END AS outcome, t.name AS old_name, t.value AS old_value, t.ts AS old_ts "
        "FROM sluice_win w LEFT JOIN target t ON t.key = w.key "
        "WHERE w.pos = w.winner ORDER BY w.key"
    )
    conn.exec_driver_sql("CREATE TEMP TABLE sluice_upd (pos BIGINT PRIMARY KEY, detail TEXT)")
    rows = conn.exec_driver_sql(
        "SELECT pos, old_name, name, old_value, value, old_ts, ts FROM sluice_out WHERE outcome = 'updated'"
    ).fetchall()
    bulk_insert(conn, "sluice_upd", ["pos", "detail"], [(r[0], update_detail(*r[1:])) for r in rows])
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome, n in conn.exec_driver_sql("SELECT outcome, count(*) FROM sluice_out GROUP BY outcome"):
        counts[outcome] = n
    return counts


def apply(conn: Connection, *, run_id: int, now: str, watermark: str | None, counts: LoadCounts) -> None:
    """Write the classified run into target, dead letters and lineage (inside the write lock)."""
    params = {"run": run_id, "now": now, "wm": watermark or ""}

    def sql(statement: str) -> int:
        return conn.exec_driver_sql(_params(conn, statement), params).rowcount

    sql("INSERT INTO target (key, name, value, ts, updated_at, run_id) "
        "SELECT key, name, value, ts, :now, :run FROM sluice_out WHERE outcome IN ('inserted', 'updated') "
        "ORDER BY key "
        "ON CONFLICT (key) DO UPDATE SET name = excluded.name, value = excluded.value, ts = excluded.ts, "
        "updated_at = excluded.updated_at, run_id = excluded.run_id")

    # Rejected records of a file: the same record again only counts a sighting on its open dead letter.
    sql("UPDATE dead_letters SET sightings = sightings + c.n, last_run_id = :run, updated_at = :now "
        "FROM (SELECT fp, count(*) AS n FROM sluice_stage WHERE kind = 'rejected' AND dl_id IS NULL "
        "GROUP BY fp) AS c WHERE dead_letters.fingerprint = c.fp AND dead_letters.status = 'open'")
    counts.dead_letters = sql(
        "INSERT INTO dead_letters (run_id, last_run_id, pos, line, key, error, detail, raw, fingerprint, "
        "status, created_at, updated_at, attempts, sightings) "
        "SELECT :run, :run, s.pos, s.line, s.key, s.error, s.detail, s.raw, s.fp, 'open', :now, :now, 0, c.n "
        "FROM sluice_stage s JOIN (SELECT fp, min(pos) AS pos, count(*) AS n FROM sluice_stage "
        "WHERE kind = 'rejected' AND dl_id IS NULL GROUP BY fp) AS c ON s.pos = c.pos "
        "WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.fingerprint = s.fp AND d.status = 'open') "
        "ORDER BY s.pos")

    # Retried dead letters: a pass resolves them with the outcome, a failure keeps them open.
    sql("UPDATE dead_letters SET error = s.error, detail = s.detail, last_raw = s.raw, "
        "attempts = attempts + 1, last_run_id = :run, updated_at = :now "
        "FROM sluice_stage s WHERE s.dl_id = dead_letters.id AND s.kind = 'rejected'")
    sql("UPDATE dead_letters SET status = 'resolved', outcome = COALESCE(o.outcome, 'superseded'), "
        "resolved_run_id = :run, attempts = attempts + 1, last_run_id = :run, updated_at = :now, "
        "last_raw = CASE WHEN s.raw IS NOT NULL THEN s.raw ELSE last_raw END "
        "FROM sluice_stage s LEFT JOIN sluice_out o ON o.pos = s.pos "
        "WHERE s.dl_id = dead_letters.id AND s.kind = 'staged'")

    lineage = ("INSERT INTO lineage (run_id, pos, line, key, step, at, detail, dead_letter_id) ")
    entries = sql(
        lineage + "SELECT :run, pos, line, COALESCE(key, ''), 'reprocessed', :now, "
        "'retry of dead letter ' || CAST(dl_id AS TEXT), dl_id FROM sluice_stage WHERE dl_id IS NOT NULL "
        "ORDER BY pos")
    entries += sql(
        lineage + "SELECT :run, s.pos, s.line, COALESCE(s.key, ''), s.kind, :now, "
        "CASE s.kind WHEN 'rejected' THEN s.error || ': ' || s.detail "
        "WHEN 'skipped' THEN 'ts ' || s.ts || ' is older than the watermark ' || :wm "
        "ELSE 'valid; ts ' || s.ts END, "
        "CASE WHEN s.kind <> 'rejected' THEN NULL WHEN s.dl_id IS NOT NULL THEN s.dl_id "
        "ELSE (SELECT min(d.id) FROM dead_letters d WHERE d.fingerprint = s.fp AND d.status = 'open') END "
        "FROM sluice_stage s ORDER BY s.key, s.ts, s.pos")
    entries += sql(
        lineage + "SELECT :run, pos, line, key, 'superseded', :now, "
        "'superseded by the record at position ' || CAST(winner AS TEXT) || ' of this run', NULL "
        "FROM sluice_win WHERE pos <> winner ORDER BY key, pos")
    entries += sql(
        lineage + "SELECT :run, o.pos, o.line, o.key, o.outcome, :now, "
        "CASE o.outcome WHEN 'inserted' THEN 'new key' "
        "WHEN 'unchanged' THEN 'same name, value and ts as the stored row' "
        "WHEN 'stale' THEN 'ts ' || o.ts || ' is older than the stored ts ' || o.old_ts || '; stored row kept' "
        "ELSE u.detail END, NULL "
        "FROM sluice_out o LEFT JOIN sluice_upd u ON u.pos = o.pos ORDER BY o.key")
    counts.lineage_entries = entries


def _params(conn: Connection, statement: str) -> str:
    """Turn :name parameters into the driver's own style (exec_driver_sql passes SQL through)."""
    if conn.dialect.name == "postgresql":
        return statement.replace("%", "%%").replace(":run", "%(run)s").replace(":now", "%(now)s") \
            .replace(":wm", "%(wm)s")
    return statement
