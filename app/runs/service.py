"""The run service: one small facade over the upload store, the queue, execution, liveness and housekeeping.

The web app, the API and the CLI only talk to `RunService`; the scale-out work replaces the store
(`UploadStore`) and the executor (`Executor`) behind it without touching the rest.
"""
import logging
import os
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ..accounts import audit
from ..accounts.actor import Actor
from ..config import ConfigError, pipeline_settings
from ..models import Run
from ..pipeline import Options, RunFailed, Settings, execute_run, run_file, warnings_of
from ..pipeline import reprocess as reprocess_dead_letters
from ..pipeline.run import Turn, upload_audit, writable_dataset
from .errors import RunStateError
from .executor import PROGRESS_INTERVAL, Body, Execution, Executor, ThreadExecutor, live_state
from .housekeeping import housekeep
from .liveness import Liveness
from .queue import QUEUE_KINDS, RunQueue
from .store import file_available, open_store, sha256_of

log = logging.getLogger(__name__)
NO_WORKER = "waiting for a worker: none is running (start one with: flask --app app worker)"


class RunService:
    """Submit, cancel, retry and follow runs; claim and execute queued ones; recover and clean up."""

    def __init__(self, engine: Engine, *, settings: Settings, upload_dir: str | Path, state_dir: str | Path,
                 max_upload_bytes: int | None, retention_hours: float, lease_seconds: float = 60.0,
                 heartbeat_seconds: float = 5.0, progress_interval: float = PROGRESS_INTERVAL):
        # `upload_dir`: the upload store's folder or URL (`SLUICE_UPLOAD_URL`).
        self.store = open_store(upload_dir, max_upload_bytes)
        self.engine, self.settings = engine, replace(settings, open_source=self.store.open)
        self.queue = RunQueue(engine)
        self.execution = Execution(engine, Path(state_dir) / "progress", heartbeat_seconds=heartbeat_seconds,
                                   progress_interval=progress_interval)
        self.liveness = Liveness(engine, Path(state_dir) / "workers", lease_seconds=lease_seconds)
        self.retention = timedelta(hours=retention_hours)
        self.executor: Executor | None = None

    # Names the tests and the benchmark use.
    upload_dir = property(lambda self: self.store.folder)
    progress_dir = property(lambda self: self.execution.progress_dir)
    lease = property(lambda self: self.liveness.lease)
    _host = property(lambda self: self.liveness.host)

    @property
    def progress_interval(self) -> float:
        return self.execution.progress_interval

    @progress_interval.setter
    def progress_interval(self, seconds: float) -> None:
        self.execution.progress_interval = seconds

    # -- what the web app, the API and the CLI use ----------------------------------------------

    def submit(self, stream: BinaryIO, filename: str | None, *, kind: str = "upload",
               options: Options | None = None, dataset="events", actor: Actor | None = None) -> int:
        """Store an upload by its SHA-256 and record a queued run of `dataset`; raise TooLarge or InputError at once.

        `actor` is who uploads (created_by, and the `upload` audit entry). Raises registry.DatasetError,
        before storing anything, when the dataset is unknown or archived.
        """
        if kind not in QUEUE_KINDS:
            raise ValueError(f"runs of kind {kind!r} are not executed by the queue")
        with self.engine.connect() as conn:
            dataset = writable_dataset(conn, dataset).name
        stored = self.store.put(stream)
        try:
            return self._record(kind=kind, options=options, source_name=filename, source_size=stored.size,
                                source_sha256=stored.sha256, file_path=str(stored.path), dataset=dataset,
                                actor=actor, audit_of=upload_audit(actor, dataset=dataset, source_name=filename,
                                                                   source_size=stored.size))
        except BaseException:
            self.store.discard(stored)  # no run refers to it: do not leave it behind
            raise

    def cancel(self, run_id: int, actor: Actor | None = None) -> str:
        """Cancel a queued run at once, or ask a running one to stop (by `actor`); return the run's status after."""
        return self.queue.cancel(run_id, actor)

    def retry(self, run_id: int, actor: Actor | None = None) -> int:
        """Queue a new run (kind `retry`, by `actor`) of a failed or cancelled run's stored file; return its id."""
        run = self.queue.find(run_id)
        if run.status not in ("failed", "cancelled"):
            raise RunStateError(f"run {run_id} is {run.status}: only a failed or cancelled run can be retried")
        return self._again(run, Options.from_json(run.options), "run_retry", actor)

    def backfill(self, run_id: int, actor: Actor | None = None) -> int:
        """Queue a backfill (kind `retry`, ignoring the watermark, by `actor`) of a run that skipped every record.

        The new run's options name the run it backfills (`backfill_of`); return its id.
        """
        run = self.queue.find(run_id)
        if "all_skipped" not in {w["code"] for w in warnings_of(run)}:
            raise RunStateError(f"run {run_id} did not skip every record as older than the watermark: "
                                "there is nothing to backfill")
        options = replace(Options.from_json(run.options), ignore_watermark=True, backfill_of=run.id)
        return self._again(run, options, "run_backfill", actor)

    def _again(self, run, options: Options, action: str, actor: Actor | None) -> int:
        """Queue a new run of `run`'s stored file, linked to it (`retry_of_id`), audited as `action`."""
        if not self.file_available(run):
            raise RunStateError(f"the file of run {run.id} is no longer stored; upload it again")

        def audit_of(new_id: int) -> dict:
            return audit.entry(action, actor, object_type="run", object_id=run.id, dataset=run.dataset,
                               detail={"new_run": new_id})

        return self._record(kind="retry", options=options, source_name=run.source_name,
                            source_size=run.source_size, source_sha256=run.source_sha256,
                            file_path=run.file_path, retry_of_id=run.id, dataset=run.dataset,
                            actor=actor, audit_of=audit_of if actor is not None else None)

    def progress(self, run_id: int) -> dict | None:
        """The live progress of a running run (phase, records, skipped, rejected, bytes_read, file_size), or None."""
        return self.execution.progress(run_id)

    def live(self, run: dict) -> dict:
        """A run's row with its live progress and how far it is in words (`live_state`), for its page and poll."""
        progress = self.progress(run["id"]) if run["status"] in ("queued", "running") else None
        state = live_state(run, progress)
        if run["status"] == "queued" and self.workers() == 0:
            state["phase_label"] = NO_WORKER
        return {**run, "progress": progress, **state}

    def workers(self) -> int | None:
        """How many queue workers are alive on any host (None with the embedded executor, which needs none)."""
        count = getattr(self.executor, "workers", None)
        return count() if count is not None else None

    def run_file(self, path: str | Path, *, options: Options | None = None, dataset="events",
                 actor: Actor | None = None) -> dict:
        """Execute a `cli` run of a local file into `dataset` now, claimed by this process; return its summary.

        `actor` is who runs it (audited as an `upload`). Raises RunFailed when the run failed,
        registry.DatasetError when the dataset is unknown or archived.
        """
        with self.engine.connect() as conn:
            return run_file(conn, path, kind="cli", options=options, settings=self.settings,
                            worker=self.worker_id(), supervise=self._supervise, dataset=dataset, actor=actor)

    def reprocess(self, ids: list[int], *, edited=None, actor: Actor | None = None) -> dict:
        """Retry open dead letters of one dataset now as one `reprocess` run of this process; return its summary.

        The run belongs to the dead letters' dataset; `actor` is who asks (audited). Raises DeadLetterError
        when the selection cannot be retried, RunFailed when the run failed, registry.DatasetError when
        the dataset is archived.
        """
        with self.engine.connect() as conn:
            return reprocess_dead_letters(conn, ids, edited=edited, settings=self.settings,
                                          worker=self.worker_id(), supervise=self._supervise, actor=actor)

    @staticmethod
    def file_available(run) -> bool:
        """Whether a run's stored file can still be read (for a retry)."""
        return file_available(run.file_path, run.file_removed_at)

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
            if not self.queue.queued_exists():
                return done
            # Another process is executing a run: wait for it (or for its lease to expire).
            time.sleep(poll)
            self.recover()

    # -- claiming and executing -----------------------------------------------------------------

    def _record(self, **values) -> int:
        run_id = self.queue.record(**values)
        if self.executor is not None:
            self.executor.submit(run_id)
        return run_id

    def claim_next(self) -> int | None:
        """Claim the oldest queued run for this process, unless a run is being executed; return its id."""
        return self.queue.claim_next(self.worker_id())

    def execute(self, run_id: int, turn: Turn | None = None) -> dict | None:
        """Execute a run this process has claimed; return its summary, or None when it did not succeed.

        With `turn` (see `turn()`), it waits after reading for the runs queued before it.
        """
        try:
            with self.engine.connect() as conn:
                return self._supervise(run_id, lambda reporter: execute_run(
                    conn, run_id, settings=self.settings, progress=reporter, turn=turn))
        except RunFailed:
            return None
        except Exception as exc:  # the database went away before the pipeline could record the failure
            log.exception("run %s could not be executed", run_id)
            self.queue.mark_failed(run_id, f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            return None

    def turn(self, run_id: int, *, poll: float = 0.2, recover_seconds: float = 5.0) -> Turn:
        """The wait of a run read beside others: until every run queued before it has finished.

        A run before it that no worker has claimed yet (its job came late, or was put back after its
        worker died) is claimed and executed here, so that workers all waiting for their turn never
        wait for each other; runs of dead workers are marked interrupted meanwhile.
        """
        def wait(tick) -> None:
            last_recover = time.monotonic()
            while (earlier := self.queue.earlier_unfinished(run_id)) is not None:
                tick()  # raises RunCancelled once this run is cancelled
                if earlier.status == "queued" and self.queue.claim(earlier.id, self.worker_id()):
                    self.execute(earlier.id, turn=self.turn(earlier.id, poll=poll, recover_seconds=recover_seconds))
                    continue
                if time.monotonic() - last_recover >= recover_seconds:
                    self.recover()
                    last_recover = time.monotonic()
                time.sleep(poll)

        return wait

    def _supervise(self, run_id: int, body: Body) -> dict:
        """Execute a claimed run, whoever started it, with its reporter and watcher; check its file first."""
        self._check_file(run_id)
        return self.execution.supervise(run_id, body)

    def _check_file(self, run_id: int) -> None:
        """Refuse a retry of a user's own file (a `cli` run's) whose content changed since it was recorded.

        Stored uploads are named by their digest; a user's file is read again where it lies, so the
        retry would otherwise load other data under the old SHA-256.
        """
        with self.engine.connect() as conn:
            run = conn.execute(select(Run.kind, Run.file_path, Run.source_sha256, Run.retry_of_id)
                               .where(Run.id == run_id)).one()
            conn.rollback()
        if run.kind != "retry" or not run.source_sha256 or self.store.owns(run.file_path):
            return
        try:
            same = sha256_of(run.file_path) == run.source_sha256
        except FileNotFoundError:
            return  # the pipeline says the file is gone
        if not same:
            message = (f"the file {run.file_path} changed since run {run.retry_of_id} was recorded "
                       f"(SHA-256 {run.source_sha256}); run it again with flask etl run")
            self.queue.mark_failed(run_id, message)
            raise RunFailed(run_id, message)

    # -- liveness, recovery and housekeeping ----------------------------------------------------

    def worker_id(self) -> str:
        """This process's worker name (host:pid:token), holding its liveness lock file from now on."""
        return self.liveness.worker_id()

    def worker_alive(self, worker: str, heartbeat_at: str | None) -> bool:
        """Whether a run's claiming process lives: its lock file on this host, its lease elsewhere."""
        return self.liveness.alive(worker, heartbeat_at)

    def recover(self) -> list[int]:
        """Mark `failed` ("interrupted") every running run whose worker died or whose lease expired."""
        if self.queue.intake is not None:  # moves into `runs` whose mover died are put back in the queue
            self.queue.intake.release_dead(lambda worker: self.liveness.alive(worker, None))
        return self.liveness.recover(forget=self.execution.board.clear)

    def housekeep(self, now=None) -> list[str]:
        """Remove stored uploads whose runs all ended longer than the retention ago; return their paths."""
        return housekeep(self.engine, self.store, self.retention, now)


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
    from ..extensions import db

    with app.app_context():
        engine = db.engine
    try:
        service = RunService(
            engine, settings=pipeline_settings(app.config),
            upload_dir=app.config.get("SLUICE_UPLOAD_URL") or app.config["SLUICE_UPLOAD_DIR"],
            state_dir=app.instance_path, max_upload_bytes=app.config["SLUICE_MAX_UPLOAD_BYTES"],
            retention_hours=app.config["SLUICE_FILE_RETENTION_HOURS"],
            lease_seconds=app.config["SLUICE_RUN_LEASE_SECONDS"],
            heartbeat_seconds=app.config["SLUICE_HEARTBEAT_SECONDS"],
            progress_interval=app.config["SLUICE_PROGRESS_INTERVAL"])
        service.store.check()
    except ConfigError as exc:  # a bad upload URL, or a bucket that cannot be reached: one line and no start
        raise SystemExit(f"Sluice cannot start: {exc}") from None
    app.extensions["sluice_runs"] = service
    if app.config.get("SLUICE_DB_ERROR"):
        return service
    if app.config["SLUICE_EXECUTOR"] == "queue":
        if engine.dialect.name != "postgresql":
            raise SystemExit("Sluice cannot start: SLUICE_EXECUTOR=queue needs PostgreSQL (DATABASE_URL="
                             "postgresql://…); on SQLite runs are executed by the embedded executor")
        from .taskqueue import QueueExecutor

        service.executor = QueueExecutor(service)
        return service
    if app.config["SLUICE_EMBEDDED_WORKER"] and _should_start_worker():
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
