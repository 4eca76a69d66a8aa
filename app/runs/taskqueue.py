"""The queue executor: runs executed by workers on any host, through procrastinate's queue in PostgreSQL.

A run's job is deferred in the transaction that records the run (`RunQueue.enqueue`), so there is
never a queued run without a job or a job without a run. The job carries only the run id: the runs
table stays the ledger, and its conditional claim (`RunQueue.claim`) turns a job delivered twice,
or one whose run was cancelled, into a no-op. Workers read, validate and stage different runs at
the same time; each then waits for its turn (`RunService.turn`) and applies in queue order.

A periodic job marks the runs of dead workers interrupted, puts back the jobs of workers that died
before claiming their run, queues a job for any queued run that has none (runs recorded before the
queue executor was switched on), and removes stored files after the retention.
"""
import asyncio
import logging
import multiprocessing
import os
import signal
import time

import procrastinate
from procrastinate.schema import SchemaManager
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from ..database import write_transaction

log = logging.getLogger(__name__)
QUEUE = "sluice"
EXECUTE = "sluice.execute_run"
# A worker of procrastinate beats every HEARTBEAT s; one silent for STALLED s is dead, and the job
# it was executing is put back in the queue (a no-op when its run had been claimed).
HEARTBEAT, STALLED = 5.0, 20.0
_SCHEMA_LOCK = 0x51_1C_E0_03


def conninfo(engine: Engine) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL engine."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_schema(engine: Engine) -> None:
    """Create procrastinate's tables and functions in the database, once (several processes may start together)."""
    with engine.connect() as conn, write_transaction(conn, apply_lock=False):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        if conn.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar() is None:
            # On the driver's connection without parameters, so that the script's % signs stay as they are.
            conn.connection.driver_connection.execute(SchemaManager.get_schema())
            log.info("created procrastinate's queue tables")


class QueueExecutor:
    """Queue each recorded run as a procrastinate job; `work()` executes jobs in this process."""

    def __init__(self, service):
        self.service = service
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(service.engine)))
        ensure_schema(service.engine)
        service.queue.enqueue = self.enqueue

        @self.app.task(name=EXECUTE, queue=QUEUE)
        def execute_run(run_id: int) -> None:
            self.execute_job(run_id)

        # croniter takes seconds as a sixth field: every 5 s.
        @self.app.periodic(cron="* * * * * */5", periodic_id="sluice-recover")
        # Before any waiting run's job: runs waiting for their turn may be waiting for this very recovery.
        @self.app.task(name="sluice.recover", queue=QUEUE, queueing_lock="sluice.recover", priority=10)
        async def recover(timestamp: int) -> None:
            await self.recover()

        @self.app.periodic(cron="*/10 * * * *", periodic_id="sluice-housekeep")
        @self.app.task(name="sluice.housekeep", queue=QUEUE, queueing_lock="sluice.housekeep", priority=5)
        def housekeep(timestamp: int) -> None:
            self.service.housekeep()

        self.execute_task = execute_run

    def start(self) -> None:
        """Nothing to start in a web process: workers (`flask --app app worker`) execute the jobs."""

    def submit(self, run_id: int) -> None:
        """Nothing to do: the run's job was deferred with the run (`enqueue`)."""

    def enqueue(self, conn: Connection, run_id: int) -> None:
        """Defer the job of run `run_id` in `conn`'s transaction, the one recording the run."""
        self.execute_task.configure(connection=conn.connection.driver_connection).defer(run_id=run_id)

    def execute_job(self, run_id: int) -> None:
        """A job: claim its run (a no-op unless it is still queued) and execute it, applying in its turn."""
        service = self.service
        if not service.queue.claim(run_id, service.worker_id()):
            log.info("run %s is no longer queued: its job has nothing to do", run_id)
            return
        service.execute(run_id, turn=service.turn(run_id))

    async def recover(self) -> None:
        """Mark dead workers' runs interrupted, put back stalled jobs, queue jobs for queued runs without one."""
        await asyncio.to_thread(self.service.recover)
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED):
            log.warning("job %s (%s) lost its worker: it goes back in the queue", job.id, job.task_name)
            await manager.retry_job(job)
        for run_id in await asyncio.to_thread(self.jobless_runs):
            log.warning("run %s was queued without a job: queuing one", run_id)
            await self.execute_task.defer_async(run_id=run_id)

    def jobless_runs(self) -> list[int]:
        """Queued runs (of the queue's kinds) that no waiting or executing job will execute."""
        from .queue import QUEUE_KINDS

        with self.service.engine.connect() as conn:
            ids = conn.execute(text(
                "SELECT r.id FROM runs r WHERE r.status = 'queued' AND r.kind = ANY(:kinds) AND NOT EXISTS ("
                "SELECT 1 FROM procrastinate_jobs j WHERE j.task_name = :task AND j.status IN ('todo', 'doing') "
                "AND (j.args ->> 'run_id')::bigint = r.id) ORDER BY r.id"),
                {"kinds": list(QUEUE_KINDS), "task": EXECUTE}).scalars().all()
            conn.rollback()
        return ids

    def workers(self) -> int:
        """How many of procrastinate's workers beat their heartbeat lately (any host)."""
        return self._count("SELECT count(*) FROM procrastinate_workers "
                           "WHERE last_heartbeat > now() - make_interval(secs => :s)", s=STALLED)

    def waiting_jobs(self) -> int:
        """How many run jobs wait in the queue for a worker."""
        return self._count("SELECT count(*) FROM procrastinate_jobs WHERE task_name = :task AND status = 'todo'",
                           task=EXECUTE)

    def _count(self, sql: str, **params) -> int:
        with self.service.engine.connect() as conn:
            n = conn.execute(text(sql), params).scalar()
            conn.rollback()
        return n

    def work(self) -> None:
        """Execute jobs in this process until it is stopped (SIGINT, SIGTERM: after the job at hand)."""
        self.app.run_worker(queues=[QUEUE], concurrency=1, name=self.service.worker_id(),
                            delete_jobs="successful", update_heartbeat_interval=HEARTBEAT,
                            stalled_worker_timeout=STALLED)


def run_workers(concurrency: int, work) -> int:
    """Run `work()` in `concurrency` processes (or in this one for 1); return when they have all stopped.

    Processes, not threads: reading and validating a file is Python work that holds the GIL.
    """
    if concurrency == 1:
        work()
        return 0
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_child, name=f"sluice-worker-{i}") for i in range(concurrency)]
    for child in children:
        child.start()

    signals = []

    def stop(signum, _frame):
        # The first Ctrl+C or SIGTERM asks each child to stop after its run at hand; a second one forces.
        signals.append(signum)
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM if len(signals) == 1 else signal.SIGKILL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    while any(child.is_alive() for child in children):
        time.sleep(0.5)
    return max((child.exitcode or 0) for child in children)


def _child() -> None:
    """One worker process of `run_workers`: the app as the environment configures it, executing jobs."""
    from .. import create_app

    # Stopping is the parent's to pass on, once: a terminal's Ctrl+C reaches only the parent's process
    # group, and a copy that reaches the child directly as well (systemd signals every process) is
    # ignored, since procrastinate puts this handler back once its own has asked the worker to stop.
    os.setpgid(0, 0)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)

    app = create_app()
    app.extensions["sluice_runs"].executor.work()
