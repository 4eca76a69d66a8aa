"""Benchmark the dashboard's pages against Datasette on the same SQLite file.

Builds (once) a database with 1M target rows, 2M+ lineage entries, 50k dead letters and 1k runs,
then measures each page's server time (p50 / p95 over repeated requests through the Flask test
client) and, in the same run, Datasette's table page and its keyset page (`?_next=`) through
Datasette's own in-process client.

    /work/venv/bin/python bench/pages.py [--db /tmp/sluice-bench.db] [--repeat 30] [--rebuild]
"""
import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import make_engine
from app.queries import encode_cursor
from app.schema import upgrade

TARGET_ROWS = 1_000_000
RUNS = 1_000
DEAD_LETTERS = 50_000
BATCH = 50_000
WORDS = ["signup", "login", "logout", "purchase", "refund", "view", "click", "search", "share", "invite",
         "upgrade", "downgrade", "cancel", "renew", "comment", "like", "follow", "report", "export", "import"]
PREFIXES = ["user", "order", "evt", "sku", "sess"]
ERRORS = ["missing_key", "invalid_key", "missing_name", "invalid_name", "missing_value", "invalid_value",
          "missing_timestamp", "invalid_timestamp", "future_timestamp", "malformed_json", "not_an_object"]


def _ts(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_600_000_000 + seconds))


def key_of(i: int) -> str:
    """The i-th generated key: a few prefixes, spread over the key space."""
    return f"{PREFIXES[i % len(PREFIXES)]}-{(i * 7919) % TARGET_ROWS:07d}"


