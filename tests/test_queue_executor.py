"""The queue executor across two hosts: uploads to one, workers on the other (PostgreSQL, one S3 store).

Host A is the web app in this process, used through a test client signed in as an administrator;
host B is worker processes (`flask --app app worker`) with an instance folder of their own. Both
share the database, the secret key and a moto S3 server as the upload store. The lease is short, so
that a dead worker's run is noticed in seconds by a process of the other host.
"""
import html
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app.pipeline import Options, run_file
from app.runs.service import NO_WORKER

from . import pipeline_helpers
from .conftest import PG_URL, sign_in_as
from .test_object_store import BUCKET, KEYS, s3_endpoint  # noqa: F401 - the session's moto S3 server
from .test_pages_helpers import upload
from .test_run_processes import COUNTS, make_records, reset_tables, rows, run_of, target_rows, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PG_URL, reason="the queue executor needs PostgreSQL: TEST_DATABASE_URL")]
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "proc" / "worker.py"
LEASE, HEARTBEAT = 3, 1  # seconds: a dead worker's run is noticed by the other host within a few seconds
SECRET = "the hosts' shared secret key"
TERMINAL = ("succeeded", "failed", "cancelled")


class Hosts:
    """Host A (an app and a signed-in client in this process) and worker processes of host A or B."""

    def __init__(self, app, client, engine, tmp_path: Path):
        self.app, self.client, self.engine, self.tmp_path = app, client, engine, tmp_path
        self.svc = app.extensions["sluice_runs"]
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def env(self, host: str) -> dict:
        """The environment of a process of `host`: the shared settings, and the host's own instance folder."""
        return {**os.environ, "SLUICE_INSTANCE_PATH": str(self.tmp_path / host), "PYTHONUNBUFFERED": "1"}

    def start(self, host: str, *args: str) -> subprocess.Popen:
        """Start a process of `host` in a session of its own (with its worker children); output to a file."""
        log = self.tmp_path / f"{host}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, env=self.env(host), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def worker(self, host: str, *options: str) -> subprocess.Popen:
        """`flask --app app worker [options]` on `host`."""
        return self.start(host, sys.executable, "-m", "flask", "--app", "app", "worker", *options)

    def pausing_worker(self, host: str, phase: str, marker: Path) -> subprocess.Popen:
        """A worker of `host` holding still in its first run at `phase` (tests/proc/worker.py queue-pause)."""
        return self.start(host, sys.executable, str(WORKER), "queue-pause", phase, str(marker))

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM (a worker stops after the job at hand), then SIGKILL for whatever of its group is left."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def output(self) -> str:
        """Every process's output so far, for a failing assertion's message."""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for _, log in self.procs)

    # -- what a user of host A sees ----------------------------------------------------------------

    def api_upload(self, data: bytes, query: str = "") -> int:
        response = self.client.post("/api/runs" + query, data=data, content_type="application/json")
        assert response.status_code == 202, response.get_data(as_text=True)
        return response.get_json()["id"]

    def run(self, run_id: int) -> dict:
        """The run as A's API shows it."""
        return self.client.get(f"/api/runs/{run_id}").get_json()

    def finished(self, run_id: int, timeout: float = 90) -> dict:
        """The run once A's API shows it finished."""
        wait_for(lambda: self.run(run_id)["status"] in TERMINAL, f"run {run_id} to finish", timeout=timeout,
                 step=0.2)
        return self.run(run_id)

    def worker_pid(self, run_id: int) -> int:
        """The process id in the run's worker name (host:pid:token)."""
        return int(run_of(self.engine, run_id).worker.split(":")[1])


@pytest.fixture
def hosts(db_url, engine, tmp_path, monkeypatch, s3_endpoint, password_hash):  # noqa: F811
    """Host A's app and client in this process, set up like host B's processes: from the environment."""
    from app import create_app
    from app.accounts.actor import Actor
    from app.accounts.users import create_user
    from app.extensions import db

    shared = {**KEYS, "SLUICE_S3_ENDPOINT": s3_endpoint,
              "SLUICE_UPLOAD_URL": f"s3://{BUCKET}/q-{uuid.uuid4().hex[:10]}", "SLUICE_EXECUTOR": "queue",
              "DATABASE_URL": db_url, "SECRET_KEY": SECRET,
              "SLUICE_RUN_LEASE_SECONDS": str(LEASE), "SLUICE_HEARTBEAT_SECONDS": str(HEARTBEAT)}
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_PROFILE", "SLUICE_UPLOAD_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in shared.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "a"))
    app = create_app({"TESTING": True})  # makes procrastinate's tables; db_url empties them
    with engine.connect() as conn:
        user = create_user(conn, "admin", "admin", Actor(label="test"), password_hash=password_hash)
    client = app.test_client()
    sign_in_as(client, user)
    hosts = Hosts(app, client, engine, tmp_path)
    try:
        yield hosts
    finally:
        for proc, _ in hosts.procs:
            hosts.stop(proc)
        with app.app_context():
            db.engine.dispose()


