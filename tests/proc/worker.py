"""A Sluice process for the run tests: `pause PHASE MARKER` stops inside a run; `serve` is a restarted app.

    pause PHASE MARKER        execute the queued runs, but at progress PHASE (with records read) write MARKER
                              and hold still until the run is cancelled (then go on) or the process is killed.
    serve                     start the app as a server would (embedded worker thread, which looks for dead
                              workers' runs every 0.2 s here) and stay up until SIGTERM.
    queue-pause PHASE MARKER  a queue worker (`flask --app app worker`, SLUICE_EXECUTOR=queue) that, in the
                              first run reaching PHASE with records read, writes MARKER and holds still until
                              MARKER is removed (then goes on), the run is cancelled or the process is killed.

The database and instance folder come from DATABASE_URL and SLUICE_INSTANCE_PATH.
"""
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app import create_app, runs

LIMIT_SECONDS = 120  # never outlive a test run by long, even if nobody kills us


def pause(phase: str, marker: str) -> None:
    app = create_app({"SLUICE_EMBEDDED_WORKER": False})
    svc = app.extensions["sluice_runs"]
    svc.progress_interval = 0  # every tick is written, so the parent reads the exact stopping point
    original = runs.ProgressReporter.__call__

    def pause_at(self, name, records, bytes_read):
        original(self, name, records, bytes_read)
        if name == phase and records > 0:
            Path(marker).write_text(f"{self.run_id} {name} {records}")
            # The run's watcher thread sets `cancelled` when it sees the cancel request in the database;
            # the next progress call then stops the run.
            if not self.cancelled.wait(LIMIT_SECONDS):
                sys.exit("neither cancelled nor killed in time")

    runs.ProgressReporter.__call__ = pause_at
    svc.drain()


def queue_pause(phase: str, marker: str) -> None:
    app = create_app()
    svc = app.extensions["sluice_runs"]
    svc.progress_interval = 0  # every tick is written, so the parent reads the exact stopping point
    original = runs.ProgressReporter.__call__
    paused = []

    def pause_at(self, name, records, bytes_read):
        original(self, name, records, bytes_read)
        if name == phase and records > 0 and not paused:
            paused.append(self.run_id)
            Path(marker).write_text(f"{self.run_id} {name} {records}")
            deadline = time.monotonic() + LIMIT_SECONDS
            # `cancelled` is set by the run's watcher thread once it sees the cancel request in the database;
            # the next progress call then stops the run.
            while Path(marker).exists() and not self.cancelled.wait(0.05):
                if time.monotonic() > deadline:
                    # Neither resumed, cancelled nor killed in time (sys.exit ends only this job's thread).
                    os._exit(3)

    runs.ProgressReporter.__call__ = pause_at
    svc.executor.work()


def serve() -> None:
    os.environ["SLUICE_EMBEDDED_WORKER"] = "1"
    app = create_app()
    svc = app.extensions["sluice_runs"]
    svc.executor.poll_seconds = svc.executor.recover_seconds = 0.2  # notice dead workers quickly
    svc.recover()  # what the worker thread does at start, done here once before saying "ready"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    time.sleep(LIMIT_SECONDS)


if __name__ == "__main__":
    if sys.argv[1] == "pause":
        pause(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "queue-pause":
        queue_pause(sys.argv[2], sys.argv[3])
    else:
        serve()
