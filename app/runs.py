"""Starting, tracking and recovering runs off the request: the run service and its executor.

A submitted file is stored under the upload folder by its SHA-256 and recorded as a `queued` run.
An executor claims queued runs atomically in the database, one at a time in queue order, so that
several processes (gunicorn workers) execute every run exactly once. Progress and liveness live
outside the database: a small JSON file per running run, and a lock file per worker process that
the kernel releases when the process dies.
"""
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import case, func, select, update
from sqlalchemy.engine import Connection, Engine

from .config import pipeline_settings
from .database import write_transaction
from .models import Run
from .pipeline import (InputError, Options, RunCancelled, RunFailed, Settings, TooLarge, create_run,
                       execute_run, run_file, sniff)
from .pipeline import reprocess as reprocess_dead_letters
from .formatting import human_bytes
from .pipeline.validate import canonical, now_text, utc_now

log = logging.getLogger(__name__)

# Kinds that go through the queue; `cli` and `reprocess` runs are executed at once by their caller.
QUEUE_KINDS = ("upload", "api", "retry")
CHUNK = 1 << 20
SNIFF_BYTES = 4096
PROGRESS_INTERVAL = 0.5
INTERRUPTED = "interrupted"


class RunStateError(ValueError):
    """The run's state does not allow what was asked (cancel, retry), or its file is gone."""


class RunNotFound(RunStateError):
    """There is no run with this id."""


class Executor(Protocol):
    """Where queued runs are executed: a thread in the app process now, a task queue later."""

    def start(self) -> None:
        """Begin executing queued runs."""

    def submit(self, run_id: int) -> None:
        """Tell the executor that `run_id` was queued."""


class ProgressReporter:
    """The pipeline's progress callback: writes a run's progress file, and stops the run when cancelled."""

    def __init__(self, path: Path, run_id: int, file_size: int | None, cancelled: threading.Event,
                 interval: float = PROGRESS_INTERVAL):
        self.path, self.run_id, self.file_size, self.cancelled = path, run_id, file_size, cancelled
        self.interval = interval
        self._phase, self._last, self._bytes = None, 0.0, 0

    def __call__(self, phase: str, records: int, bytes_read: int) -> None:
        # After "done" the run has committed: a cancel then is too late, not a rollback.
        if phase != "done" and self.cancelled.is_set():
            raise RunCancelled()
        self._bytes = max(self._bytes, bytes_read)
        now = time.monotonic()
        if phase == self._phase and now - self._last < self.interval:
            return
        self._phase, self._last = phase, now
        write_json_atomically(self.path, {"run_id": self.run_id, "phase": phase, "records": records,
                                          "bytes_read": self._bytes, "file_size": self.file_size,
                                          "updated_at": now_text()})


