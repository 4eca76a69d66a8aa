"""Benchmark a 12-field dataset: Sluice's pipeline against a hand-written sqlite3 floor (SPEC §10).

    python bench/dataset.py [--records N] [--runs A|AB] [--only pipeline|floor] [--keep]
                            [--database-url postgresql://…]

The records (bench/make_dataset_records.py: strings, numbers, an integer, a boolean, timestamps and
a json field; 20 % repeated keys, 5 % invalid) are generated once and cached in bench/out/. Each side
gets a fresh SQLite database with Sluice's schema and the dataset `orders` made by
`app.datasets.registry.create_dataset`, so both write the same `ds_orders` table with the same
indexes. Run A loads file A into the empty database; run B loads file B (another seed, four days
later) on top of it: about two thirds skipped by the watermark, the rest updates and new keys.
Every run executes in a process of its own, so that its peak RSS is its own.
"""
import argparse
import gc
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from make_dataset_records import SHAPE
from pipeline import COUNTS, code_version, compare, cpu_seconds, in_child, peak_rss_mb, rate, remove_database

OUT = HERE / "out"
GENERATOR = HERE / "make_dataset_records.py"
NAME = "orders"
TABLE = f"ds_{NAME}"
WATERMARK = f"{NAME}_{SHAPE['version']}"
FILES = {"A": ["--seed", "42"], "B": ["--seed", "7", "--start", "2024-01-05T00:00:00"]}
DESCRIBE = {"A": "file A, empty database", "B": "file B, on top of A"}
KEY, VERSION = SHAPE["key"], SHAPE["version"]
PAYLOAD = tuple(f["name"] for f in SHAPE["fields"])
COLUMNS = (KEY, *PAYLOAD, VERSION)  # staging order: key, payload fields, version


def records_file(n: int, run: str) -> Path:
    """The cached input file of run A or B with n records, generated when missing."""
    path = OUT / f"dataset-records-{n}-{run.lower()}.json"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        print(f"generating {path.name} ({n:,} records) …", flush=True)
        subprocess.run([sys.executable, str(GENERATOR), "--records", str(n), "--out", str(tmp), *FILES[run]],
                       check=True)
        tmp.rename(path)
    return path


# -- databases -----------------------------------------------------------------------------------

def fresh_database(url: str) -> None:
    """A new database at `url` with Sluice's schema (its migrations) and the dataset `orders`."""
    from sqlalchemy.engine import make_url

    from app.database import make_engine
    from app.datasets.registry import create_dataset
    from app.schema import upgrade

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        remove_database(Path(parsed.database))
    else:
        _recreate_postgres_database(url)
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        create_dataset(conn, NAME, SHAPE, title="Orders", description="12-field benchmark dataset")
    engine.dispose()


def _recreate_postgres_database(url: str) -> None:
    """Drop and create the benchmark's own PostgreSQL database (never the one the URL names)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    admin.dispose()


def bench_postgres_url(url: str) -> str:
    """The URL of the benchmark's own database on the server that `url` names."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database="sluice_bench_dataset").render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Remove a benchmark database (a SQLite file and its WAL, or the PostgreSQL database)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        remove_database(Path(parsed.database))
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    admin.dispose()