def build(path: Path) -> None:
    """Create the schema with the migrations, then fill the tables with executemany."""
    if path.exists():
        path.unlink()
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    rnd = random.Random(42)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -400000")
    per_run = TARGET_ROWS // RUNS
    started = time.perf_counter()
    db.executemany(
        "INSERT INTO runs (id, kind, status, source_name, source_size, source_sha256, options, queued_at, started_at,"
        " finished_at, applied_seq, cancel_requested, input_records, skipped, rejected, staged, superseded, inserted,"
        " updated, unchanged, stale, dead_letters, lineage_entries, watermark_before, watermark_after)"
        " VALUES (?, 'upload', 'succeeded', ?, ?, ?, '{}', ?, ?, ?, ?, 0, ?, 0, ?, ?, 0, ?, 0, 0, 0, ?, ?, ?, ?)",
        [(r, f"batch-{r:04d}.jsonl", 120_000, f"{r:064x}", _ts(r * 3600), _ts(r * 3600 + 1), _ts(r * 3600 + 30), r,
          per_run + DEAD_LETTERS // RUNS, DEAD_LETTERS // RUNS, per_run, per_run, DEAD_LETTERS // RUNS,
          2 * per_run + DEAD_LETTERS // RUNS, _ts((r - 1) * 3600) if r > 1 else None, _ts(r * 3600))
         for r in range(1, RUNS + 1)])
    db.commit()

    def target_rows(start, stop):
        for i in range(start, stop):
            run = i // per_run + 1
            yield (key_of(i), f"{WORDS[rnd.randrange(len(WORDS))]} {rnd.randrange(1000)}",
                   round(rnd.uniform(-1000, 100_000), 2), _ts(rnd.randrange(RUNS * 3600)), _ts(run * 3600 + 30), run)

    for start in range(0, TARGET_ROWS, BATCH):
        db.executemany("INSERT INTO target (key, name, value, ts, updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?)",
                       target_rows(start, min(start + BATCH, TARGET_ROWS)))
    db.commit()
    print(f"target: {time.perf_counter() - started:.0f}s", file=sys.stderr)

    def lineage_rows(start, stop):
        for i in range(start, stop):
            run, pos = i // per_run + 1, i % per_run + 1
            key, at = key_of(i), _ts(run * 3600 + 30)
            yield (run, pos, key, "staged", at, "valid; ts ...", None)
            yield (run, pos, key, "inserted", at, "new key", None)

    for start in range(0, TARGET_ROWS, BATCH):
        db.executemany("INSERT INTO lineage (run_id, pos, key, step, at, detail, dead_letter_id)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", lineage_rows(start, min(start + BATCH, TARGET_ROWS)))
    db.commit()
    print(f"lineage: {time.perf_counter() - started:.0f}s", file=sys.stderr)

    def letters():
        for d in range(1, DEAD_LETTERS + 1):
            run = (d - 1) // (DEAD_LETTERS // RUNS) + 1
            error = ERRORS[rnd.randrange(len(ERRORS))]
            status = "open" if d % 5 else ("resolved" if d % 10 else "discarded")
            raw = f'{{"key": "bad-{d}", "name": "x", "value": "abc", "ts": "2025-01-01T00:00:00Z"}}'
            yield (d, run, run, per_run + d % 50, f"bad-{d}", error, f"{error} detail", raw, f"{d:064x}", status,
                   _ts(run * 3600 + 30), _ts(run * 3600 + 30), 0, 1)

    db.executemany("INSERT INTO dead_letters (id, run_id, last_run_id, pos, key, error, detail, raw, fingerprint,"
                   " status, created_at, updated_at, attempts, sightings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   letters())
    db.executemany("INSERT INTO lineage (run_id, pos, key, step, at, detail, dead_letter_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [((d - 1) // (DEAD_LETTERS // RUNS) + 1, per_run + d % 50, f"bad-{d}", "rejected", _ts(0), "rejected", d)
                    for d in range(1, DEAD_LETTERS + 1)])
    db.execute("INSERT INTO watermarks (name, value, updated_at) VALUES ('events_ts', ?, ?)",
               (_ts(RUNS * 3600), _ts(RUNS * 3600)))
    db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()
    print(f"built {path} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 of a list of seconds, in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def _signed_in(app):
    """A test client with the session of a viewer `bench` (made once in the file): every page needs one."""
    from app.accounts.actor import Actor
    from app.accounts.users import create_user, get_by_name
    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        user = get_by_name(conn, "bench") or create_user(conn, "bench", "viewer", Actor(label="bench"),
                                                         password="bench pages password")
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = user.session_id()
        session["_fresh"] = True
    return client


def measure_sluice(path: Path, repeat: int) -> list[tuple[str, float, float]]:
    """Each Sluice page's p50 / p95 through the Flask test client."""
    os.environ["SLUICE_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="sluice-bench-")
    from app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "SECRET_KEY": "bench",
                      "SLUICE_EMBEDDED_WORKER": False,
                      "SLUICE_UPLOAD_DIR": os.path.join(os.environ["SLUICE_INSTANCE_PATH"], "uploads")})
    db = sqlite3.connect(path)
    middle_key = db.execute("SELECT key FROM target ORDER BY key LIMIT 1 OFFSET ?", (TARGET_ROWS // 2,)).fetchone()[0]
    middle_ts = db.execute("SELECT ts, key FROM target ORDER BY ts, key LIMIT 1 OFFSET ?",
                           (TARGET_ROWS // 2,)).fetchone()
    db.close()
    pages = [
        ("target: first page", "/target"),
        ("target: middle page (keyset)", "/target?" + urlencode({"cursor": encode_cursor([middle_key])})),
        ("target: last page", "/target?last=1"),
        ("target: key prefix search", "/target?key=order-00042"),
        ("target: name prefix search", "/target?name=refund+12&sort=name"),
        ("target: common key prefix, sort by ts", "/target?key=order&sort=ts"),
        ("target: common name prefix, value desc, last", "/target?name=r&sort=value&desc=1&last=1"),
        ("target: sort by ts", "/target?sort=ts"),
        ("target: sort by ts, middle", "/target?" + urlencode({"sort": "ts", "cursor": encode_cursor(middle_ts)})),
        ("target: sort by value desc", "/target?sort=value&desc=1"),
        ("target: sort by updated, last", "/target?sort=updated&last=1"),
        ("dead letters: open, invalid_value", "/dead-letters?status=open&error=invalid_value"),
        ("dead letters: run 500", "/dead-letters?status=all&run=500"),
        ("lineage page", "/lineage/" + quote(key_of(123_456))),
        ("runs page", "/runs"),
        ("runs: kind and status filter", "/runs?kind=upload&status=succeeded"),
        # A week of the runs' days (they are hourly from the first _ts): the per-day chart has 8 days of data.
        ("runs: date range, per-day chart", f"/runs?from={_ts(200 * 3600)[:10]}&to={_ts(368 * 3600)[:10]}"),
        ("run page", "/runs/500"),
        ("home", "/"),
    ]
    client = _signed_in(app)
    results = []
    for label, url in pages:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = client.get(url)
            response.get_data()
            samples.append(time.perf_counter() - t0)
        results.append((label, *percentiles(samples)))
    return results


def measure_datasette(path: Path, repeat: int) -> list[tuple[str, float, float]]:
    """Datasette's table page and keyset page on the same file, through its in-process client."""
    from datasette.app import Datasette

    name = path.stem
    db = sqlite3.connect(path)
    middle_key = db.execute("SELECT key FROM target ORDER BY key LIMIT 1 OFFSET ?", (TARGET_ROWS // 2,)).fetchone()[0]
    db.close()
    # Its default 1 s SQL time limit would interrupt the prefix search: let every query finish.
    ds = Datasette(files=[str(path)], settings={"sql_time_limit_ms": 60_000})
    pages = [
        ("datasette: table page", f"/{name}/target"),
        ("datasette: keyset page (?_next=)", f"/{name}/target?_next={quote(middle_key)}"),
        ("datasette: table page, _size=50", f"/{name}/target?_size=50"),
        ("datasette: keyset page, _size=50", f"/{name}/target?_size=50&_next={quote(middle_key)}"),
        ("datasette: key prefix (startswith)", f"/{name}/target?key__startswith=order-00042"),
    ]

    async def run():
        await ds.invoke_startup()
        results = []
        for label, url in pages:
            statuses = set()
            samples = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                response = await ds.client.get(url)
                _ = response.text
                samples.append(time.perf_counter() - t0)
                statuses.add(response.status_code)
            if statuses != {200}:  # e.g. its 1 s SQL time limit interrupted the query
                label += f" (HTTP {', '.join(map(str, sorted(statuses)))})"
            results.append((label, *percentiles(samples[1:])))
        return results

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="/tmp/sluice-bench.db", type=Path)
    parser.add_argument("--repeat", default=30, type=int)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    if args.rebuild or not args.db.exists():
        build(args.db)
    sluice = measure_sluice(args.db, args.repeat)
    datasette = measure_datasette(args.db, args.repeat)
    keyset_p95 = next(p95 for label, _, p95 in datasette if label == "datasette: keyset page (?_next=)")
    print(f"| page | p50 ms | p95 ms | p95 <= Datasette keyset p95 ({keyset_p95:.1f} ms) |")
    print("|---|---:|---:|---|")
    for label, p50, p95 in sluice:
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {'yes' if p95 <= keyset_p95 else 'NO'} |")
    for label, p50, p95 in datasette:
        print(f"| {label} | {p50:.1f} | {p95:.1f} | |")


if __name__ == "__main__":
    main()
