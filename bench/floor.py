"""The floor: the minimal hand-written sqlite3 load of one file into Sluice's own schema.

Same tables and indexes (the database is built by `app.schema.upgrade`), same validation code, same
rows written: target, one dead letter per distinct rejected record, and the same lineage entries as
the pipeline (`skipped` / `rejected` / `staged` per record read, `superseded`, and one outcome per
winner), the watermark and a run row. What it leaves out is what makes Sluice a service: streaming
(it parses the whole file with `json.load`), a short write lock (everything is one transaction),
cancellation and progress, restarts when the watermark moves, reprocessing, PostgreSQL.
"""
import hashlib
import json
import resource
import sqlite3
import time
from datetime import timedelta

from app.pipeline.validate import Invalid, canonical, now_text, ts_of, usable_key, utc_now, validate

# The connection settings Sluice's engine and its apply use (app/database.py, app/pipeline/run.py):
# the floor gets the same ones, so the comparison is about the code, not the configuration.
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON",
           "PRAGMA cache_size = -131072")

STAGE = ("CREATE TEMP TABLE stage (pos INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT, name TEXT, "
         "value REAL, ts TEXT, error TEXT, detail TEXT, raw TEXT, fp TEXT)")

# Latest ts wins, a tie goes to the later record. Written in key order, which keeps the index
# upkeep of target and lineage close to appends.
WINNERS = ("CREATE TEMP TABLE win AS SELECT pos, key, name, value, ts, "
           "FIRST_VALUE(pos) OVER (PARTITION BY key ORDER BY ts DESC, pos DESC) AS winner "
           "FROM stage WHERE kind = 'staged'")

OUTCOMES = ("CREATE TEMP TABLE out AS SELECT w.pos, w.key, w.name, w.value, w.ts, "
            "CASE WHEN t.key IS NULL THEN 'inserted' WHEN w.ts < t.ts THEN 'stale' "
            "WHEN w.name = t.name AND w.value = t.value AND w.ts = t.ts THEN 'unchanged' "
            "ELSE 'updated' END AS outcome, t.name AS old_name, t.value AS old_value, t.ts AS old_ts "
            "FROM win w LEFT JOIN target t ON t.key = w.key WHERE w.pos = w.winner")

UPSERT = ("INSERT INTO target (key, name, value, ts, updated_at, run_id) "
          "SELECT key, name, value, ts, :now, :run FROM out WHERE outcome IN ('inserted', 'updated') "
          "ON CONFLICT (key) DO UPDATE SET name = excluded.name, value = excluded.value, ts = excluded.ts, "
          "updated_at = excluded.updated_at, run_id = excluded.run_id")

SIGHTINGS = ("UPDATE dead_letters SET sightings = sightings + c.n, last_run_id = :run, updated_at = :now "
             "FROM (SELECT fp, count(*) AS n FROM stage WHERE kind = 'rejected' GROUP BY fp) AS c "
             "WHERE dead_letters.fingerprint = c.fp AND dead_letters.status = 'open'")

DEAD_LETTERS = ("INSERT INTO dead_letters (run_id, last_run_id, pos, key, error, detail, raw, fingerprint, "
                "status, created_at, updated_at, attempts, sightings) "
                "SELECT :run, :run, s.pos, s.key, s.error, s.detail, s.raw, s.fp, 'open', :now, :now, 0, c.n "
                "FROM stage s JOIN (SELECT fp, min(pos) AS pos, count(*) AS n FROM stage "
                "WHERE kind = 'rejected' GROUP BY fp) AS c ON s.pos = c.pos "
                "WHERE NOT EXISTS (SELECT 1 FROM dead_letters d "
                "WHERE d.fingerprint = s.fp AND d.status = 'open')")

LINEAGE = "INSERT INTO lineage (run_id, pos, key, step, at, detail, dead_letter_id) "

LINEAGE_READ = (LINEAGE + "SELECT :run, s.pos, COALESCE(s.key, ''), s.kind, :now, "
                "CASE s.kind WHEN 'rejected' THEN s.error || ': ' || s.detail "
                "WHEN 'skipped' THEN 'ts ' || s.ts || ' is older than the watermark ' || :wm "
                "ELSE 'valid; ts ' || s.ts END, "
                "CASE WHEN s.kind = 'rejected' THEN (SELECT min(d.id) FROM dead_letters d "
                "WHERE d.fingerprint = s.fp AND d.status = 'open') END "
                "FROM stage s ORDER BY s.key, s.pos")

LINEAGE_SUPERSEDED = (LINEAGE + "SELECT :run, pos, key, 'superseded', :now, "
                      "'superseded by the record at position ' || winner || ' of this run', NULL "
                      "FROM win WHERE pos <> winner ORDER BY key, pos")

# The `updated` detail names each changed field as old → new, as the pipeline's does.
_NUMBER = ("CASE WHEN {0} = CAST({0} AS INTEGER) THEN CAST(CAST({0} AS INTEGER) AS TEXT) "
           "ELSE CAST({0} AS TEXT) END")
LINEAGE_OUTCOMES = (
    LINEAGE + "SELECT :run, pos, key, outcome, :now, CASE outcome WHEN 'inserted' THEN 'new key' "
    "WHEN 'unchanged' THEN 'same name, value and ts as the stored row' "
    "WHEN 'stale' THEN 'ts ' || ts || ' is older than the stored ts ' || old_ts || '; stored row kept' "
    "ELSE substr(CASE WHEN old_name <> name THEN '; name: ' || quote(old_name) || ' → ' || quote(name) "
    "ELSE '' END "
    f"|| CASE WHEN old_value <> value THEN '; value: ' || {_NUMBER.format('old_value')} || ' → ' "
    f"|| {_NUMBER.format('value')} ELSE '' END "
    "|| CASE WHEN old_ts <> ts THEN '; ts: ' || old_ts || ' → ' || ts ELSE '' END, 3) END, NULL "
    "FROM out ORDER BY key")