def database_state(url: str) -> dict:
    """What the loads left in the database, to check that the pipeline and the floor agree."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    digest = hashlib.blake2b(digest_size=16)
    rows = 0
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    with engine.connect() as conn:
        sql = conn.exec_driver_sql
        for row in sql(f'SELECT {names} FROM "{TABLE}" ORDER BY "{KEY}"'):
            # Booleans come back as 0/1 from SQLite and as bool from PostgreSQL.
            values = [int(v) if isinstance(v, bool) else v for v in row]
            digest.update("\x1f".join(map(repr, values)).encode() + b"\n")
            rows += 1
        where = f"WHERE dataset = '{NAME}'"
        watermark = sql(f"SELECT value FROM watermarks WHERE name = '{WATERMARK}'").fetchone()
        state = {
            "target_rows": rows,
            "target_digest": digest.hexdigest(),
            "lineage": dict(sql(f"SELECT step, count(*) FROM lineage {where} GROUP BY step ORDER BY step").all()),
            "lineage_linked_to_dead_letters": sql(
                f"SELECT count(*) FROM lineage {where} AND dead_letter_id IS NOT NULL").scalar(),
            "dead_letters": dict(sql(f"SELECT status, count(*) FROM dead_letters {where} GROUP BY status "
                                     "ORDER BY status").all()),
            "dead_letter_errors": dict(sql(f"SELECT error, count(*) FROM dead_letters {where} GROUP BY error "
                                           "ORDER BY error").all()),
            "watermark": watermark[0] if watermark else None,
        }
    engine.dispose()
    return state


# -- the pipeline side ---------------------------------------------------------------------------

def pipeline_child(url: str, file_path: str) -> dict:
    """Run Sluice's pipeline on one file into the dataset; time its phases."""
    from app.database import make_engine
    from app.pipeline.run import read_run, run_file

    rss_before = peak_rss_mb()
    engine = make_engine(url)
    phases: list[tuple[str, float]] = []
    rss_at: list[float] = []

    def progress(phase: str, records: int, nbytes: int) -> None:
        if not phases or phases[-1][0] != phase:
            phases.append((phase, time.perf_counter()))
            rss_at.append(peak_rss_mb())

    with engine.connect() as conn:
        load = os.getloadavg()[0]
        cpu = cpu_seconds()
        started = time.perf_counter()
        summary = run_file(conn, file_path, kind="cli", progress=progress, dataset=NAME)
        finished = time.perf_counter()
        cpu = cpu_seconds() - cpu
        rss = peak_rss_mb()
        lock_seconds = read_run(conn, summary["run_id"]).lock_seconds
    engine.dispose()

    marks = [("hashing the file, creating the run", started), *phases, ("(end)", finished)]
    peaks = [rss_before, *rss_at, rss]
    phase_seconds, phase_rss = {}, {}
    for (name, at), (_next, until), peak in zip(marks, marks[1:], peaks[1:], strict=False):
        phase_seconds[name] = phase_seconds.get(name, 0.0) + until - at
        phase_rss[name] = peak
    return {"seconds": finished - started, "cpu_seconds": cpu, "load_average": load,
            "phases": phase_seconds, "phase_peak_rss_mb": phase_rss, "lock_seconds": lock_seconds,
            "peak_rss_mb": rss, "rss_after_imports_mb": rss_before, "code": code_version(),
            "counts": {k: summary[k] for k in COUNTS}, "watermark": summary["watermark"],
            "state": database_state(url)}


# -- the floor -----------------------------------------------------------------------------------
# Plain sqlite3 and SQL written for this one shape: parse the whole file with orjson (the cyclic GC
# off), validate with the same rules (an inline fast path; the rule-by-rule checks only for the
# records it refuses), stage in TEMP tables, then in-run winner, outcome, one upsert with the stale
# guard, dead letters and lineage by INSERT … SELECT, watermark and run row, in one transaction.

# The connection settings of Sluice's engine and of its run (app/database.py, app/pipeline/run.py).
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON",
           "PRAGMA temp_store = FILE", "PRAGMA cache_size = -65536")

STAGE = ("CREATE TEMP TABLE stage (pos INTEGER PRIMARY KEY, id TEXT NOT NULL, customer TEXT NOT NULL, "
         "email TEXT NOT NULL, country TEXT NOT NULL, total REAL NOT NULL, quantity INTEGER NOT NULL, "
         "discount REAL, paid INTEGER NOT NULL, shipped_at TEXT, notes TEXT, attrs TEXT, "
         "updated_at TEXT NOT NULL)")
REJECT = ("CREATE TEMP TABLE reject (pos INTEGER PRIMARY KEY, key TEXT, error TEXT NOT NULL, "
          "detail TEXT NOT NULL, raw TEXT NOT NULL, fp TEXT NOT NULL)")