def write_json_atomically(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON so that a reader sees the old or the new file, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunService:
    """Submit, cancel, retry and follow runs; claim and execute queued ones; recover and clean up."""

    def __init__(self, engine: Engine, *, settings: Settings, upload_dir: str | Path, state_dir: str | Path,
                 max_upload_bytes: int | None, retention_hours: float, lease_seconds: float = 60.0,
                 heartbeat_seconds: float = 5.0, progress_interval: float = PROGRESS_INTERVAL):
        self.engine, self.settings = engine, settings
        self.progress_interval = progress_interval
        self.upload_dir = Path(upload_dir).absolute()
        self.progress_dir = Path(state_dir) / "progress"
        self.workers_dir = Path(state_dir) / "workers"
        self.max_upload_bytes = max_upload_bytes
        self.retention = timedelta(hours=retention_hours)
        self.lease = timedelta(seconds=lease_seconds)
        self.heartbeat_seconds = heartbeat_seconds
        self.executor: Executor | None = None
        self._host = socket.gethostname()
        self._identity_lock = threading.Lock()
        self._pid = None
        self._worker = None
        self._lock_fd = None
        for folder in (self.upload_dir, self.progress_dir, self.workers_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # -- the interface the web app and the API use --------------------------------------------------

    def submit(self, stream: BinaryIO, filename: str | None, *, kind: str = "upload",
               options: Options | None = None) -> int:
        """Store an upload by its SHA-256 and record a queued run; raise TooLarge or InputError at once."""
        if kind not in QUEUE_KINDS:
            raise ValueError(f"runs of kind {kind!r} are not executed by the queue")
        path, size, digest, new = self._store(stream)
        try:
            return self._record(kind=kind, options=options, source_name=filename, source_size=size,
                                source_sha256=digest, file_path=str(path))
        except BaseException:
            if new:  # no run refers to it: do not leave it behind
                path.unlink(missing_ok=True)
            raise

    def cancel(self, run_id: int) -> str:
        """Cancel a queued run at once, or ask a running one to stop; return the run's status after."""
        # Conditional updates: no need to wait for another run's apply on PostgreSQL.
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            status = self._status(conn, run_id)
            if status == "queued":
                conn.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(
                    status="cancelled", error="cancelled by request", finished_at=now_text()))
                return "cancelled"
            if status == "running":
                conn.execute(update(Run).where(Run.id == run_id).values(cancel_requested=True))
                return "running"
        raise RunStateError(f"run {run_id} is {status}: only a queued or running run can be cancelled")

    def retry(self, run_id: int) -> int:
        """Queue a new run (kind `retry`) of a failed or cancelled run's stored file; return its id."""
        with self.engine.connect() as conn:
            with conn.begin():
                run = conn.execute(select(Run).where(Run.id == run_id)).one_or_none()
            if run is None:
                raise RunNotFound(f"there is no run {run_id}")
            if run.status not in ("failed", "cancelled"):
                raise RunStateError(f"run {run_id} is {run.status}: "
                                    "only a failed or cancelled run can be retried")
            if not self.file_available(run):
                raise RunStateError(f"the file of run {run_id} is no longer stored; upload it again")
            return self._record(kind="retry", options=Options.from_json(run.options),
                                source_name=run.source_name, source_size=run.source_size,
                                source_sha256=run.source_sha256,
                                file_path=run.file_path, retry_of_id=run.id)

    def progress(self, run_id: int) -> dict | None:
        """The live progress of a running run (phase, records, bytes_read, file_size), or None."""
        try:
            return json.loads((self.progress_dir / f"{int(run_id)}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def drain(self, *, poll: float = 0.1) -> list[int]:
        """Execute every queued run now, in queue order, in the calling thread; return their ids."""
        done = []
        self.recover()
        while True:
            run_id = self.claim_next()
            if run_id is not None:
                self.execute(run_id)
                done.append(run_id)
                continue
            if not self._queued_exists():
                return done
            # Another process is executing a run: wait for it (or for its lease to expire).
            time.sleep(poll)
            self.recover()

    def run_file(self, path: str | Path, *, options: Options | None = None) -> dict:
        """Execute a `cli` run of a local file now, claimed by this process; return its summary or raise RunFailed."""
        with self.engine.connect() as conn:
            return run_file(conn, path, kind="cli", options=options, settings=self.settings,
                            worker=self.worker_id())

    def reprocess(self, ids: list[int], *, edited=None) -> dict:
        """Retry open dead letters now as one `reprocess` run of this process; return its summary.

        Raises DeadLetterError when the selection cannot be retried, RunFailed when the run failed.
        """
        with self.engine.connect() as conn:
            return reprocess_dead_letters(conn, ids, edited=edited, settings=self.settings,
                                          worker=self.worker_id())

    @staticmethod
    def file_available(run) -> bool:
        """Whether a run's stored file can still be read (for a retry)."""
        return bool(run.file_path) and run.file_removed_at is None and Path(run.file_path).is_file()

    # -- storing uploads --------------------------------------------------------------------------

    def _store(self, stream: BinaryIO) -> tuple[Path, int, str, bool]:
        digest, size, limit = hashlib.sha256(), 0, self.max_upload_bytes
        fd, tmp = tempfile.mkstemp(dir=self.upload_dir, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                head = b""
                while len(head) < SNIFF_BYTES:
                    block = stream.read(SNIFF_BYTES - len(head))
                    if not block:
                        break
                    head += block
                reason = sniff(head)
                if reason:
                    raise InputError(reason)
                block = head
                while block:
                    size += len(block)
                    if limit is not None and size > limit:
                        raise TooLarge(f"the file is larger than the upload size limit of {human_bytes(limit)}")
                    digest.update(block)
                    out.write(block)
                    block = stream.read(CHUNK)
            path = self.upload_dir / digest.hexdigest()
            new = not path.exists()
            # Same content under the same name: replacing is harmless, and the fresh mtime keeps
            # housekeeping from removing a file that an earlier run's retention has just run out on.
            os.replace(tmp, path)
            return path, size, digest.hexdigest(), new
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _record(self, **values) -> int:
        with self.engine.connect() as conn:
            run_id = create_run(conn, **values)
        if self.executor is not None:
            self.executor.submit(run_id)
        return run_id

    @staticmethod
    def _status(conn: Connection, run_id: int) -> str:
        status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar()
        if status is None:
            raise RunNotFound(f"there is no run {run_id}")
        return status

    def _queued_exists(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(Run.id).where(Run.status == "queued", Run.kind.in_(QUEUE_KINDS))
                                .limit(1)).first() is not None

    # -- claiming and executing -------------------------------------------------------------------

    def claim_next(self) -> int | None:
        """Claim the oldest queued run for this process, unless a run is being executed; return its id."""
        worker = self.worker_id()
        with self.engine.connect() as conn:
            # Cheap read first, so idle pollers never take the write lock.
            with conn.begin():
                if not self._claimable(conn):
                    return None
            with write_transaction(conn):
                if not self._claimable(conn):
                    return None
                run_id = conn.execute(select(func.min(Run.id)).where(
                    Run.status == "queued", Run.kind.in_(QUEUE_KINDS))).scalar()
                now = now_text()
                claimed = conn.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(
                    status="running", worker=worker, heartbeat_at=now, started_at=now))
                return run_id if claimed.rowcount == 1 else None

    @staticmethod
    def _claimable(conn: Connection) -> bool:
        busy = conn.execute(select(Run.id).where(Run.status == "running", Run.worker.is_not(None))
                            .limit(1)).first()
        if busy is not None:
            return False
        return conn.execute(select(Run.id).where(Run.status == "queued", Run.kind.in_(QUEUE_KINDS))
                            .limit(1)).first() is not None

    def execute(self, run_id: int) -> dict | None:
        """Execute a run this process has claimed; return its summary, or None when it did not succeed."""
        cancelled = threading.Event()
        stop = threading.Event()
        with self.engine.connect() as conn:
            run = conn.execute(select(Run.source_size, Run.cancel_requested).where(Run.id == run_id)).one()
            conn.rollback()
        if run.cancel_requested:
            cancelled.set()
        path = self.progress_dir / f"{run_id}.json"
        reporter = ProgressReporter(path, run_id, run.source_size, cancelled, self.progress_interval)
        watcher = threading.Thread(target=self._watch, args=(run_id, cancelled, stop),
                                   name=f"sluice-run-{run_id}-watch", daemon=True)
        watcher.start()
        try:
            with self.engine.connect() as conn:
                return execute_run(conn, run_id, settings=self.settings, progress=reporter)
        except RunFailed:
            return None
        except Exception as exc:  # the database went away before the pipeline could record the failure
            log.exception("run %s could not be executed", run_id)
            self._mark_failed(run_id, f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            return None
        finally:
            stop.set()
            watcher.join()
            path.unlink(missing_ok=True)

    def _watch(self, run_id: int, cancelled: threading.Event, stop: threading.Event) -> None:
        """Beat the run's heartbeat and pick up a cancel request while the run executes."""
        last_beat = time.monotonic()
        while not stop.wait(0.5):
            try:
                with self.engine.connect() as conn:
                    if conn.execute(select(Run.cancel_requested).where(Run.id == run_id)).scalar():
                        cancelled.set()
                    conn.rollback()
                    if time.monotonic() - last_beat >= self.heartbeat_seconds:
                        self._beat(conn, run_id)
                        last_beat = time.monotonic()
            except Exception:  # a busy or unreachable database: try again at the next beat
                log.warning("heartbeat of run %s failed", run_id, exc_info=True)

    def _beat(self, conn: Connection, run_id: int) -> None:
        # The heartbeat must not queue behind another run's apply lock (PostgreSQL).
        with write_transaction(conn, apply_lock=False):
            conn.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                         .values(heartbeat_at=now_text()))

    def _mark_failed(self, run_id: int, message: str) -> None:
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            conn.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(
                status="failed", error=message, finished_at=now_text()))

    # -- liveness and recovery --------------------------------------------------------------------

    def worker_id(self) -> str:
        """This process's worker name (host:pid:token), holding its liveness lock file from now on."""
        with self._identity_lock:
            if self._pid != os.getpid():  # first use, or a forked child: a name and a lock of its own
                token = uuid.uuid4().hex[:12]
                tmp = self.workers_dir / f".{token}.tmp"
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Locked before it gets its name, so a sweep of dead workers' files never takes it.
                os.rename(tmp, self.workers_dir / f"{token}.lock")
                self._pid, self._lock_fd = os.getpid(), fd
                self._worker = f"{self._host}:{os.getpid()}:{token}"
            return self._worker

    def worker_alive(self, worker: str, heartbeat_at: str | None) -> bool:
        """Whether a run's claiming process lives: its lock file on this host, its lease elsewhere."""
        host, _, token = worker.rpartition(":")
        host = host.rpartition(":")[0]
        if host != self._host:
            cutoff = canonical(utc_now() - self.lease)
            return heartbeat_at is not None and heartbeat_at >= cutoff
        return _held(self.workers_dir / f"{token}.lock")

    def recover(self) -> list[int]:
        """Mark `failed` ("interrupted") every running run whose worker died or whose lease expired."""
        with self.engine.connect() as conn:
            running = conn.execute(select(Run.id, Run.worker, Run.heartbeat_at).where(
                Run.status == "running", Run.worker.is_not(None))).all()
            conn.rollback()
            dead = [r for r in running if not self.worker_alive(r.worker, r.heartbeat_at)]
            marked = []
            for r in dead:
                with write_transaction(conn):
                    done = conn.execute(update(Run).where(
                        Run.id == r.id, Run.status == "running", Run.worker == r.worker).values(
                        status="failed", error=INTERRUPTED, finished_at=now_text()))
                if done.rowcount:
                    marked.append(r.id)
                    (self.progress_dir / f"{r.id}.json").unlink(missing_ok=True)
                    log.warning("run %s was interrupted (worker %s is gone)", r.id, r.worker)
        for path in self.workers_dir.glob("*.lock"):
            _held(path, remove_if_free=True)  # files of processes that ended
        return marked

    # -- housekeeping -----------------------------------------------------------------------------

    def housekeep(self, now=None) -> list[str]:
        """Remove stored uploads whose runs all ended longer than the retention ago; return their paths."""
        cutoff = canonical((now or utc_now()) - self.retention)
        unfinished = func.sum(case((Run.finished_at.is_(None), 1), else_=0))
        # Only files this service stored: a `cli` run's file_path is the user's own file.
        ours = Run.file_path.startswith(f"{self.upload_dir}{os.sep}", autoescape=True)
        with self.engine.connect() as conn:
            paths = conn.execute(
                select(Run.file_path).where(ours, Run.file_removed_at.is_(None))
                .group_by(Run.file_path)
                .having(unfinished == 0, func.max(Run.finished_at) < cutoff)).scalars().all()
            conn.rollback()
            removed = []
            for path in paths:
                with write_transaction(conn):
                    # Checked again under the lock: a retry may have queued a run of this file meanwhile.
                    busy = conn.execute(select(Run.id).where(
                        Run.file_path == path, Run.file_removed_at.is_(None),
                        (Run.finished_at.is_(None)) | (Run.finished_at >= cutoff)).limit(1)).first()
                    if busy is not None or _modified_after(Path(path), cutoff):
                        continue
                    conn.execute(update(Run).where(Run.file_path == path, Run.file_removed_at.is_(None))
                                 .values(file_removed_at=now_text()))
                    Path(path).unlink(missing_ok=True)
                removed.append(path)
        return removed


class ThreadExecutor:
    """Execute queued runs in a background thread of the app process (the embedded default)."""

    def __init__(self, service: RunService, *, poll_seconds: float = 1.0, recover_seconds: float = 10.0,
                 housekeep_seconds: float = 600.0):
        self.service = service
        self.poll_seconds, self.recover_seconds = poll_seconds, recover_seconds
        self.housekeep_seconds = housekeep_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker thread in this process, once (again in a forked child)."""
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sluice-runs", daemon=True)
            self._thread.start()

    def submit(self, run_id: int) -> None:
        """Wake the worker thread: a run was queued."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker thread after the run it is executing, if any."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        last_recover = last_housekeep = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now - last_recover >= self.recover_seconds:
                    self.service.recover()
                    last_recover = now
                if now - last_housekeep >= self.housekeep_seconds:
                    self.service.housekeep()
                    last_housekeep = now
                run_id = self.service.claim_next()
                if run_id is not None:
                    self.service.execute(run_id)
                    continue
            except Exception:  # keep the worker alive through a database outage
                log.exception("the run worker hit an error; retrying")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()


def _modified_after(path: Path, cutoff: str) -> bool:
    """Whether a stored file was written after `cutoff` (uploaded again, its run not recorded yet)."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return canonical(datetime.fromtimestamp(mtime, timezone.utc).replace(tzinfo=None)) >= cutoff


def _held(path: Path, remove_if_free: bool = False) -> bool:
    """Whether a live process holds the lock on `path` (a missing file is held by no one)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        if remove_if_free:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # also releases the lock if we just took it
    return False


def _should_start_worker() -> bool:
    """Start the embedded worker under a server or `flask run` (its reloader child), not other commands."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True  # gunicorn, a WSGI server, a script
    if ctx.info_name != "run" or ctx.parent is None or ctx.parent.parent is not None:
        return False  # `flask etl …`, `flask shell`, `flask db …`
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return True  # the reloader's child, which serves the requests
    reload = ctx.params.get("reload")
    if reload is None:
        reload = ctx.params.get("debug") or ctx.find_root().params.get("debug") or _debug_env()
    return not reload  # with the reloader on, only its child executes runs


def _preloading_gunicorn() -> bool:
    """Whether this is a gunicorn master loading the app before it forks its workers (--preload)."""
    args = sys.argv[1:] + os.environ.get("GUNICORN_CMD_ARGS", "").split()
    return "gunicorn" in sys.argv[0] and "--preload" in args


def _debug_env() -> bool:
    return os.environ.get("FLASK_DEBUG", "").lower() in ("1", "true", "yes", "on")


def current_service() -> RunService:
    """The run service of the app serving the current request or command."""
    from flask import current_app

    return current_app.extensions["sluice_runs"]


def init_app(app) -> RunService:
    """Create the app's run service (`app.extensions["sluice_runs"]`) and, if configured, its worker."""
    from .extensions import db

    with app.app_context():
        engine = db.engine
    service = RunService(
        engine, settings=pipeline_settings(app.config), upload_dir=app.config["SLUICE_UPLOAD_DIR"],
        state_dir=app.instance_path, max_upload_bytes=app.config["SLUICE_MAX_UPLOAD_BYTES"],
        retention_hours=app.config["SLUICE_FILE_RETENTION_HOURS"],
        lease_seconds=app.config["SLUICE_RUN_LEASE_SECONDS"],
        heartbeat_seconds=app.config["SLUICE_HEARTBEAT_SECONDS"],
        progress_interval=app.config["SLUICE_PROGRESS_INTERVAL"])
    app.extensions["sluice_runs"] = service
    embedded = app.config["SLUICE_EMBEDDED_WORKER"] and not app.config.get("SLUICE_DB_ERROR")
    if embedded and _should_start_worker():
        executor = ThreadExecutor(service)
        service.executor = executor
        if _preloading_gunicorn():
            # The master only forks: each worker gets its own thread, and no pooled connection crosses a fork.
            def in_child():
                engine.dispose(close=False)
                executor.start()
            os.register_at_fork(after_in_child=in_child)
        else:
            executor.start()
        app.before_request(executor.start)  # a safety net: starts it where a fork left it behind
    return service


__all__ = ["Executor", "ProgressReporter", "RunService", "RunStateError", "RunNotFound", "ThreadExecutor",
           "QUEUE_KINDS", "init_app"]
