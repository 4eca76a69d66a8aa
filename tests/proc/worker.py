"""A Sluice process for the run tests: `crash PHASE MARKER` stops inside a run to be killed; `serve` restarts.

    crash PHASE MARKER   execute the queued runs, but at progress PHASE (with records read) write MARKER
                         and wait to be killed with SIGKILL: a process dying in the middle of a run.
    serve                start the app as a server would (embedded worker thread) and stay up until SIGTERM.

The database and instance folder come from DATABASE_URL and SLUICE_INSTANCE_PATH.
"""
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app import create_app  # noqa: E402
from app import runs  # noqa: E402

LIMIT_SECONDS = 120  # never outlive a test run by long, even if nobody kills us


def crash(phase: str, marker: str) -> None:
    app = create_app({"SLUICE_EMBEDDED_WORKER": False})
    svc = app.extensions["sluice_runs"]
    svc.progress_interval = 0  # every tick is written, so the parent reads the exact stopping point
    original = runs.ProgressReporter.__call__

    def pause_at(self, name, records, bytes_read):
        original(self, name, records, bytes_read)
        if name == phase and records > 0:
            Path(marker).write_text(f"{self.run_id} {name} {records}")
            time.sleep(LIMIT_SECONDS)
            sys.exit("not killed in time")

    runs.ProgressReporter.__call__ = pause_at
    svc.drain()


def serve() -> None:
    os.environ["SLUICE_EMBEDDED_WORKER"] = "1"
    app = create_app()
    app.extensions["sluice_runs"].executor.poll_seconds = 0.2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    time.sleep(LIMIT_SECONDS)


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        crash(sys.argv[2], sys.argv[3])
    else:
        serve()
