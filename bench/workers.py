"""Benchmark the queue executor: 8 successive feed files through 1, 2 and 4 workers on PostgreSQL (issue 12.6).

    python bench/workers.py [--records 250000] [--files 8] [--workers 1,2,4] [--database-url postgresql://…] [--json OUT]

The files are generated once by `bench/make_records.py` (cached in bench/out/workers/), each with a
seed of its own and a start one file later than the previous one, so that they look like
successive files of one feed. For each worker count: a fresh database (made anew, migrated by
`create_app`, dropped after), workers started as real processes (`flask --app app worker
--concurrency N`, SLUICE_EXECUTOR=queue) and waited for, then every file submitted through
`RunService.submit` and the wall time taken from the first submit until every run has ended.
Workers read, validate and stage runs side by side and apply them one at a time in queue order, so
the speed-up is bounded by the sum of the runs' write locks (`lock_seconds`), which is reported.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
OUT = HERE / "out" / "workers"
MAKE_RECORDS = HERE / "make_records.py"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "sluice_bench_workers"
START = datetime(2024, 1, 1)
ENDED = ("succeeded", "failed", "cancelled")
WORKERS_TIMEOUT, RUNS_TIMEOUT, STOP_TIMEOUT = 120.0, 3600.0, 30.0


def feed_files(n: int, count: int) -> list[Path]:
    """The cached feed files (n records each), generated when missing: file i starts where file i-1 ends."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        # The generator's timestamps rise one second per record: the next file starts n seconds later.
        start = (START + timedelta(seconds=i * n)).strftime("%Y-%m-%dT%H:%M:%S")
        path = OUT / f"feed-{n}-{i + 1:02d}.json"
        if not path.exists():
            print(f"generating {path.name} ({n:,} records, seed {1000 + i}, from {start}) …", flush=True)
            tmp = path.with_suffix(".tmp")
            subprocess.run([sys.executable, str(MAKE_RECORDS), "--seed", str(1000 + i), "--start", start,
                            str(n), str(tmp)], check=True)
            tmp.rename(path)
        paths.append(path)
    return paths


