"""The SQLite intake: where runs are recorded without waiting for the database's single write lock.

SQLite has one write lock, and a run's apply holds it for as long as it writes (minutes for a
file of millions of records). Recording a submission must not wait for that, so on SQLite every
new run gets its id here, in a small SQLite file of its own beside the database (`<db>-intake`),
and a submission that finds the write lock held is written here as `queued` instead of into
`runs`. The worker that claims it moves it into `runs` under the write lock it takes anyway; a
cancel before that is written here too. Readers that list
or show runs add `pending_runs` (the intake's rows not yet in `runs`), so a run is visible as queued
on its page and in the API from the moment its upload is accepted. PostgreSQL needs no intake:
there recording a run never waits for an apply.

Every row names its run's dataset; an intake file written before datasets existed gets the
column (every row `events`) when it is opened. A row also carries who (`created_by`, `cancelled_by`)
and the audit entries of its upload and its cancel (JSON of `audit.entry`): they are written into
`audit_log` in the transaction that moves the run into `runs`, so that auditing never waits either.
"""
import json
import threading
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from .database import is_locked, make_engine, write_transaction
from .models import Run
from .pipeline.validate import now_text

_meta = MetaData()
# The columns of a queued run (see models.Run); `worker` names who is moving it into `runs`.
intake_runs = Table(
    "intake_runs", _meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("dataset", String(40), nullable=False, server_default="events"),
    Column("status", String(16), nullable=False),  # queued, claimed (being moved), cancelled
    Column("options", Text, nullable=False),
    Column("source_name", Text), Column("source_size", BigInteger), Column("source_sha256", String(64)),
    Column("file_path", Text), Column("retry_of_id", BigInteger), Column("same_file_run_id", BigInteger),
    Column("queued_at", String(26), nullable=False), Column("finished_at", String(26)),
    Column("error", Text), Column("worker", String(128)), Column("cancel_requested", Boolean, default=False),
    Column("created_by", String(128)), Column("cancelled_by", String(128)),
    Column("audit", Text), Column("cancel_audit", Text),  # pending audit entries, JSON
)
# Columns a later Sluice added, with the DDL that adds them to an older intake file.
_ADDED = {"dataset": "VARCHAR(40) NOT NULL DEFAULT 'events'", "created_by": "VARCHAR(128)",
          "cancelled_by": "VARCHAR(128)", "audit": "TEXT", "cancel_audit": "TEXT"}
# The last run id handed out, by this intake or found in `runs`: one id sequence for both.
intake_ids = Table("intake_ids", _meta, Column("one", Integer, primary_key=True),
                   Column("last_id", BigInteger, nullable=False))

_RUN_DEFAULTS = {c.name: (c.default.arg if c.default is not None and not callable(c.default.arg) else None)
                 for c in Run.__table__.columns}
_lock = threading.Lock()
_intakes: dict[str, "Intake"] = {}
ALL = "*"  # pending_runs(conn, dataset=ALL): the runs of every dataset