def test_an_upload_to_host_a_is_executed_by_a_worker_of_host_b_and_followed_from_a(hosts, tmp_path):
    marker = tmp_path / "marker"
    worker = hosts.pausing_worker("b", "reading", marker)
    data = make_records(tmp_path / "one.json", 3_000, seed=1).read_bytes()
    response = upload(hosts.client, data, "one.json")  # the home page's form
    assert response.status_code == 303
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])

    wait_for(marker.exists, "host B's worker to be reading the upload")
    live = hosts.client.get(f"/runs/{run_id}/progress.json").get_json()
    assert (live["status"], live["phase_label"]) == ("running", "reading the file"), live
    assert live["progress"]["phase"] == "reading" and live["progress"]["records"] > 0
    assert live["progress"]["file_size"] == len(data)
    assert hosts.run(run_id)["progress"]["phase"] == "reading"
    assert hosts.worker_pid(run_id) == worker.pid

    marker.unlink()  # go on
    run = hosts.finished(run_id)
    assert (run["status"], run["error"]) == ("succeeded", None), hosts.output()
    assert run["progress"] is None and run["summary"]["input_records"] == 3_000
    assert run["summary"]["inserted"] == len(target_rows(hosts.engine)) > 0
    assert rows(hosts.engine, "SELECT count(*) FROM lineage WHERE run_id = :r", r=run_id) == [
        (run["summary"]["lineage_entries"],)]
    assert '<span class="status succeeded">succeeded</span>' in hosts.client.get(f"/runs/{run_id}").get_data(
        as_text=True)


def test_a_cancel_sent_to_host_a_stops_the_run_executing_on_host_b(hosts, tmp_path):
    marker = tmp_path / "marker"
    worker = hosts.pausing_worker("b", "reading", marker)
    run_id = hosts.api_upload(make_records(tmp_path / "one.json", 3_000, seed=2).read_bytes())
    wait_for(marker.exists, "host B's worker to be reading the upload")
    with hosts.engine.connect() as conn:
        before = pipeline_helpers.snapshot(conn)

    response = hosts.client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert (response.get_json()["status"], response.get_json()["cancel_requested"]) == ("running", True)
    run = hosts.finished(run_id, timeout=30)
    assert (run["status"], run["error"]) == ("cancelled", "cancelled by request"), hosts.output()
    assert run["cancelled_by"] == "admin" and run["progress"] is None
    assert worker.poll() is None  # the worker goes on to the next job; only the run stopped
    with hosts.engine.connect() as conn:
        assert pipeline_helpers.snapshot(conn) == before
    assert target_rows(hosts.engine) == []


# Killed while reading, or holding the apply just before its COMMIT: the run of host B's dead worker is
# marked interrupted by a worker of host A (by its lease), which then executes the runs queued after it.
@pytest.mark.parametrize("phase", ["reading", "committing"])
def test_a_worker_killed_mid_run_changes_nothing_and_the_next_runs_go_on_with_another_worker(
        hosts, tmp_path, phase):
    marker = tmp_path / "marker"
    paths = [make_records(tmp_path / f"f{n}.json", 2_000, seed=10 + n, start=f"2024-01-01T00:{n * 10:02d}:00")
             for n in range(3)]
    killed = hosts.pausing_worker("b", phase, marker)
    first = hosts.api_upload(paths[0].read_bytes())
    wait_for(marker.exists, f"host B's worker to reach {phase}")
    later = [hosts.api_upload(p.read_bytes()) for p in paths[1:]]  # queued behind the paused run
    assert hosts.run(first)["progress"]["phase"] == phase

    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert target_rows(hosts.engine) == []  # nothing of the killed run is visible
    assert hosts.run(first)["status"] == "running"  # until another process notices its worker is gone

    worker = hosts.worker("a")
    runs = [hosts.finished(run_id) for run_id in [first, *later]]
    assert [(r["status"], r["error"]) for r in runs] == [
        ("failed", "interrupted"), ("succeeded", None), ("succeeded", None)], hosts.output()
    assert runs[0]["progress"] is None and runs[0]["finished_at"]
    assert all(hosts.worker_pid(run_id) == worker.pid for run_id in later)
    for table in ("lineage", "dead_letters", "watermark_history"):
        assert rows(hosts.engine, f"SELECT count(*) FROM {table} WHERE run_id = :r", r=first) == [(0,)]

    # The target is what the two later files give on their own.
    queued = target_rows(hosts.engine), [counts_of(hosts.run(run_id)["summary"]) for run_id in later]
    hosts.stop(worker)
    assert sequential(hosts.engine, paths[1:])[:2] == queued


def counts_of(summary: dict) -> tuple:
    return tuple(summary[k] for k in COUNTS)


