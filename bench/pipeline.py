"""Benchmark Sluice's pipeline against the hand-written sqlite3 floor on generated files (issue 2, item 8).

    python bench/pipeline.py [--records N] [--only pipeline|floor] [--keep] [--database-url postgresql://…]

Two files of N records are generated once (cached in bench/out/): A with the generator's defaults and
B with another seed and a later start, so that B meets a watermark and existing keys (skipped,
updated, unchanged, stale). Each side loads A into a fresh database, then B on top of it. Every run
executes in a process of its own, so that its peak RSS is its own. With --database-url, both sides
run on that PostgreSQL server (the floor is then `floor_pg.py`), each in a database of its own.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
OUT = HERE / "out"
MAKE_RECORDS = ROOT / "bench" / "make_records.py"
FILES = {"A": [], "B": ["--seed", "7", "--start", "2024-01-05T00:00:00"]}
# Run C (--backfill): file A again, ignoring the watermark, on top of A and B: the only way this
# generator's files produce `unchanged` (A's rows that B did not touch) and `stale` (the ones it did).
RUNS = {"A": ("A", False), "B": ("B", False), "C": ("A", True)}
DESCRIBE = {"A": "file A, empty database", "B": "file B, on top of A",
            "C": "file A again as a backfill, on top of B"}
COUNTS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged",
          "stale", "dead_letters", "lineage_entries")


def records_file(n: int, run: str) -> Path:
    """The cached input file of run A or B with n records, generated when missing."""
    path = OUT / f"records-{n}-{run.lower()}.json"
    if not path.exists():
        if not MAKE_RECORDS.exists():
            sys.exit(f"the generator is missing: {MAKE_RECORDS}")
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        print(f"generating {path.name} ({n:,} records) …", flush=True)
        subprocess.run([sys.executable, str(MAKE_RECORDS), str(n), str(tmp), *FILES[run]], check=True)
        tmp.rename(path)
    return path


def fresh_database(path: Path) -> None:
    """A new SQLite file with Sluice's schema, built by its migrations."""
    from app.database import make_engine
    from app.schema import upgrade

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()


PG_DATABASES = {"pipeline": "sluice_bench_pipeline", "floor": "sluice_bench_floor"}


def is_postgres(db: str) -> bool:
    return db.startswith("postgresql")


def postgres_urls(url: str, side: str) -> tuple[str, str]:
    """The side's own database on the server `url` names: its SQLAlchemy URL and its libpq URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(database=PG_DATABASES[side])
    return (parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False),
            parsed.set(drivername="postgresql").render_as_string(hide_password=False))


def fresh_postgres_database(sa_url: str) -> None:
    """A new PostgreSQL database (dropped first if it exists) with Sluice's schema, built by its migrations."""
    from dataset import _recreate_postgres_database

    from app.database import make_engine
    from app.schema import upgrade

    _recreate_postgres_database(sa_url)
    engine = make_engine(sa_url)
    upgrade(engine)
    engine.dispose()


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- what each child process does ---------------------------------------------------------------

