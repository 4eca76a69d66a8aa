"""Loading a staged run: in-run dedup, outcome per record, then one set-based apply.

`prepare` and `classify` only read the main database; `apply` writes target, dead letters,
lineage and watermark, and is meant to run inside `write_transaction`.
"""
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from ..formatting import number
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


def update_detail(old_name, name, old_value, value, old_ts, ts) -> str:
    """The detail of an `updated` lineage entry: each changed field as old → new."""
    parts = []
    if old_name != name:
        parts.append(f"name: {old_name!r} → {name!r}")
    if old_value != value:
        parts.append(f"value: {number(old_value)} → {number(value)}")
    if old_ts != ts:
        parts.append(f"ts: {old_ts} → {ts}")
    return "; ".join(parts)


def prepare(conn: Connection) -> int:
    """Find the staged records that a later one of the same key supersedes; return how many.

    The latest ts wins and a tie goes to the later record. Most keys appear once, so an index
    probe per record beats ranking every record with a window function (4× faster here).
    """
    conn.exec_driver_sql("CREATE INDEX ix_sluice_stage_key ON sluice_stage (key, ts, pos)")
    if conn.dialect.name == "postgresql":
        # Autovacuum never sees TEMP tables: without statistics the planner would guess their sizes.
        conn.exec_driver_sql("ANALYZE sluice_stage, sluice_skip, sluice_reject")
    conn.exec_driver_sql(
        "CREATE TEMP TABLE sluice_win AS "
        "SELECT s.pos, s.line, s.key, (SELECT x.pos FROM sluice_stage x WHERE x.key = s.key "
        "ORDER BY x.ts DESC, x.pos DESC LIMIT 1) AS winner "
        "FROM sluice_stage s WHERE EXISTS (SELECT 1 FROM sluice_stage x WHERE x.key = s.key "
        "AND (x.ts > s.ts OR (x.ts = s.ts AND x.pos > s.pos)))"
    )
    conn.exec_driver_sql("CREATE UNIQUE INDEX ix_sluice_win_pos ON sluice_win (pos)")
    return conn.exec_driver_sql("SELECT count(*) FROM sluice_win").scalar()