def intake_for(engine: Engine) -> "Intake | None":
    """The intake beside `engine`'s SQLite database file, or None (PostgreSQL, an in-memory database)."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    path = Path(engine.url.database).absolute()
    key = str(path)
    with _lock:
        intake = _intakes.get(key)
        if intake is None:
            intake = _intakes[key] = Intake(path.with_name(path.name + "-intake"), engine)
        return intake


class Intake:
    """Queued runs of one SQLite database, recorded in a file of their own."""

    def __init__(self, path: Path, main: Engine):
        self.path, self.main = path, main
        # No pool: a process touches its intake briefly, and keeps no file open for it in between.
        self.engine = make_engine(f"sqlite:///{path}", poolclass=NullPool)
        # Under the write lock from the start: processes starting together (gunicorn workers) would
        # otherwise each read "no table" and then fail to upgrade their read to a write ("locked").
        with self.engine.connect() as conn, write_transaction(conn):
            _meta.create_all(conn)
            _add_missing_columns(conn)

    def next_id(self, conn: Connection) -> int:
        """Hand out the next run id (inside a write transaction of the intake)."""
        last = conn.execute(select(intake_ids.c.last_id)).scalar()
        with self.main.connect() as main:  # a read: never waits for the main database's write lock
            in_runs = main.execute(select(func.max(Run.id))).scalar()
            main.rollback()
        new = max(last or 0, in_runs or 0) + 1
        if last is None:
            conn.execute(insert(intake_ids).values(one=1, last_id=new))
        else:
            conn.execute(update(intake_ids).values(last_id=new))
        return new

    def allocate(self) -> int:
        """A run id for a run recorded directly in `runs` (one claimed at once by its process)."""
        with self.engine.connect() as conn, write_transaction(conn):
            return self.next_id(conn)

    def submit(self, insert_into_runs: Callable[[int], None], audit_of: Callable[[int], dict] | None = None,
               **values) -> int:
        """Record a queued run: `insert_into_runs(id)` if the write lock is free, else here; return its id.

        Ids are handed out and recorded one submission at a time (under the intake's lock), so a run
        is visible, in `runs` or here, before the next id exists: the queue order is the id order.
        Recorded here, the run keeps `audit_of(id)`, its audit entry, until it is moved into `runs`.
        """
        with self.engine.connect() as conn, write_transaction(conn):
            run_id = self.next_id(conn)
            # Once runs wait here the lock is likely still held: the next ones join them at once.
            if conn.execute(select(intake_runs.c.id).where(intake_runs.c.status == "queued")
                            .limit(1)).first() is None:
                try:
                    insert_into_runs(run_id)
                    return run_id
                except OperationalError as exc:
                    if not is_locked(exc):
                        raise
            self._record(conn, run_id, audit=_json(audit_of(run_id)) if audit_of else None, **values)
            return run_id

    def _record(self, conn: Connection, run_id: int, **values) -> None:
        sha, same = values.get("source_sha256"), None
        if sha:
            with self.main.connect() as main:
                same = main.execute(select(func.min(Run.id)).where(Run.source_sha256 == sha)).scalar()
                main.rollback()
            here = conn.execute(select(func.min(intake_runs.c.id)).where(
                intake_runs.c.source_sha256 == sha)).scalar()
            same = min((i for i in (same, here) if i is not None), default=None)
        conn.execute(insert(intake_runs).values(id=run_id, status="queued", same_file_run_id=same,
                                                queued_at=now_text(), **values))

    def cancel(self, run_id: int, cancelled_by: str | None = None, audit: dict | None = None) -> bool:
        """Cancel a run still queued here; False when it is not here or is being moved into `runs`.

        `cancelled_by` and `audit` (the cancel's audit entry) go into `runs` and `audit_log` with the run.
        """
        with self.engine.connect() as conn, write_transaction(conn):
            done = conn.execute(update(intake_runs).where(
                intake_runs.c.id == run_id, intake_runs.c.status == "queued").values(
                status="cancelled", error="cancelled by request", finished_at=now_text(),
                cancelled_by=cancelled_by, cancel_audit=_json(audit)))
            return done.rowcount == 1

    def status(self, run_id: int) -> str | None:
        """The status of a run here (queued, claimed, cancelled), or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(intake_runs.c.status).where(intake_runs.c.id == run_id)).scalar()

    def oldest_queued(self) -> int | None:
        """The id of the oldest run queued here."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.min(intake_runs.c.id)).where(
                intake_runs.c.status == "queued")).scalar()

    def claim(self, run_id: int, worker: str) -> dict | None:
        """Take a queued run for moving into `runs` by `worker`; return its row, or None if it went."""
        with self.engine.connect() as conn, write_transaction(conn):
            done = conn.execute(update(intake_runs).where(
                intake_runs.c.id == run_id, intake_runs.c.status == "queued").values(
                status="claimed", worker=worker))
            if done.rowcount != 1:
                return None
            return dict(conn.execute(select(intake_runs).where(intake_runs.c.id == run_id)).one()._mapping)

    def release(self, run_id: int) -> None:
        """Put back a run whose move into `runs` did not commit."""
        with self.engine.connect() as conn, write_transaction(conn):
            conn.execute(update(intake_runs).where(intake_runs.c.id == run_id, intake_runs.c.status == "claimed")
                         .values(status="queued", worker=None))

    def release_dead(self, alive) -> list[int]:
        """Put back runs whose mover died before its move committed (`alive(worker)` says who lives)."""
        with self.engine.connect() as conn:
            claimed = conn.execute(select(intake_runs.c.id, intake_runs.c.worker).where(
                intake_runs.c.status == "claimed")).all()
        dead = [r for r in claimed if not alive(r.worker)]
        for r in dead:
            self.release(r.id)
        return [r.id for r in dead]

    def cancelled(self) -> list[dict]:
        """The rows cancelled here, to be moved into `runs` as they are."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(intake_runs).where(intake_runs.c.status == "cancelled").order_by(intake_runs.c.id))]

    def has_queued(self) -> bool:
        """Whether a run waits here to be claimed."""
        return self.oldest_queued() is not None

    @contextmanager
    def file_paths(self):
        """The files the runs here will read, with no run recorded here until the block ends."""
        with self.engine.connect() as conn, write_transaction(conn):
            yield {p for (p,) in conn.execute(select(intake_runs.c.file_path).where(
                intake_runs.c.file_path.is_not(None)))}

    def forget(self, ids: list[int]) -> None:
        """Remove rows that are in `runs` now."""
        if ids:
            with self.engine.connect() as conn, write_transaction(conn):
                conn.execute(delete(intake_runs).where(intake_runs.c.id.in_(ids)))

    def pending(self, conn: Connection, run_ids: list[int] | None = None, dataset="events") -> list[dict]:
        """This intake's runs not yet in `runs` (read on `conn`, the main database), newest first.

        Only `dataset`'s (a name, a Dataset, None for events, or ALL), unless `run_ids` asks for runs by id.
        """
        with self.engine.connect() as ic:
            query = select(intake_runs).order_by(intake_runs.c.id.desc())
            if run_ids is not None:
                query = query.where(intake_runs.c.id.in_(run_ids))
            elif dataset != ALL:
                query = query.where(intake_runs.c.dataset == (getattr(dataset, "name", dataset) or "events"))
            rows = [dict(r._mapping) for r in ic.execute(query)]
        if not rows:
            return []
        moved = set(conn.execute(select(Run.id).where(Run.id.in_([r["id"] for r in rows]))).scalars())
        return [as_run(r) for r in rows if r["id"] not in moved]


def as_run(row: dict) -> dict:
    """An intake row as a row of `runs` (a claimed one is still queued to a reader)."""
    values = {k: v for k, v in row.items() if k in _RUN_DEFAULTS}
    values["status"] = "queued" if row["status"] == "claimed" else row["status"]
    values["worker"] = None
    return {**_RUN_DEFAULTS, **values}


def pending_runs(conn: Connection, run_ids: list[int] | None = None, dataset="events") -> list[dict]:
    """Runs recorded in the intake and not yet in `runs`, newest first (none on PostgreSQL).

    Lists `dataset`'s runs (a name, a Dataset, None for events, or ALL for every dataset's);
    with `run_ids`, the runs of those ids whatever their dataset. Each row names its `dataset`.
    """
    intake = intake_for(conn.engine)
    return intake.pending(conn, run_ids, dataset) if intake is not None else []


def pending_audit(row: dict) -> list[dict]:
    """The audit entries an intake row carries (its upload's, its cancel's), to write when it moves into `runs`."""
    return [json.loads(row[c]) for c in ("audit", "cancel_audit") if row.get(c)]


def _json(entry: dict | None) -> str | None:
    return None if entry is None else json.dumps(entry, ensure_ascii=False)


def _add_missing_columns(conn: Connection) -> None:
    """Add the columns a later Sluice gave `intake_runs` to an intake file made before them."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(intake_runs)")}
    for name, ddl in _ADDED.items():
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE intake_runs ADD COLUMN {name} {ddl}")


def intake_paths(engine: Engine):
    """`Intake.file_paths` of `engine`'s intake, or an empty set where there is none."""
    intake = intake_for(engine)
    return intake.file_paths() if intake is not None else nullcontext(set())