def code_version() -> dict:
    """Which code was measured: the commit, and a digest of app/ as it is on disk (others edit it)."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted((ROOT / "app").rglob("*.py")):
        digest.update(path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10, check=False).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        head, dirty = "?", []
    return {"commit": head, "app_digest": digest.hexdigest(),
            "uncommitted_in_app": sorted(line[3:] for line in dirty if line.strip())}


def database_state(db_path: str) -> dict:
    """What a load left in the database, to check that the pipeline and the floor agree."""
    import sqlite3

    db = sqlite3.connect(db_path)
    digest = hashlib.blake2b(digest_size=16)
    rows = 0
    for key, name, value, ts in db.execute("SELECT key, name, value, ts FROM target ORDER BY key"):
        digest.update(f"{key}\x1f{name}\x1f{value!r}\x1f{ts}\n".encode())
        rows += 1
    watermark = db.execute("SELECT value FROM watermarks WHERE name = 'events_ts'").fetchone()
    state = {
        "target_rows": rows,
        "target_digest": digest.hexdigest(),
        "lineage": dict(db.execute("SELECT step, count(*) FROM lineage GROUP BY step ORDER BY step")),
        "lineage_linked_to_dead_letters": db.execute(
            "SELECT count(*) FROM lineage WHERE dead_letter_id IS NOT NULL").fetchone()[0],
        "dead_letters": dict(db.execute("SELECT status, count(*) FROM dead_letters GROUP BY status")),
        "watermark": watermark[0] if watermark else None,
    }
    db.close()
    return state


# An order-independent digest of a query's rows, computed by the server (lineage reaches millions
# of rows): the sum of a 60-bit slice of each row's md5, with the row count.
_PG_DIGEST = "SELECT count(*), COALESCE(sum(('x' || left(md5(CAST(ROW({cols}) AS TEXT)), 15))::bit(60)::bigint), 0) "
# A future_timestamp detail names the moment of its run ("later than now plus the tolerance (…)").
_NO_NOW = "regexp_replace({}, ' \\(\\d{{4}}-[^()]*\\)$', '')"
PG_STATE = {
    "target": ("key, name, value, ts, run_id", "FROM target"),
    "lineage": ((f"l.dataset, l.run_id, l.pos, l.line, l.key, l.step, {_NO_NOW.format('l.detail')}, l.actor, "
                 "d.pos, d.fingerprint"),
                "FROM lineage l LEFT JOIN dead_letters d ON d.id = l.dead_letter_id"),
    "dead_letters": (("dataset, run_id, last_run_id, pos, line, key, error, "
                      f"{_NO_NOW.format('detail')}, raw, fingerprint, status, "
                      "attempts, sightings, last_raw, outcome, resolved_run_id, reason"),
                     "FROM dead_letters"),
    "watermarks": ("name, dataset, value", "FROM watermarks"),
    "watermark_history": ("name, dataset, old_value, new_value, via, run_id", "FROM watermark_history"),
    "runs": (f"dataset, kind, status, watermark_before, watermark_after, {', '.join(COUNTS)}", "FROM runs"),
}


def database_state_pg(url: str) -> dict:
    """What the loads left in a PostgreSQL database: counts and a digest of every row that matters.

    Lineage is compared with its details text and the dead letter it links to (by that one's position
    and fingerprint, not its id); timestamps and ids are left out.
    """
    import psycopg

    with psycopg.connect(url) as db:
        state = {name: "{} rows, digest {}".format(*db.execute(_PG_DIGEST.format(cols=cols) + source).fetchone())
                 for name, (cols, source) in PG_STATE.items()}
        state["lineage_steps"] = dict(db.execute("SELECT step, count(*) FROM lineage GROUP BY step ORDER BY step"))
        state["watermark"] = (db.execute("SELECT value FROM watermarks WHERE name = 'events_ts'").fetchone()
                              or (None,))[0]
    return state


def _label(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 100 else f"{text[:58]} … {text[-38:]}"


def pipeline_child(db_path: str, file_path: str, backfill: bool, cache_mib: int | None) -> dict:
    """Run the Sluice pipeline on one file; time its phases and each SQL statement."""
    from sqlalchemy import event

    from app.database import make_engine
    from app.pipeline import Options, run_file
    from app.pipeline.run import read_run

    rss_before = peak_rss_mb()
    postgres = is_postgres(db_path)
    if postgres:
        from floor_pg import backend_cpu_seconds
    sa_url, pg_url = postgres_urls(db_path, "pipeline") if postgres else (f"sqlite:///{db_path}", None)
    engine = make_engine(sa_url)
    phases: list[tuple[str, float]] = []
    rss_at: list[float] = []  # peak RSS when each phase began
    sql: dict[tuple[str, str], list] = {}

    if cache_mib is not None:
        @event.listens_for(engine, "before_cursor_execute", retval=True)
        def _cache(conn, cursor, statement, parameters, context, executemany):
            if re.match(r"\s*PRAGMA\s+cache_size\b", statement, re.IGNORECASE):
                statement = f"PRAGMA cache_size = -{cache_mib * 1024}"
            return statement, parameters

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("sql_started", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        seconds = time.perf_counter() - conn.info["sql_started"].pop()
        entry = sql.setdefault((phases[-1][0] if phases else "before reading", statement), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def progress(phase: str, records: int, nbytes: int) -> None:
        if not phases or phases[-1][0] != phase:
            phases.append((phase, time.perf_counter()))
            rss_at.append(peak_rss_mb())

    with engine.connect() as conn:
        backend = None
        if postgres:  # the run's own connection (its TEMP tables are), and the lineage writer's (below)
            with conn.begin():
                backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            server_cpu = backend_cpu_seconds(backend)
        load = os.getloadavg()[0]
        cpu = cpu_seconds()
        started = time.perf_counter()
        summary = run_file(conn, file_path, kind="cli", options=Options(ignore_watermark=backfill),
                           progress=progress)
        finished = time.perf_counter()
        cpu = cpu_seconds() - cpu
        if postgres:
            server_cpu = backend_cpu_seconds(backend) - server_cpu
            # The lineage writer's connection (app/pipeline/lineage_writer.py) was opened by this run and
            # is kept by the pool: every other server process of this database is this run's.
            with conn.begin():
                others = conn.exec_driver_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                              "AND pid <> pg_backend_pid()").scalars().all()
            server_cpu += sum(backend_cpu_seconds(pid) for pid in others)
        rss = peak_rss_mb()
        lock_seconds = read_run(conn, summary["run_id"]).lock_seconds
    engine.dispose()

    marks = [("hashing the file, creating the run", started), *phases, ("(end)", finished)]
    peaks = [rss_before, *rss_at, rss]
    phase_seconds, phase_rss = {}, {}
    for (name, at), (_next, until), peak in zip(marks, marks[1:], peaks[1:]):
        phase_seconds[name] = phase_seconds.get(name, 0.0) + until - at
        phase_rss[name] = peak
    statements = [{"phase": phase, "statement": _label(statement), "calls": calls, "seconds": seconds}
                  for (phase, statement), (calls, seconds) in sql.items()]
    statements.sort(key=lambda s: -s["seconds"])
    # runs.lock_seconds stops before COMMIT; the lock is held until the COMMIT returns ("done").
    held = phase_seconds.get("applying", 0.0) + phase_seconds.get("committing", 0.0)
    result = {"seconds": finished - started, "cpu_seconds": cpu, "load_average": load,
              "phases": phase_seconds, "phase_peak_rss_mb": phase_rss,
              "lock_seconds": lock_seconds, "lock_until_commit_seconds": held, "code": code_version(),
              "peak_rss_mb": rss, "rss_after_imports_mb": rss_before,
              "counts": {k: summary[k] for k in COUNTS}, "watermark": summary["watermark"],
              "sql": statements}
    if postgres:
        result.update(server_cpu_seconds=server_cpu, state=database_state_pg(pg_url))
    else:
        result["state"] = database_state(db_path)
    return result


def floor_child(db_path: str, file_path: str, backfill: bool, cache_mib: int | None) -> dict:
    """Run the floor on one file (`floor_pg` when `db_path` is a PostgreSQL URL)."""
    import floor
    import floor_pg

    rss_before = peak_rss_mb()
    load = os.getloadavg()[0]
    cpu = cpu_seconds()
    if is_postgres(db_path):
        pg_url = postgres_urls(db_path, "floor")[1]
        result = floor_pg.run(pg_url, file_path, ignore_watermark=backfill)
    else:
        result = floor.run(db_path, file_path, ignore_watermark=backfill, cache_mib=cache_mib)
    result["cpu_seconds"] = cpu_seconds() - cpu
    result["load_average"] = load
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_after_imports_mb"] = rss_before
    result["state"] = database_state_pg(pg_url) if is_postgres(db_path) else database_state(db_path)
    return result


def _child_main(pipe, func, args) -> None:
    try:
        result = func(*args)
    except BaseException:  # noqa: BLE001 -- report it to the parent instead of dying silently
        result = {"error": traceback.format_exc()}
    pipe.send(result)
    pipe.close()


def in_child(func, *args) -> dict:
    """Call func(*args) in a fresh spawned interpreter and return its result."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, func, args))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    process.join()
    if result is None:
        sys.exit(f"the benchmark process died (exit code {process.exitcode})")
    if "error" in result:
        sys.exit(result["error"])
    return result