SKIP = "CREATE TEMP TABLE skip (pos INTEGER PRIMARY KEY, key TEXT, version TEXT NOT NULL)"

# The latest updated_at wins, a tie goes to the later record.
WINNERS = ("CREATE TEMP TABLE win AS SELECT pos, id, "
           "FIRST_VALUE(pos) OVER (PARTITION BY id ORDER BY updated_at DESC, pos DESC) AS winner FROM stage")

_NUMBER = ("CASE WHEN {0} IS NULL THEN 'null' WHEN {0} = CAST({0} AS INTEGER) "
           "THEN CAST(CAST({0} AS INTEGER) AS TEXT) ELSE CAST({0} AS TEXT) END")
_SHOW = {  # how an `updated` detail writes a value of each column, as describe_update does
    "customer": "quote({0})", "email": "quote({0})", "country": "quote({0})", "notes": "quote({0})",
    "total": _NUMBER, "discount": _NUMBER, "quantity": "COALESCE(CAST({0} AS TEXT), 'null')",
    "paid": "CASE {0} WHEN 1 THEN 'true' WHEN 0 THEN 'false' ELSE 'null' END",
    "shipped_at": "COALESCE({0}, 'null')", "attrs": "COALESCE({0}, 'null')", "updated_at": "{0}",
}
_SAME = " AND ".join(f"s.{c} IS t.{c}" for c in (*PAYLOAD, VERSION))
_CHANGES = " || ".join(
    f"CASE WHEN s.{c} IS NOT t.{c} THEN '; {c}: ' || {_SHOW[c].format('t.' + c)} || ' → ' "
    f"|| {_SHOW[c].format('s.' + c)} ELSE '' END" for c in (*PAYLOAD, VERSION))
# Each winner's outcome against the stored row, in key order (the upsert and lineage inserts then
# touch each index in order).
OUTCOMES = (f"CREATE TEMP TABLE out AS SELECT s.*, CASE WHEN t.id IS NULL THEN 'inserted' "
            f"WHEN s.updated_at < t.updated_at THEN 'stale' WHEN {_SAME} THEN 'unchanged' "
            f"ELSE 'updated' END AS outcome, t.updated_at AS old_version, "
            f"CASE WHEN t.id IS NOT NULL AND s.updated_at >= t.updated_at THEN substr({_CHANGES}, 3) END AS changes "
            f"FROM win w JOIN stage s ON s.pos = w.pos LEFT JOIN {TABLE} t ON t.id = s.id "
            "WHERE w.pos = w.winner ORDER BY s.id")

_COLS = ", ".join(COLUMNS)
UPSERT = (f"INSERT INTO {TABLE} ({_COLS}, sluice_updated_at, sluice_run_id) "
          f"SELECT {_COLS}, :now, :run FROM out WHERE outcome IN ('inserted', 'updated') "
          f"ON CONFLICT (id) DO UPDATE SET "
          + ", ".join(f"{c} = excluded.{c}" for c in (*PAYLOAD, VERSION, "sluice_updated_at", "sluice_run_id"))
          + f" WHERE excluded.updated_at >= {TABLE}.updated_at")