def sequential(engine, paths, options=None) -> tuple[list, list, list]:
    """Target rows, per-run counts and watermarks of `paths` run one after another on an emptied database."""
    reset_tables(engine)
    options = options or [None] * len(paths)
    with engine.connect() as conn:
        summaries = [run_file(conn, p, kind="upload", options=o) for p, o in zip(paths, options, strict=True)]
    return (target_rows(engine), [counts_of(s) for s in summaries],
            [(s["watermark_before"], s["watermark"]) for s in summaries])


def test_twenty_runs_through_three_worker_processes_apply_once_each_in_queue_order(hosts, tmp_path):
    # Overlapping times over the same keys: later files update, earlier ones are skipped by the watermark,
    # and every fifth is a backfill (ignoring the watermark) whose older records are stale.
    paths = [make_records(tmp_path / f"f{n:02d}.json", 600, seed=100 + n,
                          start=f"2024-01-01T00:{(n * 7) % 60:02d}:00") for n in range(20)]
    backfill = [n % 5 == 4 for n in range(20)]
    worker = hosts.worker("b", "--concurrency", "3")
    wait_for(lambda: hosts.svc.workers() == 3, "host B's three worker processes to start", step=0.2)
    ids = [hosts.api_upload(p.read_bytes(), "?ignore_watermark=true" if b else "")
           for p, b in zip(paths, backfill, strict=True)]
    runs = [hosts.finished(run_id, timeout=120) for run_id in ids]
    assert [(r["status"], r["error"]) for r in runs] == [("succeeded", None)] * 20, hosts.output()

    # Exactly once, in queue order: each run's lineage written once, applied_seq following the ids.
    recorded = [run_of(hosts.engine, run_id) for run_id in ids]
    assert [r.applied_seq for r in recorded] == list(range(1, 21))
    per_run = dict(rows(hosts.engine, "SELECT run_id, count(*) FROM lineage GROUP BY run_id"))
    assert [per_run.get(run_id, 0) for run_id in ids] == [r["summary"]["lineage_entries"] for r in runs]
    pids = {hosts.worker_pid(run_id) for run_id in ids}
    assert worker.pid not in pids and len(pids) > 1  # read side by side by host B's worker processes
    queued = (target_rows(hosts.engine), [counts_of(r["summary"]) for r in runs],
              [(r["summary"]["watermark_before"], r["summary"]["watermark"]) for r in runs])
    watermark = rows(hosts.engine, "SELECT value FROM watermarks")
    letters = rows(hosts.engine, "SELECT run_id, key, error, status FROM dead_letters ORDER BY id")
    totals = {k: sum(r["summary"][k] for r in runs) for k in ("skipped", "stale", "updated", "rejected")}
    assert all(totals.values()), totals  # the files exercise every outcome

    hosts.stop(worker)
    options = [Options(ignore_watermark=b) for b in backfill]
    assert sequential(hosts.engine, paths, options) == queued
    assert rows(hosts.engine, "SELECT value FROM watermarks") == watermark
    assert rows(hosts.engine, "SELECT run_id, key, error, status FROM dead_letters ORDER BY id") == letters


def test_a_job_delivered_twice_applies_once(hosts, tmp_path):
    worker = hosts.worker("b")
    run_id = hosts.api_upload(make_records(tmp_path / "one.json", 2_000, seed=3).read_bytes())
    assert hosts.finished(run_id)["status"] == "succeeded", hosts.output()
    before = hosts.run(run_id), run_of(hosts.engine, run_id)
    with hosts.engine.connect() as conn:
        tables = pipeline_helpers.snapshot(conn)

    executor = hosts.svc.executor
    with executor.app.open():
        job = executor.execute_task.defer(run_id=run_id)  # the same run's job, a second time
    # Done and, like every job that succeeded, deleted by the worker (delete_jobs="successful").
    left = "SELECT count(*) FROM procrastinate_jobs WHERE id = :j"
    wait_for(lambda: rows(hosts.engine, left, j=job) == [(0,)], "the worker to execute the second job")
    assert (hosts.run(run_id), run_of(hosts.engine, run_id)) == before
    with hosts.engine.connect() as conn:
        assert pipeline_helpers.snapshot(conn) == tables
    assert worker.poll() is None


def test_without_a_worker_an_upload_stays_queued_and_its_page_says_it_waits_for_one(hosts, tmp_path):
    run_id = hosts.api_upload(make_records(tmp_path / "one.json", 100, seed=4).read_bytes())
    assert hosts.run(run_id)["status"] == "queued"
    assert hosts.client.get(f"/runs/{run_id}/progress.json").get_json()["phase_label"] == NO_WORKER
    page = html.unescape(hosts.client.get(f"/runs/{run_id}").get_data(as_text=True))
    assert NO_WORKER in page
    with hosts.app.app_context():  # as the `flask` command pushes one (app.cli alone does not)
        result = hosts.app.test_cli_runner().invoke(args=["queue"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["workers alive: 0", "jobs waiting for a worker: 1",
                                          "runs queued: 1, running: 0"]