# -- report --------------------------------------------------------------------------------------

def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds else "-"


def print_pipeline(run: str, r: dict) -> None:
    code = r["code"]
    print(f"\n   code: commit {code['commit']}, app/ digest {code['app_digest']}"
          + (f", uncommitted: {', '.join(code['uncommitted_in_app'])}" if code["uncommitted_in_app"] else ""))
    n = r["counts"]["input_records"]
    print(f"\n== pipeline, run {run}: {r['seconds']:.1f} s, {rate(n, r['seconds'])} records/s, "
          f"write lock held {r['lock_seconds']:.2f} s by runs.lock_seconds, "
          f"{r['lock_until_commit_seconds']:.2f} s to the end of COMMIT, peak RSS {r['peak_rss_mb']:.0f} MiB "
          f"(after imports {r['rss_after_imports_mb']:.0f} MiB), CPU {r['cpu_seconds']:.1f} s"
          + (f" (server process {r['server_cpu_seconds']:.1f} s)" if "server_cpu_seconds" in r else "")
          + f", load average {r['load_average']:.1f}")
    print("   counts: " + ", ".join(f"{k} {v:,}" for k, v in r["counts"].items()))
    sql_by_phase: dict[str, float] = {}
    for s in r["sql"]:
        sql_by_phase[s["phase"]] = sql_by_phase.get(s["phase"], 0.0) + s["seconds"]
    print(f"   {'phase':38} {'seconds':>8} {'in SQL':>8} {'in Python':>9} {'peak RSS MiB':>12}")
    for phase, seconds in r["phases"].items():
        in_sql = sql_by_phase.get(phase, 0.0)
        print(f"   {phase:38} {seconds:8.2f} {in_sql:8.2f} {seconds - in_sql:9.2f} "
              f"{r['phase_peak_rss_mb'][phase]:12.0f}")
    print("   (COMMIT is issued by the driver, not as a statement: it counts as Python in 'committing')")
    print("   slowest SQL statements (calls, seconds, phase):")
    for s in r["sql"][:12]:
        print(f"   {s['calls']:6} {s['seconds']:7.2f}  {s['phase'][:12]:12}  {s['statement']}")


