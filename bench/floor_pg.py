"""The PostgreSQL floor: the minimal hand-written psycopg load of one file into Sluice's own schema.

The same rows as `floor.py` (and as the pipeline) into the same tables and indexes (a database
built by `app.schema.upgrade`): parse the whole file with `json.load` and classify it with the same
code (`floor._rows`: the pipeline's `validate`/`ts_of`), then write, all in one transaction: one
`COPY` into a TEMP staging table, a window function for the in-run winner, the outcome by a join
with `target`, one `INSERT … ON CONFLICT` upsert, dead letters (same-record-again rule) and lineage
by `INSERT … SELECT`, the watermark and a run row. It parses, then writes: the server and Python
never work at the same time.
"""
import json
import os
import resource
import time
from datetime import timedelta

import psycopg
from floor import RUN_COUNTS, WATERMARK_NAME, _rows

from app.pipeline.load import ANALYZE_DEAD_LETTERS
from app.pipeline.validate import canonical, now_text, utc_now

DATASET = "events"
# (:ds is cast where it appears: PostgreSQL must deduce one type for a parameter used twice.)

# Text columns compare by code point, like target's (COLLATE "C"), so the joins on key use its index.
STAGE = ('CREATE TEMP TABLE stage (pos BIGINT PRIMARY KEY, kind TEXT NOT NULL, key TEXT COLLATE "C", '
         'name TEXT COLLATE "C", value DOUBLE PRECISION, ts TEXT COLLATE "C", error TEXT, detail TEXT, '
         "raw TEXT, fp TEXT) ON COMMIT DROP")
STAGE_COLUMNS = ("pos", "kind", "key", "name", "value", "ts", "error", "detail", "raw", "fp")

# Latest ts wins, a tie goes to the later record.
WINNERS = ("CREATE TEMP TABLE win ON COMMIT DROP AS SELECT pos, key, name, value, ts, "
           "first_value(pos) OVER (PARTITION BY key ORDER BY ts DESC, pos DESC) AS winner "
           "FROM stage WHERE kind = 'staged'")

# In key order, which keeps the index upkeep of target and lineage close to appends.
OUTCOMES = ("CREATE TEMP TABLE out ON COMMIT DROP AS SELECT w.pos, w.key, w.name, w.value, w.ts, "
            "CASE WHEN t.key IS NULL THEN 'inserted' WHEN w.ts < t.ts THEN 'stale' "
            "WHEN w.name = t.name AND w.value = t.value AND w.ts = t.ts THEN 'unchanged' "
            "ELSE 'updated' END AS outcome, t.name AS old_name, t.value AS old_value, t.ts AS old_ts "
            "FROM win w LEFT JOIN target t ON t.key = w.key WHERE w.pos = w.winner ORDER BY w.key")

UPSERT = ("INSERT INTO target (key, name, value, ts, updated_at, run_id) "
          "SELECT key, name, value, ts, %(now)s, %(run)s FROM out WHERE outcome IN ('inserted', 'updated') "
          "ON CONFLICT (key) DO UPDATE SET name = excluded.name, value = excluded.value, ts = excluded.ts, "
          "updated_at = excluded.updated_at, run_id = excluded.run_id")

SIGHTINGS = ("UPDATE dead_letters SET sightings = sightings + c.n, last_run_id = %(run)s, updated_at = %(now)s "
             "FROM (SELECT fp, count(*) AS n FROM stage WHERE kind = 'rejected' GROUP BY fp) AS c "
             "WHERE dead_letters.dataset = CAST(%(ds)s AS VARCHAR(40)) AND dead_letters.fingerprint = c.fp "
             "AND dead_letters.status = 'open'")

DEAD_LETTERS = ("INSERT INTO dead_letters (dataset, run_id, last_run_id, pos, key, error, detail, raw, "
                "fingerprint, status, created_at, updated_at, attempts, sightings) "
                "SELECT CAST(%(ds)s AS VARCHAR(40)), %(run)s, %(run)s, s.pos, s.key, s.error, s.detail, s.raw, s.fp, 'open', "
                "%(now)s, %(now)s, 0, c.n "
                "FROM stage s JOIN (SELECT fp, min(pos) AS pos, count(*) AS n FROM stage "
                "WHERE kind = 'rejected' GROUP BY fp) AS c ON s.pos = c.pos "
                "WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.dataset = CAST(%(ds)s AS VARCHAR(40)) "
                "AND d.fingerprint = s.fp AND d.status = 'open') ORDER BY s.pos")