def classify(conn: Connection) -> dict:
    """Decide inserted / updated / unchanged / stale for each winner against the target table."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS sluice_out")
    conn.exec_driver_sql("DROP TABLE IF EXISTS sluice_upd")
    # Rows are kept in key order: the upsert and the lineage inserts then touch each index in order.
    conn.exec_driver_sql(
        "CREATE TEMP TABLE sluice_out AS "
        "SELECT w.pos, w.line, w.key, w.name, w.value, w.ts, "
        "CASE WHEN t.key IS NULL THEN 'inserted' WHEN w.ts < t.ts THEN 'stale' "
        "WHEN w.name = t.name AND w.value = t.value AND w.ts = t.ts THEN 'unchanged' "
        "ELSE 'updated' END AS outcome, t.name AS old_name, t.value AS old_value, t.ts AS old_ts "
        "FROM sluice_stage w LEFT JOIN target t ON t.key = w.key "
        "WHERE NOT EXISTS (SELECT 1 FROM sluice_win p WHERE p.pos = w.pos) ORDER BY w.key"
    )
    conn.exec_driver_sql("CREATE TEMP TABLE sluice_upd (pos BIGINT PRIMARY KEY, detail TEXT)")
    result = conn.exec_driver_sql(
        "SELECT pos, old_name, name, old_value, value, old_ts, ts FROM sluice_out WHERE outcome = 'updated'"
    )
    while rows := result.fetchmany(20_000):
        bulk_insert(conn, "sluice_upd", ["pos", "detail"], [(r[0], update_detail(*r[1:])) for r in rows])
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome, n in conn.exec_driver_sql("SELECT outcome, count(*) FROM sluice_out GROUP BY outcome"):
        counts[outcome] = n
    return counts


_LINEAGE = "INSERT INTO lineage (run_id, pos, line, key, step, at, detail, dead_letter_id) "


def apply(conn: Connection, *, run_id: int, now: str, watermark: str | None, retry: bool,
          counts: LoadCounts) -> None:
    """Write the classified run into target, dead letters and lineage (inside the write lock)."""
    params = {"run": run_id, "now": now, "wm": watermark or ""}

    def sql(statement: str) -> int:
        return conn.exec_driver_sql(_params(conn, statement), params).rowcount

    sql("INSERT INTO target (key, name, value, ts, updated_at, run_id) "
        "SELECT key, name, value, ts, :now, :run FROM sluice_out WHERE outcome IN ('inserted', 'updated') "
        "ON CONFLICT (key) DO UPDATE SET name = excluded.name, value = excluded.value, ts = excluded.ts, "
        "updated_at = excluded.updated_at, run_id = excluded.run_id")
    entries = _retried_dead_letters(sql) if retry else 0
    if not retry:
        counts.dead_letters = _new_dead_letters(sql)
        dead_letter = ("(SELECT min(d.id) FROM dead_letters d "
                       "WHERE d.fingerprint = r.fp AND d.status = 'open')")
    else:
        dead_letter = "(SELECT t.dl_id FROM sluice_retry t WHERE t.pos = r.pos)"

    entries += sql(_LINEAGE + "SELECT :run, pos, line, key, 'staged', :now, 'valid; ts ' || ts, NULL "
                   "FROM sluice_stage ORDER BY key, ts, pos")
    entries += sql(_LINEAGE + "SELECT :run, pos, line, COALESCE(key, ''), 'skipped', :now, "
                   "'ts ' || ts || ' is older than the watermark ' || :wm, NULL FROM sluice_skip ORDER BY key, pos")
    entries += sql(_LINEAGE + "SELECT :run, r.pos, r.line, COALESCE(r.key, ''), 'rejected', :now, "
                   f"r.error || ': ' || r.detail, {dead_letter} FROM sluice_reject r ORDER BY r.key, r.pos")
    entries += sql(_LINEAGE + "SELECT :run, pos, line, key, 'superseded', :now, "
                   "'superseded by the record at position ' || CAST(winner AS TEXT) || ' of this run', NULL "
                   "FROM sluice_win ORDER BY key, pos")
    entries += sql(_LINEAGE + "SELECT :run, o.pos, o.line, o.key, o.outcome, :now, "
                   "CASE o.outcome WHEN 'inserted' THEN 'new key' "
                   "WHEN 'unchanged' THEN 'same name, value and ts as the stored row' "
                   "WHEN 'stale' THEN 'ts ' || o.ts || ' is older than the stored ts ' || o.old_ts "
                   "|| '; stored row kept' ELSE u.detail END, NULL "
                   "FROM sluice_out o LEFT JOIN sluice_upd u ON u.pos = o.pos")
    counts.lineage_entries = entries


def _new_dead_letters(sql) -> int:
    """Dead letters for a file's rejects; the same record again only counts a sighting on its open one."""
    sql("UPDATE dead_letters SET sightings = sightings + c.n, last_run_id = :run, updated_at = :now "
        "FROM (SELECT fp, count(*) AS n FROM sluice_reject GROUP BY fp) AS c "
        "WHERE dead_letters.fingerprint = c.fp AND dead_letters.status = 'open'")
    return sql(
        "INSERT INTO dead_letters (run_id, last_run_id, pos, line, key, error, detail, raw, fingerprint, "
        "status, created_at, updated_at, attempts, sightings) "
        "SELECT :run, :run, r.pos, r.line, r.key, r.error, r.detail, r.raw, r.fp, 'open', :now, :now, 0, c.n "
        "FROM sluice_reject r JOIN (SELECT fp, min(pos) AS pos, count(*) AS n FROM sluice_reject "
        "GROUP BY fp) AS c ON r.pos = c.pos "
        "WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.fingerprint = r.fp AND d.status = 'open') "
        "ORDER BY r.pos")


def _retried_dead_letters(sql) -> int:
    """Update retried dead letters (a pass resolves with the outcome, a failure keeps them open)."""
    sql("UPDATE dead_letters SET error = r.error, detail = r.detail, last_raw = r.raw, "
        "attempts = attempts + 1, last_run_id = :run, updated_at = :now "
        "FROM sluice_reject r JOIN sluice_retry t ON t.pos = r.pos WHERE t.dl_id = dead_letters.id")
    sql("UPDATE dead_letters SET status = 'resolved', outcome = COALESCE(o.outcome, 'superseded'), "
        "resolved_run_id = :run, attempts = attempts + 1, last_run_id = :run, updated_at = :now, "
        "last_raw = t.raw "
        "FROM sluice_retry t JOIN sluice_stage s ON s.pos = t.pos LEFT JOIN sluice_out o ON o.pos = t.pos "
        "WHERE t.dl_id = dead_letters.id")
    return sql(_LINEAGE + "SELECT :run, t.pos, NULL, COALESCE(s.key, r.key, ''), 'reprocessed', :now, "
               "'retry of dead letter ' || CAST(t.dl_id AS TEXT), t.dl_id FROM sluice_retry t "
               "LEFT JOIN sluice_stage s ON s.pos = t.pos LEFT JOIN sluice_reject r ON r.pos = t.pos "
               "ORDER BY t.pos")


def _params(conn: Connection, statement: str) -> str:
    """Turn :name parameters into the driver's own style (exec_driver_sql passes SQL through)."""
    if conn.dialect.name == "postgresql":
        return statement.replace("%", "%%").replace(":run", "%(run)s").replace(":now", "%(now)s") \
            .replace(":wm", "%(wm)s")
    return statement
