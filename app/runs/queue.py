"""The run queue: recording runs, claiming them one at a time in queue order, cancel and retry.

Claims are atomic in the database, so several processes (gunicorn workers) execute every run
exactly once. On SQLite new runs are recorded in the intake (`app.intake`) and moved into `runs` by
the claim, so that a submission never waits for another run's apply.
"""
from collections.abc import Callable
from types import SimpleNamespace

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from ..accounts import audit
from ..accounts.actor import Actor
from ..database import brief_lock_wait, write_transaction
from ..intake import intake_for, pending_audit
from ..models import Run
from ..pipeline import Options, create_run
from ..pipeline.run import AuditOf, writable_dataset
from ..pipeline.validate import now_text
from .errors import RunNotFound, RunStateError

# Kinds that go through the queue; `cli` and `reprocess` runs are executed at once by their caller.
QUEUE_KINDS = ("upload", "api", "retry")
# How long a submission waits for SQLite's write lock before it goes to the intake instead: long
# enough for the brief writes (a claim, a heartbeat), far shorter than an apply.
INTAKE_AFTER_MS = 200
_MOVED = ("id", "kind", "dataset", "options", "source_name", "source_size", "source_sha256", "file_path", "retry_of_id",
          "same_file_run_id", "queued_at", "created_by")


