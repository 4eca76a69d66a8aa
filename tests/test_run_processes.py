"""The run service with real processes: SIGKILL mid-run, gunicorn workers, cancel, concurrent uploads."""
import io
import json
import os
import random
import select as io_select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.models import Run
from app.pipeline import run_file

from . import pipeline_helpers
from .conftest import TABLES

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "proc" / "worker.py"


def make_records(path: Path, n: int, *, seed: int, start: str = "2024-01-01T00:00:00", fmt="json") -> Path:
    """A file of `n` records like a real feed: a fifth repeat earlier keys, a few are invalid."""
    rng, origin = random.Random(seed), datetime.fromisoformat(start)
    lines = []
    for i in range(n):
        key = f"k{rng.randrange(i) if i and rng.random() < 0.2 else i:08d}"
        ts = (origin + timedelta(seconds=i + rng.randint(-90, 90))).strftime("%Y-%m-%dT%H:%M:%S")
        record = {"key": key, "name": f"item-{rng.randrange(10**6):06d}", "value": rng.randint(-1000, 10**5),
                  "ts": ts}
        if rng.random() < 0.05:
            record["value"] = "abc"
        lines.append(json.dumps(record, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n" if fmt == "ndjson" else "[" + ",".join(lines) + "]")
    return path


def wait_for(condition, what: str, timeout: float = 60.0, step: float = 0.05):
    """Poll `condition` until it returns something true; fail after `timeout` s (a bound, not a check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what}")


def rows(engine, sql: str, **params) -> list:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def snapshot(engine) -> dict:
    """Everything a run may change, except the runs table itself."""
    with engine.connect() as conn:
        return pipeline_helpers.snapshot(conn)


def run_of(engine, run_id):
    with engine.connect() as conn:
        return conn.execute(select(Run).where(Run.id == run_id)).one()


def finished(engine, ids) -> bool:
    """Every run has ended; on SQLite a run still in the intake (accepted, not yet in `runs`) has not."""
    with engine.connect() as conn:
        ended = conn.execute(select(func.count()).where(Run.id.in_(ids), Run.status.not_in(("queued", "running"))))
        return ended.scalar() == len(ids)


def reset_tables(engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        else:
            for table in TABLES:
                conn.exec_driver_sql(f"DELETE FROM {table}")


def sequential_result(engine, paths) -> tuple[list, list]:
    """Target rows and per-run counts from running `paths` one after another on an emptied database."""
    reset_tables(engine)
    with engine.connect() as conn:
        summaries = [run_file(conn, p, kind="upload") for p in paths]
    return target_rows(engine), [counts(s) for s in summaries]


COUNTS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged",
          "stale", "dead_letters", "lineage_entries")


def counts(summary_or_run) -> tuple:
    get = summary_or_run.get if isinstance(summary_or_run, dict) else lambda k: getattr(summary_or_run, k)
    return tuple(get(k) for k in COUNTS)


def target_rows(engine) -> list:
    return rows(engine, "SELECT key, name, value, ts FROM target ORDER BY key")


@pytest.fixture
def env(db_url, app):
    """Environment for child processes: the test's database and the app's instance folder."""
    return {**os.environ, "DATABASE_URL": db_url, "SLUICE_INSTANCE_PATH": app.instance_path,
            "SLUICE_UPLOAD_DIR": app.config["SLUICE_UPLOAD_DIR"], "SECRET_KEY": "test",
            "PYTHONUNBUFFERED": "1"}


def start(args, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            **kwargs)


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def wait_for_line(proc: subprocess.Popen, line: str, timeout: float = 60.0) -> None:
    """Read the child's output until `line` (bounded: a child that hangs fails the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = io_select.select([proc.stdout], [], [], 0.5)
        if ready:
            got = proc.stdout.readline().decode(errors="replace").strip()
            if got == line:
                return
            if not got and proc.poll() is not None:
                break
    pytest.fail(f"the child did not say {line!r}")


# Killed while reading, a live sibling process notices; killed just before the commit, the next start does.
@pytest.mark.parametrize("phase, noticed_by", [("reading", "sibling"), ("committing", "restart")])
def test_sigkill_mid_run_changes_nothing_is_marked_interrupted_and_retry_works(
        app, engine, env, tmp_path, phase, noticed_by):
    svc = app.extensions["sluice_runs"]
    first = make_records(tmp_path / "first.json", 2_000, seed=1)
    big = make_records(tmp_path / "big.jsonl", 60_000, seed=2, start="2024-01-01T00:20:00", fmt="ndjson")
    with first.open("rb") as f:
        svc.submit(f, "first.json", kind="upload", options=None)
    svc.drain()
    before = snapshot(engine)
    assert before["target"]

    with big.open("rb") as f:
        run_id = svc.submit(f, "big.jsonl", kind="upload", options=None)
    marker = tmp_path / "marker"
    child = start([sys.executable, str(WORKER), "pause", phase, str(marker)], env)
    server = None
    try:
        wait_for(marker.exists, f"the child to reach {phase}")
        live = svc.progress(run_id)  # read from this process while the other one holds the run
        assert live["phase"] == phase and live["records"] > 0 and live["file_size"] == big.stat().st_size
        if phase == "reading":
            assert 0 < live["bytes_read"] < big.stat().st_size
        if noticed_by == "sibling":
            server = start([sys.executable, str(WORKER), "serve"], env)
            wait_for_line(server, "ready")  # it has looked for dead workers once: this one lives
        assert run_of(engine, run_id).status == "running"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL

        if noticed_by == "restart":
            assert snapshot(engine) == before  # nothing of the killed run is visible
            assert run_of(engine, run_id).status == "running"  # until someone notices the worker is gone
            server = start([sys.executable, str(WORKER), "serve"], env)
        wait_for(lambda: run_of(engine, run_id).status == "failed",
                 f"the {noticed_by} to notice the dead run")
        run = run_of(engine, run_id)
        assert run.error == "interrupted" and run.finished_at
        assert snapshot(engine) == before
        assert svc.progress(run_id) is None

        retry_id = svc.retry(run_id)  # executed by the other process's worker thread
        wait_for(lambda: finished(engine, [retry_id]), "the retry to run", timeout=90)
        retry = run_of(engine, retry_id)
        assert (retry.status, retry.retry_of_id, retry.input_records) == ("succeeded", run_id, 60_000)
        assert retry.worker.split(":")[1] == str(server.pid)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
        if server is not None:
            stop(server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_workers_execute_every_run_exactly_once_in_queue_order(app, engine, env, tmp_path):
    svc = app.extensions["sluice_runs"]
    port = free_port()
    gunicorn = start([sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}",
                      "--graceful-timeout", "5", "app:create_app()"], {**env, "SLUICE_EMBEDDED_WORKER": "1"})
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    return json.load(response) == {"status": "ok", "database": "ok"}
            except OSError:
                return False

        wait_for(healthy, "gunicorn to answer /healthz", step=0.2)
        paths = [make_records(tmp_path / f"f{n}.json", 1_500, seed=10 + n,
                              start=f"2024-01-01T00:{(n * 7) % 60:02d}:00") for n in range(8)]
        ids = []
        for p in paths:
            with p.open("rb") as f:
                ids.append(svc.submit(f, p.name, kind="api", options=None))
        wait_for(lambda: finished(engine, ids), "gunicorn's workers to execute the runs",
                 timeout=90, step=0.2)
    finally:
        output = stop(gunicorn)
    runs = [run_of(engine, i) for i in ids]
    assert [r.status for r in runs] == ["succeeded"] * len(ids), output
    assert all(r.worker.split(":")[1] != str(os.getpid()) for r in runs)
    # Exactly once: each run's lineage is written once, and the runs applied in the order they were queued.
    per_run = dict(rows(engine, "SELECT run_id, count(*) FROM lineage GROUP BY run_id"))
    assert [per_run[r.id] for r in runs] == [r.lineage_entries for r in runs]
    assert [r.applied_seq for r in runs] == list(range(1, len(ids) + 1))
    assert "database is locked" not in output

    together = target_rows(engine), [counts(r) for r in runs]
    assert sequential_result(engine, [Path(r.file_path) for r in runs]) == together


def test_ten_concurrent_uploads_all_complete_like_one_after_another(db_url, engine, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": "t",
                      "SLUICE_UPLOAD_DIR": str(tmp_path / "uploads"), "SLUICE_EMBEDDED_WORKER": True})
    svc = app.extensions["sluice_runs"]
    assert svc.executor is not None  # the embedded default executes runs in a thread of the app
    datas = [make_records(tmp_path / f"c{n}.json", 2_000, seed=100 + n,
                          start=f"2024-01-01T00:{(n * 5) % 60:02d}:00").read_bytes() for n in range(10)]
    barrier = threading.Barrier(len(datas))
    ids, errors = [None] * len(datas), []

    def submit(n):
        try:
            barrier.wait(timeout=30)
            ids[n] = svc.submit(io.BytesIO(datas[n]), f"c{n}.json", kind="upload", options=None)
        except Exception as exc:  # noqa: BLE001 - collected: a thread's exception would otherwise be lost
            errors.append(repr(exc))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(datas))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [] and None not in ids
        wait_for(lambda: finished(engine, ids), "the ten runs", timeout=90, step=0.1)
    finally:
        svc.executor.stop()
        with app.app_context():
            from app.extensions import db
            db.engine.dispose()
    runs = sorted((run_of(engine, i) for i in ids), key=lambda r: r.id)
    assert [(r.status, r.error) for r in runs] == [("succeeded", None)] * 10
    assert [r.applied_seq for r in runs] == list(range(1, 11))
    together = target_rows(engine), [counts(r) for r in runs]
    assert sequential_result(engine, [Path(r.file_path) for r in runs]) == together


def test_cancel_reaches_a_run_executing_in_another_process_and_rolls_it_back(app, engine, env, tmp_path):
    svc = app.extensions["sluice_runs"]
    first = make_records(tmp_path / "first.json", 1_000, seed=3)
    big = make_records(tmp_path / "big.json", 50_000, seed=4, start="2024-01-01T00:10:00")
    with first.open("rb") as f:
        svc.submit(f, "first.json", kind="upload", options=None)
    svc.drain()
    before = snapshot(engine)
    with big.open("rb") as f:
        run_id = svc.submit(f, "big.json", kind="upload", options=None)
    marker = tmp_path / "marker"
    child = start([sys.executable, str(WORKER), "pause", "reading", str(marker)], env)
    try:
        wait_for(marker.exists, "the child to be reading")
        assert svc.cancel(run_id) == "running"
        assert child.wait(timeout=60) == 0  # the child's drain ends once the run stopped
    finally:
        if child.poll() is None:
            child.kill()
        output = child.communicate()[0].decode(errors="replace")
    run = run_of(engine, run_id)
    assert (run.status, run.error) == ("cancelled", "cancelled by request"), output
    assert snapshot(engine) == before
    assert svc.progress(run_id) is None
