"""No request waits for a run's apply (issue 8, defect 19), and the WAL does not keep a run's size (20)."""
import io
import json
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

import app.database
from app.database import write_transaction
from app.intake import pending_runs
from app.models import Run

from .pipeline_helpers import rec


@pytest.fixture
def svc(app):
    return app.extensions["sluice_runs"]


def records(n, day=15):
    return [rec(key=f"k{i:06d}", name=f"name-{i}", value=i, ts=f"2025-01-{day:02d}T{i // 3600 % 24:02d}:"
                f"{i // 60 % 60:02d}:{i % 60:02d}") for i in range(n)]


def body(data) -> io.BytesIO:
    return io.BytesIO(json.dumps(data).encode())


def in_runs(svc, run_id):
    with svc.engine.connect() as conn:
        return conn.execute(select(Run.status).where(Run.id == run_id)).scalar()


class HeldApplyLock:
    """Another connection holding what a run's apply holds: SQLite's write lock, PostgreSQL's apply lock."""

    def __init__(self, engine):
        self.conn = engine.connect()
        self.tx = write_transaction(self.conn)

    def __enter__(self):
        self.tx.__enter__()  # BEGIN IMMEDIATE on SQLite, pg_advisory_xact_lock on PostgreSQL
        return self

    def __exit__(self, *exc):
        self.tx.__exit__(None, None, None)
        self.conn.close()


def in_a_thread(fn, *args, **kwargs):
    """Run `fn` in a thread; return (thread, outcome) where outcome gets "value" or "error"."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - collected: a thread's exception would otherwise be lost
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_a_submission_is_accepted_while_a_run_applies(svc, runner):
    first = svc.submit(body(records(3)), "first.json")
    svc.drain()
    with HeldApplyLock(svc.engine):
        # Without the intake the submission would wait for the lock (an hour, the longest apply):
        # the thread would still be waiting when the join gives up.
        thread, outcome = in_a_thread(svc.submit, body(records(5, day=16)), "during.json", kind="api")
        thread.join(timeout=60)
        assert not thread.is_alive() and "error" not in outcome, outcome
        run_id = outcome["value"]
        assert run_id == first + 1  # the next id, as always
        run = svc.queue.find(run_id)  # what the run's page and the API show
        assert (run.status, run.kind, run.source_name, run.source_size) == (
            "queued", "api", "during.json", len(json.dumps(records(5, day=16))))
        listing = runner.invoke(args=["etl", "runs"])
        assert listing.exit_code == 0 and f"{run_id:>6}  api       queued" in listing.output, listing.output
        # Cancel and retry of waiting runs do not wait either.
        other = in_a_thread(svc.submit, body(records(2, day=17)), "other.json")
        other[0].join(timeout=60)
        assert svc.cancel(other[1]["value"]) == "cancelled"
        retry = svc.retry(other[1]["value"])
    assert svc.drain() == [run_id, retry]
    assert (in_runs(svc, run_id), in_runs(svc, other[1]["value"]), in_runs(svc, retry)) == (
        "succeeded", "cancelled", "succeeded")
    with svc.engine.connect() as conn:
        assert pending_runs(conn) == []  # every run moved into `runs`
        assert conn.execute(text("SELECT count(*) FROM target")).scalar() == 5


def test_a_run_waiting_in_the_intake_keeps_the_queue_order(svc):
    if svc.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL records every run in `runs` at once")
    with HeldApplyLock(svc.engine):
        ids = []
        for n in range(3):
            thread, outcome = in_a_thread(svc.submit, body(records(2, day=10 + n)), f"f{n}.json")
            thread.join(timeout=60)
            ids.append(outcome["value"])
        assert [in_runs(svc, i) for i in ids] == [None] * 3  # not in `runs` yet, but in the intake
    after = svc.submit(body(records(2, day=20)), "after.json")  # joins the runs waiting in the intake
    assert svc.queue.find(after).status == "queued"
    assert svc.drain() == [*ids, after]
    direct = svc.submit(body(records(2, day=21)), "later.json")  # none waits and the lock is free
    assert in_runs(svc, direct) == "queued"


def test_the_wal_is_truncated_after_a_large_run(db_url, tmp_path, monkeypatch):
    if not db_url.startswith("sqlite"):
        pytest.skip("the WAL is SQLite's")
    from app import create_app

    limit = 128 * 1024
    monkeypatch.setattr(app.database, "JOURNAL_SIZE_LIMIT", limit)
    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    flask_app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": "t",
                            "SLUICE_UPLOAD_DIR": str(tmp_path / "up"), "SLUICE_EMBEDDED_WORKER": False})
    svc = flask_app.extensions["sluice_runs"]
    database = Path(db_url.removeprefix("sqlite:///"))
    before = database.stat().st_size
    svc.submit(body(records(4000)), "big.json")
    assert svc.drain() and in_runs(svc, 1) == "succeeded"
    wal = Path(f"{database}-wal")
    assert (os.path.getsize(wal) if wal.exists() else 0) <= limit
    assert database.stat().st_size - before > 4 * limit  # in the database file: the run wrote far more
    svc.engine.dispose()


def test_housekeeping_keeps_the_file_of_a_run_waiting_in_the_intake(svc, app):
    from datetime import timedelta

    from app.pipeline.validate import utc_now

    old = svc.submit(body(records(2)), "old.json")
    svc.cancel(old)
    with HeldApplyLock(svc.engine):
        retry = svc.retry(old)  # on SQLite it waits in the intake, not in `runs`
    later = utc_now() + timedelta(hours=app.config["SLUICE_FILE_RETENTION_HOURS"] + 1)
    assert svc.housekeep(now=later) == []
    assert Path(svc.queue.find(retry).file_path).exists()
    assert svc.drain() == [retry] and in_runs(svc, retry) == "succeeded"


def test_a_run_accepted_during_an_apply_is_on_its_page_and_in_the_api_at_once(svc, client):
    with HeldApplyLock(svc.engine):
        thread, outcome = in_a_thread(svc.submit, body(records(1)), "during.json")
        thread.join(timeout=60)
        run_id = outcome["value"]
        page = client.get(f"/runs/{run_id}")
        assert page.status_code == 200 and b"during.json" in page.data
        api = client.get(f"/api/runs/{run_id}")
        assert api.status_code == 200 and api.get_json()["status"] == "queued"
        assert run_id in [r["id"] for r in client.get("/api/runs").get_json()["items"]]
        assert b"during.json" in client.get("/runs").data and b"during.json" in client.get("/").data
        assert '"queued"' in client.get(f"/runs/status.json?ids={run_id}").get_data(as_text=True)
    assert svc.drain() == [run_id]


def _open_intake(path: str) -> str:
    from app.database import make_engine
    from app.intake import intake_for

    intake_for(make_engine(f"sqlite:///{path}"))
    return "ok"


@pytest.mark.slow
def test_processes_starting_together_all_open_the_intake(tmp_path):
    import multiprocessing

    # gunicorn's workers start at once and each opens the intake of a database that has none yet.
    for trial in range(5):
        path = str(tmp_path / f"fresh-{trial}.db")
        with multiprocessing.get_context("fork").Pool(6) as pool:
            assert pool.map(_open_intake, [path] * 6, chunksize=1) == ["ok"] * 6
