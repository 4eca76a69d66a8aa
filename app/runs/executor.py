"""Executing runs: the Executor protocol, the embedded thread executor, and executing one claimed run.

Every run executed by this process, whoever started it (the queue, `flask etl run`, a reprocess),
goes through `Execution.supervise`: a progress reporter that writes the run's progress to its board
(`app.runs.progress`) and stops the run when it is cancelled, and a watcher thread that picks up
cancel requests and beats the run's heartbeat.
"""
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from ..database import checkpoint, write_transaction
from ..models import Run
from ..pipeline import RunCancelled
from ..pipeline.run import PHASES
from ..pipeline.validate import now_text
from .progress import FileBoard, TableBoard, board_for

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5
ESTIMATE_AFTER = 3.0  # seconds of reading before the time left is estimated


class Executor(Protocol):
    """Where queued runs are executed: a thread in the app process now, a task queue later."""

    def start(self) -> None:
        """Begin executing queued runs."""

    def submit(self, run_id: int) -> None:
        """Tell the executor that `run_id` was queued."""


class ProgressReporter:
    """The pipeline's progress callback: writes a run's progress to its board, and stops the run when cancelled."""

    def __init__(self, board: FileBoard | TableBoard, run_id: int, file_size: int | None,
                 cancelled: threading.Event, interval: float = PROGRESS_INTERVAL):
        self.board, self.run_id, self.file_size, self.cancelled = board, run_id, file_size, cancelled
        self.interval = interval
        self._phase, self._last, self._bytes, self._counts = None, 0.0, 0, None

    def follow(self, counts) -> None:
        """Report the skipped and rejected records so far from `counts` (the pipeline's StageCounts)."""
        self._counts = counts

    def __call__(self, phase: str, records: int, bytes_read: int) -> None:
        # After "done" the run has committed: a cancel then is too late, not a rollback.
        if phase != "done" and self.cancelled.is_set():
            raise RunCancelled()
        self._bytes = max(self._bytes, bytes_read)
        now = time.monotonic()
        if phase == self._phase and now - self._last < self.interval:
            return
        self._phase, self._last = phase, now
        counts = self._counts
        data = {"run_id": self.run_id, "phase": phase, "records": records,
                "skipped": counts.skipped if counts else 0, "rejected": counts.rejected if counts else 0,
                "bytes_read": self._bytes, "file_size": self.file_size, "updated_at": now_text()}
        try:
            self.board.write(self.run_id, data)
        except Exception:  # progress is for people watching; a failed write must not fail the run
            log.warning("the progress of run %s could not be written", self.run_id, exc_info=True)