WATERMARK_NAME = "events_ts"


def _rows(records: list, watermark: str | None, latest: str):
    """Classify each record as the pipeline does: skipped (before validation), rejected or staged."""
    rows = []
    counts = {"skipped": 0, "rejected": 0, "staged": 0}
    for pos, record in enumerate(records, 1):
        if watermark is not None and isinstance(record, dict):
            ts = ts_of(record)
            if ts is not None and ts < watermark:
                rows.append((pos, "skipped", usable_key(record), None, None, ts, None, None, None, None))
                counts["skipped"] += 1
                continue
        try:
            key, name, value, ts = validate(record, latest)
        except Invalid as bad:
            raw = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            fp = hashlib.blake2b(f"{bad.code}\x1f{raw}".encode("utf-8", "surrogatepass"),
                                 digest_size=16).hexdigest()
            rows.append((pos, "rejected", usable_key(record), None, None, None, bad.code, bad.detail, raw,
                         fp))
            counts["rejected"] += 1
            continue
        rows.append((pos, "staged", key, name, value, ts, None, None, None, None))
        counts["staged"] += 1
    return rows, counts


def run(db_path: str, file_path: str, *, ignore_watermark: bool = False, cache_mib: int | None = None,
        tolerance: timedelta = timedelta(days=1)) -> dict:
    """Load one JSON array file into the Sluice database at `db_path`; return counts and step times."""
    steps, peaks = {}, {}
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

    db = sqlite3.connect(db_path, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(pragma)
    if cache_mib is not None:
        db.execute(f"PRAGMA cache_size = -{int(cache_mib) * 1024}")
    db.execute("BEGIN IMMEDIATE")
    locked = time.perf_counter()
    row = db.execute("SELECT value FROM watermarks WHERE name = ?", (WATERMARK_NAME,)).fetchone()
    wm_before = row[0] if row else None
    latest = canonical(utc_now() + tolerance)
    t = step("open, lock, watermark", t)

    rows, counts = _rows(records, None if ignore_watermark else wm_before, latest)
    counts["input_records"] = len(records)
    del records
    t = step("validate", t)

    db.execute(STAGE)
    db.executemany("INSERT INTO stage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    del rows
    t = step("stage (executemany)", t)

    now = now_text()
    run_id = db.execute(
        "INSERT INTO runs (kind, status, options, queued_at, started_at, cancel_requested, input_records, "
        "skipped, rejected, staged, superseded, inserted, updated, unchanged, stale, dead_letters, "
        "lineage_entries, source_name) "
        "VALUES ('cli', 'running', '{}', ?, ?, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?)",
        (now, now, file_path.rsplit("/", 1)[-1])).lastrowid
    params = {"run": run_id, "now": now, "wm": wm_before or ""}

    db.execute(WINNERS)
    counts["superseded"] = db.execute("SELECT count(*) FROM win WHERE pos <> winner").fetchone()[0]
    t = step("winners (window)", t)
    db.execute(OUTCOMES)
    for name in ("inserted", "updated", "unchanged", "stale"):
        counts[name] = 0
    for outcome, n in db.execute("SELECT outcome, count(*) FROM out GROUP BY outcome"):
        counts[outcome] = n
    t = step("classify (join target)", t)
    db.execute(UPSERT, params)
    t = step("upsert target", t)
    db.execute(SIGHTINGS, params)
    counts["dead_letters"] = db.execute(DEAD_LETTERS, params).rowcount
    t = step("dead letters", t)
    entries = db.execute(LINEAGE_READ, params).rowcount
    t = step("lineage: read steps", t)
    entries += db.execute(LINEAGE_SUPERSEDED, params).rowcount
    t = step("lineage: superseded", t)
    entries += db.execute(LINEAGE_OUTCOMES, params).rowcount
    t = step("lineage: outcomes", t)
    counts["lineage_entries"] = entries

    wm_after = _finish(db, run_id, now, wm_before, counts)
    t = step("watermark, run row", t)
    db.execute("COMMIT")
    t = step("commit", t)
    db.close()  # the TEMP tables go with the connection
    return {"run_id": run_id, "counts": counts, "watermark": wm_after, "steps": steps,
            "step_peak_rss_mb": peaks, "seconds": t - started, "lock_seconds": t - locked}


RUN_COUNTS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated",
              "unchanged", "stale", "dead_letters", "lineage_entries")


def _finish(db: sqlite3.Connection, run_id: int, now: str, wm_before: str | None, counts: dict) -> str | None:
    """Move the watermark to the newest ts in target (never back) and record the run; return the watermark."""
    newest = db.execute("SELECT max(ts) FROM target").fetchone()[0]
    wm_after = wm_before
    if newest is not None and (wm_before is None or newest > wm_before):
        wm_after = newest
        db.execute("INSERT INTO watermarks (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) "
                   "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                   (WATERMARK_NAME, newest, now))
        db.execute("INSERT INTO watermark_history (name, old_value, new_value, at, via, run_id) "
                   "VALUES (?, ?, ?, ?, 'pipeline', ?)", (WATERMARK_NAME, wm_before, newest, now, run_id))
    db.execute("UPDATE runs SET status = 'succeeded', finished_at = ?, watermark_before = ?, "
               f"watermark_after = ?, {', '.join(f'{name} = ?' for name in RUN_COUNTS)} WHERE id = ?",
               (now_text(), wm_before, wm_after, *(counts[name] for name in RUN_COUNTS), run_id))
    return wm_after
