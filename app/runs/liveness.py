"""Liveness: this process's worker identity and lock file, leases, and recovery of dead workers' runs.

A worker holds an exclusive lock on a file of its own for as long as it lives; the kernel releases
it when the process dies, so a run of a dead worker sharing this instance folder is noticed at
once. A worker on another host (or with another instance folder) is judged by its run's heartbeat
(the lease).
"""
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from ..database import write_transaction
from ..models import Run
from ..pipeline import lineage_writer
from ..pipeline.validate import canonical, now_text, utc_now

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"


class Liveness:
    """Name this process as a worker, tell live workers from dead ones, and mark dead runs interrupted."""

    def __init__(self, engine: Engine, workers_dir: str | Path, *, lease_seconds: float):
        self.engine = engine
        self.workers_dir = Path(workers_dir)
        self.lease = timedelta(seconds=lease_seconds)
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._pid = None
        self._worker = None
        self._fd = None
        self.workers_dir.mkdir(parents=True, exist_ok=True)

    def worker_id(self) -> str:
        """This process's worker name (host:pid:token), holding its liveness lock file from now on."""
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: a name and a lock of its own
                token = os.urandom(6).hex()
                tmp = self.workers_dir / f".{token}.tmp"
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Locked before it gets its name, so a sweep of dead workers' files never takes it.
                os.rename(tmp, self.workers_dir / f"{token}.lock")
                self._pid, self._fd = os.getpid(), fd
                self._worker = f"{self.host}:{os.getpid()}:{token}"
            return self._worker

    def alive(self, worker: str, heartbeat_at: str | None) -> bool:
        """Whether a run's claiming process lives: its lock file where this process sees it, its lease elsewhere.

        A worker of another host, or of this host with another instance folder, has no lock file
        here: its lease decides. A dead local worker's file is swept only after its runs are marked.
        """
        token = worker.rpartition(":")[2]
        path = self.workers_dir / f"{token}.lock"
        if token and path.exists():
            return held(path)
        cutoff = canonical(utc_now() - self.lease)
        return heartbeat_at is not None and heartbeat_at >= cutoff

    def recover(self, forget: Callable[[int], None] = lambda run_id: None) -> list[int]:
        """Mark `failed` ("interrupted") every running run whose worker died or whose lease expired."""
        with self.engine.connect() as conn:
            running = conn.execute(select(Run.id, Run.worker, Run.heartbeat_at).where(
                Run.status == "running", Run.worker.is_not(None))).all()
            conn.rollback()
            dead = [r for r in running if not self.alive(r.worker, r.heartbeat_at)]
            marked = []
            for r in dead:
                # Status writes do not wait for another run's apply (PostgreSQL); a run that has
                # applied is never failed (its COMMIT carried its outcome).
                with write_transaction(conn, apply_lock=False):
                    done = conn.execute(update(Run).where(
                        Run.id == r.id, Run.status == "running", Run.worker == r.worker,
                        Run.applied_seq.is_(None)).values(
                        status="failed", error=INTERRUPTED, finished_at=now_text()))
                if done.rowcount:
                    # Killed between committing its lineage and its apply (PostgreSQL, lineage_writer)?
                    lineage_writer.forget(conn, r.id)
                    marked.append(r.id)
                    forget(r.id)
                    log.warning("run %s was interrupted (worker %s is gone)", r.id, r.worker)
        for path in self.workers_dir.glob("*.lock"):
            held(path, remove_if_free=True)  # files of processes that ended
        return marked


def held(path: Path, remove_if_free: bool = False) -> bool:
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