def bench_url(url: str) -> str:
    """The SQLAlchemy URL of the benchmark's own database on the server `url` names."""
    from sqlalchemy.engine import make_url

    return (make_url(url).set(drivername="postgresql+psycopg", database=DATABASE)
            .render_as_string(hide_password=False))


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_workers(concurrency: int, env: dict, log_path: Path) -> subprocess.Popen:
    """`flask --app app worker --concurrency N` in a session of its own (so that it can be stopped whole)."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker", "--concurrency",
                                 str(concurrency)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc): the worker's processes, which may have groups of their own."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def stop_workers(process: subprocess.Popen) -> str:
    """SIGTERM (the worker passes it on to its processes), then SIGKILL to it and its children; say which it took."""
    children = _children(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    if process.returncode is not None:  # `run_workers` returns once all its processes have stopped
        return f"exited {process.returncode} after SIGTERM"
    # Only processes this bench started: the worker's session and the children it had (still running).
    for kill in [lambda: os.killpg(process.pid, signal.SIGKILL)] + [
            lambda child=child: os.kill(child, signal.SIGKILL) for child in children]:
        try:
            kill()
        except ProcessLookupError:
            pass
    process.wait()
    return "killed"


def wait_for_workers(executor, concurrency: int, process: subprocess.Popen, log_path: Path) -> float:
    """Wait until `concurrency` procrastinate workers beat; return how long that took."""
    started = time.perf_counter()
    while executor.workers() < concurrency:
        if process.poll() is not None:
            sys.exit(f"the workers exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        if time.perf_counter() - started > WORKERS_TIMEOUT:
            sys.exit(f"only {executor.workers()} of {concurrency} workers after {WORKERS_TIMEOUT:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - started


RUN_COLUMNS = ("id, status, error, started_at, finished_at, lock_seconds, input_records, skipped, rejected, "
               "inserted, updated, superseded, watermark_after")
# An order-independent digest of target, computed by the server (the same as bench/pipeline.py's).
TARGET_DIGEST = ("SELECT count(*), COALESCE(sum(('x' || left(md5(CAST(ROW(key, name, value, ts, run_id) AS TEXT)), "
                 "15))::bit(60)::bigint), 0) FROM target")


def runs_of(engine, ids: list[int]) -> list[dict]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY(:ids) ORDER BY id"),
                            {"ids": ids}).mappings().all()
        conn.rollback()
    return [dict(row) for row in rows]


def target_state(engine) -> dict:
    with engine.connect() as conn:
        rows, digest = conn.exec_driver_sql(TARGET_DIGEST).one()
        watermark = conn.exec_driver_sql("SELECT value FROM watermarks WHERE name = 'events_ts'").scalar()
        conn.rollback()
    return {"target_rows": rows, "target_digest": str(digest), "watermark": watermark}


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def measure(concurrency: int, files: list[Path], url: str) -> dict:
    """One measurement: fresh database, N workers, every file submitted, wait for every run to end."""
    from dataset import _recreate_postgres_database, drop_database

    sa_url = bench_url(url)
    instance = OUT / f"instance-{concurrency}"
    shutil.rmtree(instance, ignore_errors=True)
    instance.mkdir(parents=True)
    env = {**os.environ, "DATABASE_URL": sa_url, "SLUICE_EXECUTOR": "queue", "SLUICE_EMBEDDED_WORKER": "0",
           "SLUICE_INSTANCE_PATH": str(instance), "PYTHONPATH": str(ROOT)}
    _recreate_postgres_database(sa_url)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "SLUICE_EXECUTOR", "SLUICE_EMBEDDED_WORKER",
                                           "SLUICE_INSTANCE_PATH")})
    from app import create_app

    app = create_app()  # migrates the database and creates procrastinate's tables
    service = app.extensions["sluice_runs"]
    log_path = OUT / f"worker-{concurrency}.log"
    load_before = _loadavg()
    process = start_workers(concurrency, env, log_path)
    try:
        startup = wait_for_workers(service.executor, concurrency, process, log_path)
        print(f"{concurrency} worker(s) up in {startup:.1f} s; submitting {len(files)} files …", flush=True)
        started = time.perf_counter()
        started_at = datetime.now(UTC).replace(tzinfo=None)
        ids = []
        for path in files:
            with open(path, "rb") as stream:
                ids.append(service.submit(stream, path.name))
        submitted = time.perf_counter() - started
        while True:
            runs = runs_of(service.engine, ids)
            if all(run["status"] in ENDED for run in runs):
                break
            if process.poll() is not None:
                sys.exit(f"the workers exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            if time.perf_counter() - started > RUNS_TIMEOUT:
                sys.exit(f"runs not ended after {RUNS_TIMEOUT:.0f} s: {[r['status'] for r in runs]}")
            time.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        stopped = stop_workers(process)
    load_after = _loadavg()
    state = target_state(service.engine)
    service.engine.dispose()
    drop_database(sa_url)
    shutil.rmtree(instance, ignore_errors=True)

    for run in runs:  # spans on the runs table's clock, from the first submit (same host)
        begun, ended = _at(run["started_at"]), _at(run["finished_at"])
        run["started_s"] = (begun - started_at).total_seconds() if begun else None
        run["finished_s"] = (ended - started_at).total_seconds() if ended else None
        run["span_s"] = (ended - begun).total_seconds() if begun and ended else None
    records = sum(run["input_records"] or 0 for run in runs)
    return {"workers": concurrency, "wall_seconds": wall, "submit_seconds": submitted,
            "startup_seconds": startup, "records": records, "records_per_second": records / wall,
            "lock_seconds": sum(run["lock_seconds"] or 0.0 for run in runs),
            "all_succeeded": all(run["status"] == "succeeded" for run in runs),
            "stopped": stopped, "load_average_before": load_before, "load_average_after": load_after,
            "state": state, "runs": runs}


def report(results: dict) -> list[str]:
    """Print the measurements; return the problems (a run not succeeded, targets that differ)."""
    problems = []
    base = results["measurements"][0]["wall_seconds"] if results["measurements"] else None
    print(f"\n== {results['files']} files × {results['records']:,} records, os.cpu_count() = "
          f"{results['machine']['cpus']}, load average before {results['machine']['load_average_before']}, "
          f"after {results['machine']['load_average_after']}")
    print("\n| workers | wall s | records/s | speed-up | sum of lock_seconds | lock share of wall "
          "| submit s | all succeeded | target rows | target digest |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for m in results["measurements"]:
        print(f"| {m['workers']} | {m['wall_seconds']:.1f} | {m['records_per_second']:,.0f} | "
              f"{base / m['wall_seconds']:.2f} | {m['lock_seconds']:.1f} | "
              f"{m['lock_seconds'] / m['wall_seconds']:.0%} | {m['submit_seconds']:.1f} | "
              f"{'yes' if m['all_succeeded'] else 'NO'} | {m['state']['target_rows']:,} | "
              f"{m['state']['target_digest']} |")
        if not m["all_succeeded"]:
            problems.append(f"{m['workers']} worker(s): " + ", ".join(
                f"run {r['id']} {r['status']} ({r['error']})" for r in m["runs"] if r["status"] != "succeeded"))
    for m in results["measurements"]:
        print(f"\n   {m['workers']} worker(s) (load {m['load_average_before']} → {m['load_average_after']}; "
              f"workers {m['stopped']}): per run, seconds from the first submit")
        print("   run  started  finished  span (read + wait + apply)  lock s  input   inserted  updated  skipped")
        for r in m["runs"]:
            print(f"   {r['id']:>3} {r['started_s']:8.1f} {r['finished_s']:9.1f} {r['span_s']:11.1f}"
                  f"{'':17}{r['lock_seconds'] or 0:6.1f} {r['input_records'] or 0:>7,} {r['inserted'] or 0:>9,} "
                  f"{r['updated'] or 0:>8,} {r['skipped'] or 0:>8,}")
    states = {json.dumps(m["state"], sort_keys=True) for m in results["measurements"]}
    if len(states) > 1:
        problems.append("the target differs between worker counts: " + "; ".join(sorted(states)))
    print("\n   " + ("the target table (rows, digest) and the watermark are identical across worker counts"
                     if len(states) == 1 else "DIFFERENCES:\n   " + "\n   ".join(problems)))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=250_000, help="records per file (default 250,000)")
    parser.add_argument("--files", type=int, default=8, help="how many files (default 8)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (default 1,2,4)")
    parser.add_argument("--database-url", default=DEFAULT_URL,
                        help=f"the PostgreSQL server (default {DEFAULT_URL}); the bench makes and drops its "
                             f"own database {DATABASE} on it")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a postgresql:// URL: the queue executor needs PostgreSQL")
    counts = [int(c) for c in args.workers.split(",") if c.strip()]

    from pipeline import code_version

    files = feed_files(args.records, args.files)
    results = {"records": args.records, "files": args.files, "code": code_version(),
               "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                           "load_average_before": _loadavg()},
               "measurements": []}
    print(f"os.cpu_count() = {os.cpu_count()}; load average {results['machine']['load_average_before']}",
          flush=True)
    for concurrency in counts:
        m = measure(concurrency, files, args.database_url)
        print(f"{concurrency} worker(s): {m['wall_seconds']:.1f} s, {m['records_per_second']:,.0f} records/s, "
              f"lock {m['lock_seconds']:.1f} s", flush=True)
        results["measurements"].append(m)
    results["machine"]["load_average_after"] = _loadavg()
    problems = report(results)
    digest = hashlib.blake2b(json.dumps(results["code"]).encode(), digest_size=4).hexdigest()
    out = Path(args.json) if args.json else OUT / f"results-{args.records}x{args.files}-{digest}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\n(results saved to {out})")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