LINEAGE = "INSERT INTO lineage (dataset, run_id, pos, key, step, at, detail, dead_letter_id) "

# Each reject's dead letter by a subquery, as the pipeline links them: fast only with statistics on
# dead_letters (see the ANALYZE below and app.pipeline.load.apply), which are missing when its rows
# are this transaction's; the planner then may walk (dataset, status, id) filtering on fingerprint,
# once per reject: quadratic.
LINEAGE_READ = (LINEAGE + "SELECT CAST(%(ds)s AS VARCHAR(40)), %(run)s, s.pos, COALESCE(s.key, ''), s.kind, %(now)s, "
                "CASE s.kind WHEN 'rejected' THEN s.error || ': ' || s.detail "
                "WHEN 'skipped' THEN 'ts ' || s.ts || ' is older than the watermark ' || %(wm)s "
                "ELSE 'valid; ts ' || s.ts END, "
                "CASE WHEN s.kind = 'rejected' THEN (SELECT min(d.id) FROM dead_letters d "
                "WHERE d.dataset = CAST(%(ds)s AS VARCHAR(40)) AND d.fingerprint = s.fp AND d.status = 'open') END "
                "FROM stage s ORDER BY s.key, s.pos")

LINEAGE_SUPERSEDED = (LINEAGE + "SELECT CAST(%(ds)s AS VARCHAR(40)), %(run)s, pos, key, 'superseded', %(now)s, "
                      "'superseded by the record at position ' || winner || ' of this run', NULL "
                      "FROM win WHERE pos <> winner ORDER BY key, pos")

# The `updated` detail names each changed field as old → new, as the pipeline's (Python's) does:
# a name as repr() writes it (quoted; right for names without quotes or backslashes, which is all
# this bench's generator makes), a number as `app.formatting.number` does: a whole double below
# 1e16 without '.0', others in their shortest exact form, which PostgreSQL 12+ writes as repr() does.
_NUMBER = ("CASE WHEN {0} = trunc({0}) AND abs({0}) < 1e16 THEN CAST(CAST({0} AS BIGINT) AS TEXT) "
           "ELSE CAST({0} AS TEXT) END")
LINEAGE_OUTCOMES = (
    LINEAGE + "SELECT CAST(%(ds)s AS VARCHAR(40)), %(run)s, pos, key, outcome, %(now)s, CASE outcome WHEN 'inserted' THEN 'new key' "
    "WHEN 'unchanged' THEN 'same name, value and ts as the stored row' "
    "WHEN 'stale' THEN 'ts ' || ts || ' is older than the stored ts ' || old_ts || '; stored row kept' "
    "ELSE substr(CASE WHEN old_name <> name THEN '; name: ''' || old_name || ''' → ''' || name || '''' "
    "ELSE '' END "
    f"|| CASE WHEN old_value <> value THEN '; value: ' || {_NUMBER.format('old_value')} || ' → ' "
    f"|| {_NUMBER.format('value')} ELSE '' END "
    "|| CASE WHEN old_ts <> ts THEN '; ts: ' || old_ts || ' → ' || ts ELSE '' END, 3) END, NULL "
    "FROM out ORDER BY key")


def server_cpu_seconds(cur) -> float:
    """CPU time (user + system) of this connection's server process so far, from /proc (same machine)."""
    return backend_cpu_seconds(cur.execute("SELECT pg_backend_pid()").fetchone()[0])