def _sql(ds: bool) -> dict:
    """The floor's statements that name the dataset, with or without the `dataset` columns."""
    col, val, where = ("dataset, ", f"'{NAME}', ", f"d.dataset = '{NAME}' AND ") if ds else ("", "", "")
    lineage = f"INSERT INTO lineage ({col}run_id, pos, key, step, at, detail, dead_letter_id) "
    return {
        "sightings": ("UPDATE dead_letters AS d SET sightings = sightings + c.n, last_run_id = :run, "
                      "updated_at = :now FROM (SELECT fp, count(*) AS n FROM reject GROUP BY fp) AS c "
                      f"WHERE {where}d.fingerprint = c.fp AND d.status = 'open'"),
        "dead_letters": (
            f"INSERT INTO dead_letters ({col}run_id, last_run_id, pos, key, error, detail, raw, fingerprint, "
            "status, created_at, updated_at, attempts, sightings) "
            f"SELECT {val}:run, :run, r.pos, r.key, r.error, r.detail, r.raw, r.fp, 'open', :now, :now, 0, c.n "
            "FROM reject r JOIN (SELECT fp, min(pos) AS pos, count(*) AS n FROM reject GROUP BY fp) AS c "
            f"ON r.pos = c.pos WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE {where}"
            "d.fingerprint = r.fp AND d.status = 'open') ORDER BY r.pos"),
        "staged": (lineage + f"SELECT {val}:run, pos, id, 'staged', :now, 'valid; {VERSION} ' || updated_at, "
                   "NULL FROM stage ORDER BY id, updated_at, pos"),
        "skipped": (lineage + f"SELECT {val}:run, pos, COALESCE(key, ''), 'skipped', :now, "
                    f"'{VERSION} ' || version || ' is older than the watermark ' || :wm, NULL "
                    "FROM skip ORDER BY key, pos"),
        "rejected": (lineage + f"SELECT {val}:run, r.pos, COALESCE(r.key, ''), 'rejected', :now, "
                     "r.error || ': ' || r.detail, (SELECT min(d.id) FROM dead_letters d "
                     f"WHERE {where}d.fingerprint = r.fp AND d.status = 'open') FROM reject r ORDER BY r.key, r.pos"),
        "superseded": (lineage + f"SELECT {val}:run, pos, id, 'superseded', :now, "
                       "'superseded by the record at position ' || winner || ' of this run', NULL "
                       "FROM win WHERE pos <> winner ORDER BY id, pos"),
        "outcomes": (lineage + f"SELECT {val}:run, pos, id, outcome, :now, CASE outcome "
                     "WHEN 'inserted' THEN 'new key' WHEN 'unchanged' THEN 'same fields and version as the "
                     f"stored row' WHEN 'stale' THEN '{VERSION} ' || updated_at || ' is older than the stored "
                     f"{VERSION} ' || old_version || '; stored row kept' ELSE changes END, NULL FROM out"),
    }