def live_state(run: dict, progress: dict | None) -> dict:
    """How far a run is, in the words its page and progress.json share (one place for both).

    `run` is a run's row (with `ahead`, the runs before a queued one, when known) and `progress`
    what its reporter wrote. Gives `phase_label`, `percent` (of the file read), `time_left` (an
    estimate while reading, from the bytes read per second since it started; none in its first
    seconds or for a file of unknown size) and `so_far` (records read, skipped and rejected).
    """
    status, phase = run["status"], (progress or {}).get("phase")
    if status == "queued":
        ahead = run.get("ahead")
        label = "waiting for its turn" + ("" if ahead is None else " (next in line)" if ahead == 0
                                          else f" ({ahead:,} run{'s' if ahead > 1 else ''} ahead)")
    elif status == "running":
        label = PHASES.get(phase, phase) if phase else "starting"
        if run.get("cancel_requested") and phase != "done":
            label += " (stopping: cancel requested)"
    else:
        label = status
    state = {"phase_label": label, "percent": None, "time_left": None, "time_left_seconds": None, "so_far": None}
    if status != "running" or not progress:
        return state
    state["so_far"] = {"input_records": progress.get("records", 0), "skipped": progress.get("skipped", 0),
                       "rejected": progress.get("rejected", 0)}
    size, done = progress.get("file_size"), progress.get("bytes_read") or 0
    if not size:
        return state
    state["percent"] = min(100, 100 * done // size)
    elapsed = _seconds_between(run.get("started_at"), progress.get("updated_at"))
    if phase == "reading" and done and elapsed is not None and elapsed >= ESTIMATE_AFTER:
        left = max(0, round((size - done) * elapsed / done))
        state["time_left_seconds"], state["time_left"] = left, f"about {duration_text(left)} left to read"
    return state


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def duration_text(seconds: float) -> str:
    """A duration as people read it: 45 s, 1 m 05 s, 2 h 03 m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} m"


# What the pipeline is asked to do once the reporter exists: execute the run with it as its progress.
Body = Callable[[ProgressReporter], dict]


class Execution:
    """Execute a run this process has claimed, with its progress reporter and cancel/heartbeat watcher."""

    def __init__(self, engine: Engine, progress_dir: str | Path, *, heartbeat_seconds: float,
                 progress_interval: float = PROGRESS_INTERVAL, watch_seconds: float = 0.5):
        self.engine = engine
        self.progress_dir = Path(progress_dir)
        self.board = board_for(engine, self.progress_dir)
        self.heartbeat_seconds = heartbeat_seconds
        self.progress_interval = progress_interval
        self.watch_seconds = watch_seconds

    def reporter(self, run_id: int, file_size: int | None, cancelled: threading.Event) -> ProgressReporter:
        """A progress reporter of a run onto this process's board."""
        return ProgressReporter(self.board, run_id, file_size, cancelled, self.progress_interval)

    def progress(self, run_id: int) -> dict | None:
        """The live progress of a running run (phase, records, bytes_read, file_size), or None."""
        return self.board.read(run_id)

    def supervise(self, run_id: int, body: Body) -> dict:
        """Run `body(reporter)` for a claimed run while a watcher follows its cancel flag and heartbeat.

        Returns the run's summary; raises what `body` raises (RunFailed when the run failed).
        """
        cancelled, stop = threading.Event(), threading.Event()
        with self.engine.connect() as conn:
            run = conn.execute(select(Run.source_size, Run.cancel_requested).where(Run.id == run_id)).one()
            conn.rollback()
        if run.cancel_requested:
            cancelled.set()
        reporter = self.reporter(run_id, run.source_size, cancelled)
        watcher = threading.Thread(target=self._watch, args=(run_id, cancelled, stop),
                                   name=f"sluice-run-{run_id}-watch", daemon=True)
        watcher.start()
        try:
            summary = body(reporter)
        finally:
            stop.set()
            watcher.join()
            try:
                self.board.clear(run_id)
            except Exception:  # the run's outcome is recorded; a leftover row goes with the next recovery
                log.warning("the progress of run %s could not be cleared", run_id, exc_info=True)
        if not summary.get("dry_run"):
            checkpoint(self.engine)  # outside the apply, and only after a run that wrote something
        return summary

    def _watch(self, run_id: int, cancelled: threading.Event, stop: threading.Event) -> None:
        """Beat the run's heartbeat and pick up a cancel request while the run executes."""
        last_beat = time.monotonic()
        while not stop.wait(self.watch_seconds):
            try:
                with self.engine.connect() as conn:
                    if conn.execute(select(Run.cancel_requested).where(Run.id == run_id)).scalar():
                        cancelled.set()
                    conn.rollback()
                    if time.monotonic() - last_beat >= self.heartbeat_seconds:
                        # The heartbeat must not queue behind another run's apply lock (PostgreSQL).
                        with write_transaction(conn, apply_lock=False):
                            conn.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                                         .values(heartbeat_at=now_text()))
                        last_beat = time.monotonic()
            except Exception:  # a busy or unreachable database: try again at the next beat
                log.warning("heartbeat of run %s failed", run_id, exc_info=True)


class ThreadExecutor:
    """Execute queued runs in a background thread of the app process (the embedded default)."""

    def __init__(self, service, *, poll_seconds: float = 1.0, recover_seconds: float = 10.0,
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