def backend_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a local process (a PostgreSQL backend), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, file_path: str, *, ignore_watermark: bool = False,
        tolerance: timedelta = timedelta(days=1)) -> dict:
    """Load one JSON array file into the Sluice database at `url` (libpq form); return counts and step times."""
    steps = {}
    peaks = {}
    started = time.perf_counter()

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        steps[name] = steps.get(name, 0.0) + now - since
        peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return now

    t = started
    with open(file_path, "rb") as f:
        records = json.load(f)
    if isinstance(records, dict):
        records = [records]
    t = step("parse (json.load)", t)

    db = psycopg.connect(url, prepare_threshold=None)
    cur = db.cursor()
    server_cpu = server_cpu_seconds(cur)
    db.commit()
    # The one transaction: it holds the lock the pipeline's apply takes (an advisory lock on PostgreSQL).
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x51_1C_E0_01,))
    locked = time.perf_counter()
    row = cur.execute("SELECT value FROM watermarks WHERE name = %s", (WATERMARK_NAME,)).fetchone()
    wm_before = row[0] if row else None
    latest = canonical(utc_now() + tolerance)
    t = step("open, lock, watermark", t)

    rows, counts = _rows(records, None if ignore_watermark else wm_before, latest)
    counts["input_records"] = len(records)
    del records
    t = step("validate", t)

    cur.execute(STAGE)
    with cur.copy(f"COPY stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)
    del rows
    t = step("stage (COPY)", t)
    cur.execute("ANALYZE stage")  # autovacuum never sees TEMP tables: without it the planner guesses
    t = step("analyze stage", t)

    now = now_text()
    run_id = cur.execute(
        "INSERT INTO runs (dataset, kind, status, options, queued_at, started_at, cancel_requested, "
        "input_records, skipped, rejected, staged, superseded, inserted, updated, unchanged, stale, "
        "dead_letters, lineage_entries, source_name) "
        "VALUES (%s, 'cli', 'running', '{}', %s, %s, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, %s) RETURNING id",
        (DATASET, now, now, file_path.rsplit("/", 1)[-1])).fetchone()[0]
    params = {"run": run_id, "now": now, "wm": wm_before or "", "ds": DATASET}

    cur.execute(WINNERS)
    counts["superseded"] = cur.execute("SELECT count(*) FROM win WHERE pos <> winner").fetchone()[0]
    t = step("winners (window)", t)
    cur.execute(OUTCOMES)
    for name in ("inserted", "updated", "unchanged", "stale"):
        counts[name] = 0
    for outcome, n in cur.execute("SELECT outcome, count(*) FROM out GROUP BY outcome"):
        counts[outcome] = n
    t = step("classify (join target)", t)
    cur.execute(UPSERT, params)
    t = step("upsert target", t)
    cur.execute(SIGHTINGS, params)
    counts["dead_letters"] = cur.execute(DEAD_LETTERS, params).rowcount
    if counts["dead_letters"] >= ANALYZE_DEAD_LETTERS:  # as the pipeline does, so that both link alike
        cur.execute("ANALYZE dead_letters")
    t = step("dead letters", t)
    entries = cur.execute(LINEAGE_READ, params).rowcount
    t = step("lineage: read steps", t)
    entries += cur.execute(LINEAGE_SUPERSEDED, params).rowcount
    t = step("lineage: superseded", t)
    entries += cur.execute(LINEAGE_OUTCOMES, params).rowcount
    t = step("lineage: outcomes", t)
    counts["lineage_entries"] = entries

    wm_after = _finish(cur, run_id, now, wm_before, counts)
    t = step("watermark, run row", t)
    db.commit()  # the TEMP tables go with it (ON COMMIT DROP)
    t = step("commit", t)
    server_cpu = server_cpu_seconds(cur) - server_cpu
    db.close()
    return {"run_id": run_id, "counts": counts, "watermark": wm_after, "steps": steps,
            "step_peak_rss_mb": peaks, "seconds": t - started, "lock_seconds": t - locked,
            "server_cpu_seconds": server_cpu}


def _finish(cur, run_id: int, now: str, wm_before: str | None, counts: dict) -> str | None:
    """Move the watermark to the newest ts in target (never back) and record the run; return the watermark."""
    newest = cur.execute("SELECT max(ts) FROM target").fetchone()[0]
    wm_after = wm_before
    if newest is not None and (wm_before is None or newest > wm_before):
        wm_after = newest
        cur.execute("INSERT INTO watermarks (name, dataset, value, updated_at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (WATERMARK_NAME, DATASET, newest, now))
        cur.execute("INSERT INTO watermark_history (name, dataset, old_value, new_value, at, via, run_id) "
                    "VALUES (%s, %s, %s, %s, %s, 'pipeline', %s)",
                    (WATERMARK_NAME, DATASET, wm_before, newest, now, run_id))
    cur.execute("UPDATE runs SET status = 'succeeded', finished_at = %s, watermark_before = %s, "
                f"watermark_after = %s, {', '.join(f'{name} = %s' for name in RUN_COUNTS)} WHERE id = %s",
                (now_text(), wm_before, wm_after, *(counts[name] for name in RUN_COUNTS), run_id))
    return wm_after