class RunQueue:
    """Record queued runs, claim the oldest for a worker, cancel and retry them."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # Set by a task-queue executor: called in the transaction recording a run (PostgreSQL only).
        self.enqueue: Callable[[Connection, int], None] | None = None

    @property
    def intake(self):
        """The SQLite intake beside the database (opened at first use), or None on PostgreSQL."""
        return intake_for(self.engine)

    def record(self, *, actor: Actor | None = None, audit_of: AuditOf | None = None, **values) -> int:
        """Record a queued run (kind, dataset, options, source_*, file_path, retry_of_id); return its id.

        `actor` is who asked (created_by); `audit_of(run_id)`, the audit entry written with the run's
        row, in `runs` or, on SQLite, when the run moves from the intake into `runs`.
        Never waits for another run's apply: PostgreSQL lets the insert through; on SQLite, while
        the write lock stays held, the run is recorded in the intake instead. Raises
        registry.DatasetError when the dataset does not exist or is archived.
        """
        intake = self.intake
        if intake is None:
            with self.engine.connect() as conn:
                return create_run(conn, actor=actor, audit_of=audit_of, enqueue=self.enqueue, **values)
        with self.engine.connect() as conn:  # a read: checked here too, as the intake cannot
            values["dataset"] = writable_dataset(conn, values.get("dataset")).name

        def insert_into_runs(run_id: int) -> None:
            with self.engine.connect() as conn, brief_lock_wait(conn, INTAKE_AFTER_MS):
                create_run(conn, run_id=run_id, actor=actor, audit_of=audit_of, **values)

        options = values.get("options") or Options()
        return intake.submit(insert_into_runs, audit_of, **{**values, "options": options.to_json(),
                                                            "created_by": actor.label if actor else None})

    def find(self, run_id: int):
        """A run's row (from `runs`, or from the intake while it waits there); raise RunNotFound."""
        with self.engine.connect() as conn, conn.begin():
            run = conn.execute(select(Run).where(Run.id == run_id)).one_or_none()
            if run is None and self.intake is not None:
                pending = self.intake.pending(conn, [run_id])
                run = SimpleNamespace(**pending[0]) if pending else None
        if run is None:
            raise RunNotFound(f"there is no run {run_id}")
        return run

    def cancel(self, run_id: int, actor: Actor | None = None) -> str:
        """Cancel a queued run at once, or ask a running one to stop; return the run's status after.

        `actor` is who cancels: the run's cancelled_by, and an audit entry written with the cancel.
        """
        label = actor.label if actor else None
        dataset = self.find(run_id).dataset if actor is not None else None  # RunNotFound for no run

        def entry(was: str) -> dict | None:
            return audit.entry("run_cancel", actor, object_type="run", object_id=run_id, dataset=dataset,
                               detail={"was": was}) if actor is not None else None

        if self.intake is not None and self.intake.cancel(run_id, label, entry("queued")):
            return "cancelled"
        # Conditional updates: no need to wait for another run's apply on PostgreSQL. On SQLite this
        # waits for the write lock, which a claim moving the run out of the intake holds briefly.
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            status = self._status(conn, run_id)
            if status == "queued":
                done = conn.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(
                    status="cancelled", error="cancelled by request", finished_at=now_text(), cancelled_by=label))
                if done.rowcount == 1:
                    audit.write(conn, entry("queued"))
                    return "cancelled"
                status = self._status(conn, run_id)  # claimed meanwhile: then it is running
            if status == "running":
                conn.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                             .values(cancel_requested=True, cancelled_by=label))
                audit.write(conn, entry("running"))
                return "running"
        raise RunStateError(f"run {run_id} is {status}: only a queued or running run can be cancelled")

    def _status(self, conn: Connection, run_id: int) -> str:
        status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar()
        if status is None and self.intake is not None:
            status = self.intake.status(run_id)
        if status is None:
            raise RunNotFound(f"there is no run {run_id}")
        return status

    def queued_exists(self) -> bool:
        """Whether a run waits to be claimed."""
        if self.intake is not None and self.intake.has_queued():
            return True
        with self.engine.connect() as conn:
            return conn.execute(select(Run.id).where(Run.status == "queued", Run.kind.in_(QUEUE_KINDS))
                                .limit(1)).first() is not None

    def claim_next(self, worker: str) -> int | None:
        """Claim the oldest queued run for `worker`, unless a run is being executed; return its id."""
        with self.engine.connect() as conn:
            # Cheap read first, so idle pollers never take the write lock.
            with conn.begin():
                if self._busy(conn) or not self._queued(conn) and not self._intake_has_work():
                    return None
            claimed, moved = None, []
            try:
                with write_transaction(conn):
                    moved += self._move_cancelled(conn)
                    if not self._busy(conn):
                        claimed = self._claim(conn, worker)
            except BaseException:
                if claimed is not None and self.intake is not None:
                    self.intake.release(claimed)
                raise
            if self.intake is not None:
                self.intake.forget(moved + ([claimed] if claimed is not None else []))
            return claimed

    def claim(self, run_id: int, worker: str) -> bool:
        """Claim one queued run for `worker` (a task queue's job); False when it is no longer queued.

        The conditional update makes a job delivered twice, or after its run was cancelled, a no-op.
        """
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            return _take(conn, run_id, worker)

    def earlier_unfinished(self, run_id: int):
        """The oldest queued or running run queued before `run_id` (its id and status), or None: `run_id`'s turn."""
        with self.engine.connect() as conn:
            found = conn.execute(select(Run.id, Run.status).where(
                Run.status.in_(("queued", "running")), Run.id < run_id, Run.kind.in_(QUEUE_KINDS))
                .order_by(Run.id).limit(1)).first()
            conn.rollback()
        return found

    def _claim(self, conn: Connection, worker: str) -> int | None:
        now = now_text()
        in_runs = conn.execute(select(func.min(Run.id)).where(
            Run.status == "queued", Run.kind.in_(QUEUE_KINDS))).scalar()
        waiting = self.intake.oldest_queued() if self.intake is not None else None
        if waiting is not None and (in_runs is None or waiting < in_runs):
            row = self.intake.claim(waiting, worker)
            if row is None:
                return None  # cancelled this instant: the next poll claims the next one
            try:
                conn.execute(insert(Run).values(**{k: row[k] for k in _MOVED}, status="running", worker=worker,
                                                heartbeat_at=now, started_at=now))
                audit.write(conn, *pending_audit(row))  # the upload's entry, with the move
            except BaseException:
                self.intake.release(waiting)
                raise
            return waiting
        if in_runs is None:
            return None
        return in_runs if _take(conn, in_runs, worker) else None

    def _move_cancelled(self, conn: Connection) -> list[int]:
        """Write the runs cancelled in the intake into `runs` (inside the claim's write transaction)."""
        if self.intake is None:
            return []
        rows = self.intake.cancelled()
        if not rows:
            return []
        there = set(conn.execute(select(Run.id).where(Run.id.in_([r["id"] for r in rows]))).scalars())
        for row in rows:
            if row["id"] not in there:
                conn.execute(insert(Run).values(**{k: row[k] for k in _MOVED}, status="cancelled",
                                                error=row["error"], finished_at=row["finished_at"],
                                                cancelled_by=row["cancelled_by"]))
                audit.write(conn, *pending_audit(row))  # its upload's and its cancel's entries
        return [r["id"] for r in rows]

    def _intake_has_work(self) -> bool:
        return self.intake is not None and (self.intake.has_queued() or bool(self.intake.cancelled()))

    @staticmethod
    def _busy(conn: Connection) -> bool:
        return conn.execute(select(Run.id).where(Run.status == "running", Run.worker.is_not(None))
                            .limit(1)).first() is not None

    @staticmethod
    def _queued(conn: Connection) -> bool:
        return conn.execute(select(Run.id).where(Run.status == "queued", Run.kind.in_(QUEUE_KINDS))
                            .limit(1)).first() is not None

    def mark_failed(self, run_id: int, message: str) -> None:
        """Record a running run as failed, unless it has applied (then its COMMIT is its outcome)."""
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            conn.execute(update(Run).where(Run.id == run_id, Run.status == "running",
                                           Run.applied_seq.is_(None)).values(
                status="failed", error=message, finished_at=now_text()))


def _take(conn: Connection, run_id: int, worker: str) -> bool:
    """The conditional claim of one run in `runs`: queued → running by `worker`; False when it was not queued."""
    now = now_text()
    return conn.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(
        status="running", worker=worker, heartbeat_at=now, started_at=now)).rowcount == 1