def print_floor(run: str, r: dict) -> None:
    n = r["counts"]["input_records"]
    print(f"\n== floor, run {run}: {r['seconds']:.1f} s, {rate(n, r['seconds'])} records/s, "
          f"one transaction held {r['lock_seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MiB "
          f"(after imports {r['rss_after_imports_mb']:.0f} MiB), CPU {r['cpu_seconds']:.1f} s"
          + (f" (server process {r['server_cpu_seconds']:.1f} s)" if "server_cpu_seconds" in r else "")
          + f", load average {r['load_average']:.1f}")
    print(f"   {'step':38} {'seconds':>8} {'peak RSS MiB':>12}")
    for step, seconds in r["steps"].items():
        print(f"   {step:38} {seconds:8.2f} {r['step_peak_rss_mb'][step]:12.0f}")


def compare(results: dict) -> list[str]:
    """Differences between what the pipeline and the floor computed and left in the database."""
    problems = []
    for run in results["runs"]:
        p, f = results["pipeline"].get(run), results["floor"].get(run)
        if not p or not f:
            continue
        for key in COUNTS:
            if p["counts"][key] != f["counts"][key]:
                problems.append(f"run {run}: {key} pipeline {p['counts'][key]:,} "
                                f"vs floor {f['counts'][key]:,}")
        for key, value in p["state"].items():
            if f["state"][key] != value:
                problems.append(f"run {run}: database {key} pipeline {value} vs floor {f['state'][key]}")
    return problems


