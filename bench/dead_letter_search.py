"""Benchmark dead-letter search (issue 11): pages by text, key prefix and error, and the per-status counts.

Builds N dead letters (default 1M: realistic raw JSON of ~100-300 bytes, several error codes, mostly
open) on a fresh SQLite file in a temp dir and, with `--database-url`, in a fresh PostgreSQL
database on that server (dropped afterwards); then times each query through `app.queries` (the
functions the page and the API call) and prints p50 / p95 / max in ms.

    /work/main/.venv/bin/python bench/dead_letter_search.py [--rows 1000000] [--repeat 50]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--only postgresql]
"""
import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import queries
from app.database import make_engine
from app.schema import upgrade

BATCH = 50_000
COMMON = ["signup", "purchase", "refund", "checkout", "session", "mobile", "desktop", "banner", "invite",
          "renewal"]
PREFIXES = ["user", "order", "evt", "sku", "sess"]
ERRORS = ["invalid_value", "missing_name", "invalid_timestamp", "missing_key", "future_timestamp",
          "malformed_json", "invalid_name"]
STATUSES = ["open"] * 90 + ["resolved"] * 7 + ["discarded"] * 3
RARE_EVERY = 20_000  # one row in this many holds one of the rare words (each rare word in ~5 rows)


def _rare_word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(9))


def rows(n: int, seed: int = 11):
    """The dead letters, in batches of dicts; also returns the rare words used."""
    rng = random.Random(seed)
    rare = [_rare_word(rng) for _ in range(max(1, n // (RARE_EVERY * 5)) * 5)]
    batch = []
    for i in range(1, n + 1):
        key = f"{rng.choice(PREFIXES)}-{rng.randrange(200_000)}"
        words = rng.sample(COMMON, 3)
        if i % RARE_EVERY == 0:
            words.append(rare[(i // RARE_EVERY) % len(rare)])
        record = {"key": key, "name": " ".join(words), "value": rng.choice([rng.random() * 1000, "n/a", None]),
                  "ts": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
                  "source": rng.choice(["web", "ios", "android", "batch"]), "seq": i}
        error = rng.choice(ERRORS)
        batch.append({"id": i, "run_id": 1 + i // 100_000, "pos": i, "key": key, "error": error,
                      "detail": f"{error.replace('_', ' ')}: field {rng.choice(['name', 'value', 'ts'])}",
                      "raw": json.dumps(record), "fp": f"{i:064x}", "status": rng.choice(STATUSES)})
        if len(batch) == BATCH:
            yield batch, rare
            batch = []
    if batch:
        yield batch, rare


INSERT = text("INSERT INTO dead_letters (id, dataset, run_id, last_run_id, pos, line, key, error, detail, raw, "
              "fingerprint, status, created_at, updated_at, attempts, sightings) VALUES (:id, 'events', :run_id, "
              ":run_id, :pos, :pos, :key, :error, :detail, :raw, :fp, :status, '2025-06-01T00:00:00', "
              "'2025-06-01T00:00:00', 0, 1)")


def build(engine, n: int) -> list[str]:
    """Migrate and fill the database (the migration's triggers or indexes keep the search index)."""
    upgrade(engine)
    started = time.perf_counter()
    pg = engine.dialect.name == "postgresql"
    rare: list[str] = []
    with engine.connect() as conn:
        trgm = [r[0] for r in conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'ix_dead_letters_trgm_%%'")] if pg else []
        for definition in trgm:  # GIN indexes build faster once than row by row
            conn.exec_driver_sql(f"DROP INDEX {definition.split()[2]}")
        # SQLite: the FTS5 table likewise, filled once by 'rebuild' instead of by its triggers row by row.
        triggers = [] if pg else list(conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'dead_letters_fts_%'"))
        for name, _ in triggers:
            conn.exec_driver_sql(f'DROP TRIGGER "{name}"')
        for batch, rare in rows(n):
            conn.execute(INSERT, batch)
        for definition in trgm:
            conn.exec_driver_sql(definition)
        if triggers:
            conn.exec_driver_sql("INSERT INTO dead_letters_fts (dead_letters_fts) VALUES ('rebuild')")
        for _, definition in triggers:
            conn.exec_driver_sql(definition)
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    if pg:
        # What autovacuum does to a table after many inserts: it sets the visibility map, without which
        # the counts' index-only scans visit the table's pages too.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM dead_letters")
    print(f"{engine.dialect.name}: built {n:,} dead letters in {time.perf_counter() - started:.0f} s", flush=True)
    return rare


def measure(engine, rare: list[str], repeat: int) -> dict:
    """ms per call of each query, `repeat` times with varied arguments."""
    rng = random.Random(5)
    cases = {
        "rare term": lambda: {"text": rng.choice(rare)},
        "common term": lambda: {"text": rng.choice(COMMON)},
        "key prefix": lambda: {"key_prefix": f"{rng.choice(PREFIXES)}-{rng.randrange(1, 200)}"},
        "text + error": lambda: {"text": rng.choice(COMMON), "error": rng.choice(ERRORS)},
        "rare + open": lambda: {"text": rng.choice(rare), "status": "open"},
    }
    found = {}
    with engine.connect() as conn:
        for name, args in cases.items():
            times = []
            for _ in range(repeat):
                a = args()
                t = time.perf_counter()
                page = queries.dead_letters_page(conn, "events", **a)
                times.append((time.perf_counter() - t) * 1000)
                if page["next"]:  # the second page too: a search pages through
                    t = time.perf_counter()
                    queries.dead_letters_page(conn, "events", cursor=page["next"], **a)
                    times.append((time.perf_counter() - t) * 1000)
            found[f"page: {name}"] = times
        for label, status in (("first page + counts", None), ("first page + counts, open", "open")):
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                queries.dead_letters_page(conn, "events", status=status)
                queries.dead_letter_tallies(conn, "events", status=status)
                times.append((time.perf_counter() - t) * 1000)
            found[label] = times
        for label, args in (("counts: rare term", cases["rare term"]), ("counts: common term", cases["common term"])):
            times = []
            for _ in range(max(5, repeat // 10)):
                a = args()
                t = time.perf_counter()
                queries.dead_letter_tallies(conn, "events", status="open", text=a["text"])
                times.append((time.perf_counter() - t) * 1000)
            found[label] = times
    return found


def report(db: str, found: dict) -> None:
    print(f"\n{db}: ms per query")
    print(f"{'query':32} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    for name, times in found.items():
        times = sorted(times)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"{name:32} {len(times):4} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database-url", help="a PostgreSQL server (a fresh database is made on it)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{tmp}/bench.db")
            report("SQLite", measure(engine, build(engine, args.rows), args.repeat))
            engine.dispose()
    if args.database_url and args.only != "sqlite":
        base = make_url(args.database_url).set(drivername="postgresql+psycopg")
        name = f"sluice_bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            engine = make_engine(base.set(database=name).render_as_string(hide_password=False))
            report("PostgreSQL", measure(engine, build(engine, args.rows), args.repeat))
            engine.dispose()
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


if __name__ == "__main__":
    main()