def floor_validator():
    """The floor's record rules for this shape: (validate(record, latest) -> staging row, usable_key)."""
    from app.datasets.validator import check_boolean, check_integer
    from app.pipeline.validate import (
        Invalid,
        check_not_future,
        check_number,
        check_text,
        check_timestamp,
        find_bad_char,
        missing_detail,
        not_an_object,
        parse_ts,
    )

    dumps = _orjson_text
    lo, hi = -(2 ** 63), 2 ** 63 - 1

    def required(record, name):
        detail = missing_detail(record, name)
        if detail is not None:
            raise Invalid(f"missing_{name}", detail)
        return record[name]

    def optional(record, name):
        return None if missing_detail(record, name) is not None else record[name]

    def slow(r, latest):
        """Rule by rule, in the order of the error codes; only the records the fast path refuses."""
        if not isinstance(r, dict):
            raise not_an_object(r)
        if missing_detail(r, KEY) is not None:
            raise Invalid("missing_key", missing_detail(r, KEY))
        key = check_text(r[KEY], KEY, 256, "invalid_key")
        customer = check_text(required(r, "customer"), "customer", 100, "invalid_customer")
        email = check_text(required(r, "email"), "email", 200, "invalid_email")
        country = check_text(required(r, "country"), "country", 2, "invalid_country")
        total = check_number(required(r, "total"), "total", "invalid_total")
        quantity = check_integer(required(r, "quantity"), "quantity", "invalid_quantity")
        discount = optional(r, "discount")
        discount = None if discount is None else check_number(discount, "discount", "invalid_discount")
        paid = check_boolean(required(r, "paid"), "paid", "invalid_paid")
        shipped = optional(r, "shipped_at")
        shipped = None if shipped is None else check_timestamp(shipped, "shipped_at", "invalid_shipped_at")
        notes = optional(r, "notes")
        notes = None if notes is None else check_text(notes, "notes", 1024, "invalid_notes")
        attrs = r.get("attrs")  # json: missing only when absent or null
        attrs = None if attrs is None else dumps(attrs)
        if missing_detail(r, VERSION) is not None:
            raise Invalid("missing_timestamp", missing_detail(r, VERSION))
        version = check_not_future(check_timestamp(r[VERSION], VERSION, "invalid_timestamp"), VERSION, latest)
        return (key, customer, email, country, total, quantity, discount, paid, shipped, notes, attrs, version)

    def validate(r, latest):
        if type(r) is dict:
            g = r.get
            k, c, e, co, t, q, d = g("id"), g("customer"), g("email"), g("country"), g("total"), g("quantity"), \
                g("discount")
            p, s, n, a, v = g("paid"), g("shipped_at"), g("notes"), g("attrs"), g("updated_at")
            if (type(k) is str and type(c) is str and type(e) is str and type(co) is str and type(v) is str
                    and type(p) is bool and type(q) is int and lo <= q <= hi):
                k, c, e, co = k.strip(), c.strip(), e.strip(), co.strip()
                if type(n) is str:
                    n = n.strip() or None
                text = k + c + e + co + (n or "") if n is None or type(n) is str else None
                v = parse_ts(v.strip())
                if type(s) is str:
                    s = parse_ts(s.strip()) if s.strip() else None
                    ok_s = s is not None
                else:
                    ok_s = s is None
                if type(t) is int and -1e308 < t < 1e308:
                    t = float(t)
                if d is not None and type(d) is int and -1e308 < d < 1e308:
                    d = float(d)
                if (k and c and e and co and text is not None and len(k) <= 256 and len(c) <= 100
                        and len(e) <= 200 and len(co) <= 2 and (n is None or len(n) <= 1024)
                        and not ("\x00" in text or not text.isascii() and find_bad_char(text))
                        and type(t) is float and t - t == 0 and (d is None or type(d) is float and d - d == 0)
                        and ok_s and v is not None and v <= latest):
                    return k, c, e, co, t, q, d, p, s, n, None if a is None else dumps(a), v
        return slow(r, latest)

    def usable_key(r):
        if not isinstance(r, dict) or missing_detail(r, KEY) is not None:
            return None
        try:
            return check_text(r[KEY], KEY, 256, "invalid_key")
        except Invalid:
            return None

    def version_of(r):
        v = r.get(VERSION)
        return parse_ts(v.strip()) if isinstance(v, str) else None

    return validate, usable_key, version_of, Invalid


def _orjson_text(value) -> str:
    import orjson

    return orjson.dumps(value).decode()