def markdown(results: dict, n: int) -> str:
    lines = [("| run | records | skipped / rejected / inserted / updated / unchanged / stale / superseded "
              "| pipeline s | records/s | write lock s (recorded / until COMMIT ends) | pipeline peak RSS MiB "
              "| floor s | floor peak RSS MiB | ratio (wall) | ratio (CPU) |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total_p = total_f = cpu_p = cpu_f = 0.0
    for run in results["runs"]:
        p, f = results["pipeline"].get(run), results["floor"].get(run)
        r = p or f
        c = r["counts"]
        mix = " / ".join(f"{c[k]:,}" for k in ("skipped", "rejected", "inserted", "updated", "unchanged",
                                               "stale", "superseded"))
        cells = [f"{run} ({DESCRIBE[run]})", f"{c['input_records']:,}", mix]
        cells += [f"{p['seconds']:.1f}", rate(c["input_records"], p["seconds"]),
                  f"{p['lock_seconds']:.1f} / {p['lock_until_commit_seconds']:.1f}",
                  f"{p['peak_rss_mb']:.0f}"] if p else ["-"] * 4
        cells += [f"{f['seconds']:.1f}", f"{f['peak_rss_mb']:.0f}"] if f else ["-"] * 2
        cells.append(f"{p['seconds'] / f['seconds']:.2f}" if p and f else "-")
        cells.append(f"{p['cpu_seconds'] / f['cpu_seconds']:.2f}" if p and f else "-")
        total_p += p["seconds"] if p else 0
        total_f += f["seconds"] if f else 0
        cpu_p += p["cpu_seconds"] if p else 0
        cpu_f += f["cpu_seconds"] if f else 0
        lines.append("| " + " | ".join(cells) + " |")
    if total_p and total_f:
        runs = results["runs"]
        lines.append(f"| {' + '.join(runs)} | {len(runs) * n:,} | | {total_p:.1f} | | | | "
                     f"{total_f:.1f} | | {total_p / total_f:.2f} | {cpu_p / cpu_f:.2f} |")
    return "\n".join(lines)


def markdown_pg(results: dict, n: int) -> str:
    """The PostgreSQL table: wall, client and server CPU, and the apply lock of both sides."""
    lines = [("| run | records | skipped / rejected / inserted / updated / unchanged / stale / superseded "
              "| pipeline s | CPU s client / server | apply lock s (recorded / until COMMIT ends) "
              "| floor s | CPU s client / server | floor transaction s | ratio (wall) | ratio (CPU, both) |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    totals = {side: [0.0, 0.0] for side in ("pipeline", "floor")}
    for run in results["runs"]:
        p, f = results["pipeline"].get(run), results["floor"].get(run)
        c = (p or f)["counts"]
        mix = " / ".join(f"{c[k]:,}" for k in ("skipped", "rejected", "inserted", "updated", "unchanged",
                                               "stale", "superseded"))
        cells = [f"{run} ({DESCRIBE[run]})", f"{c['input_records']:,}", mix]
        cells += [f"{p['seconds']:.1f}", f"{p['cpu_seconds']:.1f} / {p['server_cpu_seconds']:.1f}",
                  f"{p['lock_seconds']:.1f} / {p['lock_until_commit_seconds']:.1f}"] if p else ["-"] * 3
        cells += [f"{f['seconds']:.1f}", f"{f['cpu_seconds']:.1f} / {f['server_cpu_seconds']:.1f}",
                  f"{f['lock_seconds']:.1f}"] if f else ["-"] * 3
        cells.append(f"{p['seconds'] / f['seconds']:.2f}" if p and f else "-")
        cells.append(f"{_both_cpu(p) / _both_cpu(f):.2f}" if p and f else "-")
        for side, r in (("pipeline", p), ("floor", f)):
            if r:
                totals[side][0] += r["seconds"]
                totals[side][1] += _both_cpu(r)
        lines.append("| " + " | ".join(cells) + " |")
    (wall_p, cpu_p), (wall_f, cpu_f) = totals["pipeline"], totals["floor"]
    if wall_p and wall_f:
        runs = results["runs"]
        lines.append(f"| {' + '.join(runs)} | {len(runs) * n:,} | | {wall_p:.1f} | {cpu_p:.1f} | | "
                     f"{wall_f:.1f} | {cpu_f:.1f} | | {wall_p / wall_f:.2f} | {cpu_p / cpu_f:.2f} |")
    return "\n".join(lines)


def _both_cpu(r: dict) -> float:
    """CPU time of the client process and of its PostgreSQL server process together."""
    return r["cpu_seconds"] + r.get("server_cpu_seconds", 0.0)


def print_ratios(results: dict, problems: list[str]) -> None:
    """Pipeline / floor per run and in total, by wall time and by CPU time."""
    postgres = results.get("database") == "postgresql"
    print("\n== pipeline / floor")
    print(f"   {'':8} {'wall s':>18} {'ratio':>6}   {'CPU s':>18} {'ratio':>6}"
          + (f"   {'client + server CPU s':>22} {'ratio':>6}" if postgres else ""))
    keys = ("seconds", "cpu_seconds") + (("server_cpu_seconds",) if postgres else ())
    rows = [(f"run {run}", results["pipeline"][run], results["floor"][run]) for run in results["runs"]]
    rows.append(("total", *({k: sum(r[k] for r in results[side].values()) for k in keys}
                            for side in ("pipeline", "floor"))))
    for label, p, f in rows:
        both = (f"   {_both_cpu(p):10.1f} / {_both_cpu(f):9.1f} {_both_cpu(p) / _both_cpu(f):6.2f}"
                if postgres else "")
        print(f"   {label:8} {p['seconds']:8.1f} / {f['seconds']:7.1f} {p['seconds'] / f['seconds']:6.2f}   "
              f"{p['cpu_seconds']:8.1f} / {f['cpu_seconds']:7.1f} {p['cpu_seconds'] / f['cpu_seconds']:6.2f}"
              + both)
    print("   the floor and the pipeline agree on every count and on the database they leave"
          if not problems else "   DIFFERENCES:\n   " + "\n   ".join(problems))


def print_memory_against_1m(results: dict) -> None:
    """Peak RSS of these pipeline runs beside the latest 1M run's (to show it does not grow)."""
    earlier = [path for path in OUT.glob("results-1000000*.json")
               if "floor" not in path.name and "cache" not in path.name]
    if not earlier or not results["pipeline"]:
        return
    base = json.loads(max(earlier, key=lambda path: path.stat().st_mtime).read_text())
    print(f"\n== memory against the 1M run (page cache there: {base.get('cache_mib') or 'default'}, "
          f"here: {results['cache_mib'] or 'default'})")
    for run, result in results["pipeline"].items():
        if run in base["pipeline"]:
            print(f"   peak RSS of pipeline run {run}: {result['peak_rss_mb']:.0f} MiB at "
                  f"{results['records']:,} records vs {base['pipeline'][run]['peak_rss_mb']:.0f} MiB "
                  "at 1,000,000")


def run_all(results: dict, sides: list[str], files: dict, keep: bool, database_url: str | None = None) -> None:
    """Run every run on every side, each in a process of its own, into `results`.

    With `database_url` (PostgreSQL), each side gets a database of its own on that server, made anew.
    """
    n, cache_mib = results["records"], results["cache_mib"]
    if database_url:
        databases = dict.fromkeys(sides, database_url)
        for side in sides:
            fresh_postgres_database(postgres_urls(database_url, side)[0])
    else:
        databases = {side: OUT / f"{side}-{n}.db" for side in sides}
        for db_path in databases.values():
            fresh_database(db_path)
    # Interleaved (run A on each side, then B, …): on a shared machine both terms of a ratio see
    # about the same load.
    for run in results["runs"]:
        source, backfill = RUNS[run]
        path = files[source]
        for side in sides:
            print(f"{side}: run {run} ({path.name}{', ignoring the watermark' if backfill else ''}) …",
                  flush=True)
            child = pipeline_child if side == "pipeline" else floor_child
            result = in_child(child, str(databases[side]), str(path), backfill, cache_mib)
            results[side][run] = result
            (print_pipeline if side == "pipeline" else print_floor)(run, result)
    if keep:
        return
    if database_url:
        from dataset import drop_database

        for side in sides:
            drop_database(postgres_urls(database_url, side)[0])
        return
    for db_path in databases.values():
        remove_database(db_path)


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(postgres_urls(url, "pipeline")[1].rsplit("/", 1)[0] + "/postgres") as db:
        return db.execute("SHOW server_version").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per file (default 1,000,000)")
    parser.add_argument("--only", choices=("pipeline", "floor"), help="run one side only")
    parser.add_argument("--keep", action="store_true", help="keep the databases in bench/out/")
    parser.add_argument("--cache-mib", type=int,
                        help="SQLite page cache of both sides in MiB (default: the pipeline's own setting); "
                             "SQLite's sorter may use as much again")
    parser.add_argument("--backfill", action="store_true",
                        help="add run C: file A again, ignoring the watermark (unchanged and stale records)")
    parser.add_argument("--database-url",
                        help="run both sides on this PostgreSQL server (postgresql://user@host:port/db), in "
                             f"databases of their own ({', '.join(PG_DATABASES.values())}), made anew and dropped")
    args = parser.parse_args()
    if args.database_url and not is_postgres(args.database_url):
        parser.error("--database-url takes a postgresql:// URL; SQLite is the default")
    if args.database_url and args.cache_mib:
        parser.error("--cache-mib is SQLite's page cache")
    n = args.records

    import sqlite3

    files = {run: records_file(n, run) for run in FILES}
    sides = [args.only] if args.only else ["pipeline", "floor"]
    results: dict = {
        "records": n, "runs": [run for run in RUNS if run != "C" or args.backfill],
        "cache_mib": args.cache_mib, "pipeline": {}, "floor": {},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "sqlite": sqlite3.sqlite_version, "load_average": os.getloadavg()},
    }
    if args.database_url:
        results["database"] = "postgresql"
        results["machine"]["postgresql"] = _server_version(args.database_url)
    run_all(results, sides, files, args.keep, args.database_url)

    problems = compare(results)
    if not args.only:
        print_ratios(results, problems)
    if n != 1_000_000 and not args.database_url:
        print_memory_against_1m(results)
    print("\n" + (markdown_pg if args.database_url else markdown)(results, n))
    OUT.mkdir(parents=True, exist_ok=True)
    name = (f"results-{n}{'-' + args.only if args.only else ''}{'-backfill' if args.backfill else ''}"
            f"{f'-cache{args.cache_mib}' if args.cache_mib else ''}{'-postgresql' if args.database_url else ''}.json")
    (OUT / name).write_text(json.dumps(results, indent=1))
    print(f"\n(results saved to {(OUT / name).relative_to(ROOT)})")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