def floor_run(db_path: str, file_path: str, *, tolerance: timedelta = timedelta(days=1)) -> dict:
    """Load one JSON array file into the dataset's table at `db_path`; return counts and step times."""
    import orjson

    from app.pipeline.validate import canonical, now_text, utc_now

    validate, usable_key, version_of, Invalid = floor_validator()
    steps, peaks = {}, {}
    started = time.perf_counter()

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        steps[name] = steps.get(name, 0.0) + now - since
        peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return now

    t = started
    # A million parsed records are millions of tracked objects: the cyclic GC would walk them all
    # again and again while they are made (9 s instead of 3 s for orjson.loads alone). They hold
    # no cycles, so the floor turns it off, as a hand-written load would.
    gc.disable()
    with open(file_path, "rb") as f:
        records = orjson.loads(f.read())
    if isinstance(records, dict):
        records = [records]
    t = step("parse (orjson.loads)", t)

    db = sqlite3.connect(db_path, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(pragma)
    columns = [row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")]
    if set(columns) != {*COLUMNS, "sluice_updated_at", "sluice_run_id"}:
        raise RuntimeError(f"{TABLE} has columns {columns}, not the shape's")
    with_dataset = "dataset" in [row[1] for row in db.execute("PRAGMA table_info(lineage)")]
    sql = _sql(with_dataset)
    db.execute("BEGIN IMMEDIATE")
    locked = time.perf_counter()
    row = db.execute("SELECT value FROM watermarks WHERE name = ?", (WATERMARK,)).fetchone()
    wm_before = row[0] if row else None
    latest = canonical(utc_now() + tolerance)
    for statement in (STAGE, REJECT, SKIP):
        db.execute(statement)
    t = step("open, lock, watermark", t)

    counts = dict.fromkeys(COUNTS, 0)
    counts["input_records"] = len(records)
    good, bad, old = [], [], []
    insert_good = f"INSERT INTO stage VALUES ({', '.join('?' * 13)})"

    def flush():
        db.executemany(insert_good, good)
        db.executemany("INSERT INTO reject VALUES (?, ?, ?, ?, ?, ?)", bad)
        db.executemany("INSERT INTO skip VALUES (?, ?, ?)", old)
        counts["staged"] += len(good)
        counts["rejected"] += len(bad)
        counts["skipped"] += len(old)
        good.clear(), bad.clear(), old.clear()

    for i in range(len(records)):
        record, records[i] = records[i], None  # each parsed record is freed once staged
        pos = i + 1
        if wm_before is not None and type(record) is dict:
            version = version_of(record)
            if version is not None and version < wm_before:
                old.append((pos, usable_key(record), version))
                continue
        try:
            good.append((pos, *validate(record, latest)))
        except Invalid as exc:
            raw = _orjson_text(record)
            fp = hashlib.blake2b(f"{exc.code}\x1f{raw}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            bad.append((pos, usable_key(record), exc.code, exc.detail, raw, fp))
        if pos % 20_000 == 0:
            flush()
    flush()
    del records
    t = step("validate and stage (executemany)", t)

    now = now_text()
    dataset_cols = ("dataset, shape_version, ", f"'{NAME}', 1, ") if with_dataset else ("", "")
    run_id = db.execute(
        f"INSERT INTO runs ({dataset_cols[0]}kind, status, options, queued_at, started_at, cancel_requested, "
        "input_records, skipped, rejected, staged, superseded, inserted, updated, unchanged, stale, dead_letters, "
        f"lineage_entries, source_name) VALUES ({dataset_cols[1]}'cli', 'running', '{{}}', ?, ?, 0, "
        "0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?)", (now, now, file_path.rsplit("/", 1)[-1])).lastrowid
    params = {"run": run_id, "now": now, "wm": wm_before or ""}

    db.execute(WINNERS)
    counts["superseded"] = db.execute("SELECT count(*) FROM win WHERE pos <> winner").fetchone()[0]
    t = step("winners (window)", t)
    db.execute(OUTCOMES)
    for outcome, n in db.execute("SELECT outcome, count(*) FROM out GROUP BY outcome"):
        counts[outcome] = n
    t = step("classify (join the table)", t)
    db.execute(UPSERT, params)
    t = step("upsert (stale guard)", t)
    db.execute(sql["sightings"], params)
    counts["dead_letters"] = db.execute(sql["dead_letters"], params).rowcount
    t = step("dead letters", t)
    entries = 0
    for name in ("staged", "skipped", "rejected", "superseded", "outcomes"):
        entries += db.execute(sql[name], params).rowcount
        t = step(f"lineage: {name}", t)
    counts["lineage_entries"] = entries

    wm_after = _finish(db, run_id, now, wm_before, counts, with_dataset)
    t = step("watermark, run row", t)
    db.execute("COMMIT")
    t = step("commit", t)
    db.close()  # the TEMP tables go with the connection
    gc.enable()
    return {"run_id": run_id, "counts": counts, "watermark": wm_after, "steps": steps,
            "step_peak_rss_mb": peaks, "seconds": t - started, "lock_seconds": t - locked}


def _finish(db, run_id: int, now: str, wm_before: str | None, counts: dict, with_dataset: bool) -> str | None:
    """Move the watermark to the newest version in the table (never back) and record the run."""
    from app.pipeline.validate import now_text

    newest = db.execute(f"SELECT max({VERSION}) FROM {TABLE}").fetchone()[0]
    wm_after = wm_before
    col, val = ("dataset, ", f"'{NAME}', ") if with_dataset else ("", "")
    if newest is not None and (wm_before is None or newest > wm_before):
        wm_after = newest
        db.execute(f"INSERT INTO watermarks ({col}name, value, updated_at) VALUES ({val}?, ?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                   (WATERMARK, newest, now))
        db.execute(f"INSERT INTO watermark_history ({col}name, old_value, new_value, at, via, run_id) "
                   f"VALUES ({val}?, ?, ?, ?, 'pipeline', ?)", (WATERMARK, wm_before, newest, now, run_id))
    db.execute("UPDATE runs SET status = 'succeeded', finished_at = ?, watermark_before = ?, watermark_after = ?, "
               + ", ".join(f"{name} = ?" for name in COUNTS) + " WHERE id = ?",
               (now_text(), wm_before, wm_after, *(counts[name] for name in COUNTS), run_id))
    return wm_after


def floor_child(db_path: str, file_path: str) -> dict:
    """Run the floor on one file, in a process of its own."""
    rss_before = peak_rss_mb()
    load = os.getloadavg()[0]
    cpu = cpu_seconds()
    result = floor_run(db_path, file_path)
    result["cpu_seconds"] = cpu_seconds() - cpu
    result["load_average"] = load
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_after_imports_mb"] = rss_before
    result["state"] = database_state(f"sqlite:///{db_path}")
    return result


# -- report --------------------------------------------------------------------------------------

def print_result(side: str, run: str, r: dict) -> None:
    n = r["counts"]["input_records"]
    print(f"\n== {side}, run {run}: {r['seconds']:.1f} s, {rate(n, r['seconds'])} records/s, "
          f"peak RSS {r['peak_rss_mb']:.0f} MiB (after imports {r['rss_after_imports_mb']:.0f} MiB), "
          f"CPU {r['cpu_seconds']:.1f} s, load average {r['load_average']:.1f}"
          + (f", write lock {r['lock_seconds']:.2f} s (runs.lock_seconds)" if side == "pipeline" else
             f", one transaction held {r['lock_seconds']:.2f} s"))
    if side == "pipeline":
        code = r["code"]
        print(f"   code: commit {code['commit']}, app/ digest {code['app_digest']}"
              + (f", uncommitted: {', '.join(code['uncommitted_in_app'])}" if code["uncommitted_in_app"] else ""))
    print("   counts: " + ", ".join(f"{k} {v:,}" for k, v in r["counts"].items()))
    times, rss = (r["phases"], r["phase_peak_rss_mb"]) if side == "pipeline" else (r["steps"], r["step_peak_rss_mb"])
    print(f"   {'phase' if side == 'pipeline' else 'step':38} {'seconds':>8} {'peak RSS MiB':>12}")
    for name, seconds in times.items():
        print(f"   {name:38} {seconds:8.2f} {rss[name]:12.0f}")


def markdown(results: dict) -> str:
    """The results as a Markdown table (the README's)."""
    lines = [("| run | records | skipped / rejected / inserted / updated / unchanged / stale / superseded "
              "| pipeline s | records/s | pipeline peak RSS MiB | floor s | records/s | floor peak RSS MiB "
              "| ratio (wall) | ratio (CPU) |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total = {"pipeline": [0.0, 0.0], "floor": [0.0, 0.0]}
    for run in results["runs"]:
        p, f = results["pipeline"].get(run), results["floor"].get(run)
        c = (p or f)["counts"]
        n = c["input_records"]
        mix = " / ".join(f"{c[k]:,}" for k in ("skipped", "rejected", "inserted", "updated", "unchanged",
                                               "stale", "superseded"))
        cells = [f"{run} ({DESCRIBE[run]})", f"{n:,}", mix]
        for r, side in ((p, "pipeline"), (f, "floor")):
            cells += [f"{r['seconds']:.1f}", rate(n, r["seconds"]), f"{r['peak_rss_mb']:.0f}"] if r else ["-"] * 3
            if r:
                total[side][0] += r["seconds"]
                total[side][1] += r["cpu_seconds"]
        cells.append(f"{p['seconds'] / f['seconds']:.2f}" if p and f else "-")
        cells.append(f"{p['cpu_seconds'] / f['cpu_seconds']:.2f}" if p and f else "-")
        lines.append("| " + " | ".join(cells) + " |")
    (ps, pc), (fs, fc) = total["pipeline"], total["floor"]
    if len(results["runs"]) > 1 and ps and fs:
        n = sum((results["pipeline"].get(r) or results["floor"][r])["counts"]["input_records"]
                for r in results["runs"])
        lines.append(f"| {' + '.join(results['runs'])} | {n:,} | | {ps:.1f} | {rate(n, ps)} | | {fs:.1f} | "
                     f"{rate(n, fs)} | | {ps / fs:.2f} | {pc / fc:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per file (default 1,000,000)")
    parser.add_argument("--runs", choices=("A", "AB"), default="AB", help="run A only, or A then B (default)")
    parser.add_argument("--only", choices=("pipeline", "floor"), help="run one side only")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--database-url", help="run the pipeline side on this PostgreSQL server instead (in a "
                                               "database of its own, sluice_bench_dataset, dropped and made anew)")
    args = parser.parse_args()
    n = args.records
    runs = list(args.runs)
    files = {run: records_file(n, run) for run in runs}
    sides = [args.only] if args.only else ["pipeline", "floor"]
    if args.database_url and "floor" in sides:
        print("(the floor runs on SQLite; the pipeline on PostgreSQL)", flush=True)
    urls = {"pipeline": bench_postgres_url(args.database_url) if args.database_url
            else f"sqlite:///{OUT / f'dataset-pipeline-{n}.db'}",
            "floor": f"sqlite:///{OUT / f'dataset-floor-{n}.db'}"}
    results: dict = {"records": n, "runs": runs, "database": "postgresql" if args.database_url else "sqlite",
                     "pipeline": {}, "floor": {},
                     "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                 "sqlite": sqlite3.sqlite_version, "load_average": os.getloadavg()}}
    for side in sides:
        fresh_database(urls[side])
    # Interleaved (run A on each side, then B): on a shared machine both terms of a ratio see about
    # the same load.
    for run in runs:
        for side in sides:
            print(f"{side}: run {run} ({files[run].name}) …", flush=True)
            if side == "pipeline":
                result = in_child(pipeline_child, urls[side], str(files[run]))
            else:
                result = in_child(floor_child, urls[side].removeprefix("sqlite:///"), str(files[run]))
            results[side][run] = result
            print_result(side, run, result)
    if not args.keep:
        for side in sides:
            drop_database(urls[side])

    problems = compare(results)
    if not args.only:
        print("\n== pipeline / floor")
        for run in runs:
            p, f = results["pipeline"][run], results["floor"][run]
            print(f"   run {run}: wall {p['seconds']:.1f} / {f['seconds']:.1f} s = {p['seconds'] / f['seconds']:.2f}, "
                  f"CPU {p['cpu_seconds']:.1f} / {f['cpu_seconds']:.1f} s = {p['cpu_seconds'] / f['cpu_seconds']:.2f}, "
                  f"peak RSS {p['peak_rss_mb']:.0f} / {f['peak_rss_mb']:.0f} MiB")
        print("   the floor and the pipeline agree on every count and on the database they leave"
              if not problems else "   DIFFERENCES:\n   " + "\n   ".join(problems))
    print("\n" + markdown(results))
    OUT.mkdir(parents=True, exist_ok=True)
    name = (f"dataset-results-{n}-{args.runs.lower()}{'-' + args.only if args.only else ''}"
            f"{'-postgresql' if args.database_url else ''}.json")
    (OUT / name).write_text(json.dumps(results, indent=1))
    print(f"\n(results saved to {(OUT / name).relative_to(ROOT)})")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
