"""A run's lineage written beside the run on PostgreSQL: a second connection, ids in the run's own range.

Lineage is most of what a run writes, and PostgreSQL executes one connection's statements on one
core. So on PostgreSQL a run writes its lineage on a second connection of its own: the read steps
(`staged`, `skipped`) while the file is parsed, the `superseded` and outcome entries while the
run's own connection upserts the target under the apply lock. Its transaction stays open, its
entries invisible, until it commits just before the run's apply does; a run that fails rolls it
back. Only the `rejected` entries, which link to dead letters the apply makes, are written by the
apply itself.

A key's history is ordered by lineage id, so ids must follow the order in which runs apply. The
entries get ids in the run's own range, `(run_id << 32) + 2 * pos` for a record's read step and
`+ 1` for its outcome, chosen before anyone knows when the run will apply. Under the apply lock the
run checks that every id handed out so far (by the `lineage` sequence, which everything else uses)
is below its range, and moves the sequence past what it used. When that does not hold, a run with
a higher id applied first (or the range is too small), and the run writes its lineage under the
lock as on SQLite (`fits` is False).
"""
import contextlib
import logging
import tempfile
import threading

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from ..database import write_transaction
from ..models import Lineage, Run

log = logging.getLogger(__name__)

SHIFT = 32
# Ids stay below 2**53, so that JavaScript clients of the API read them exactly.
MAX_RUN_ID = (1 << (53 - SHIFT)) - 1
MAX_POS = (1 << (SHIFT - 1)) - 1
SPOOL_BYTES = 32 << 20  # the outcome entries are spooled to a file beyond this
COLUMNS = "id, dataset, run_id, pos, line, key, step, at, detail, dead_letter_id"
_SEQUENCE = "pg_get_serial_sequence('lineage', 'id')"


def usable(engine: Engine, run_id: int) -> bool:
    """Whether a run may write its lineage on a second connection (PostgreSQL, and an id that fits the scheme)."""
    return engine.dialect.name == "postgresql" and 0 < run_id <= MAX_RUN_ID


class LineageWriter:
    """The second connection of a run that writes its lineage; see the module's docstring."""

    def __init__(self, engine: Engine, *, run_id: int, dataset: str, read_at: str, texts: dict):
        self.run_id, self.dataset, self.read_at, self.texts = run_id, dataset, read_at, texts
        self.base = run_id << SHIFT  # the first id of its range
        self.written = 0  # entries sent, counted when they are sent
        self._raw = engine.raw_connection()
        self._cursor = self._raw.driver_connection.cursor()
        self._copy = None  # the read steps' COPY, open while the file is read
        self._reading = contextlib.ExitStack()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._committed = False

    # --- the read steps, while the file is parsed --------------------------------------------------
    def read_steps(self, staged: list[tuple], skipped: list[tuple], watermark: str | None) -> None:
        """Send a batch's `staged` rows (pos, line, key, …, ver) and `skipped` rows (pos, line, key, ver)."""
        if self._copy is None:
            self._copy = self._reading.enter_context(self._cursor.copy(f"COPY lineage ({COLUMNS}) FROM STDIN"))
        write, base, ds, run, at = self._copy.write_row, self.base, self.dataset, self.run_id, self.read_at
        valid = self.texts["valid"]
        for row in staged:
            pos = row[0]
            write((base + 2 * pos, ds, run, pos, row[1], row[2], "staged", at, valid + row[-1], None))
        if skipped:
            older = f" is older than the watermark {watermark or ''}"
            ver = self.texts["ver"]
            for pos, line, key, version in skipped:
                write((base + 2 * pos, ds, run, pos, line, key or "", "skipped", at, f"{ver}{version}{older}", None))
        self.written += len(staged) + len(skipped)

    def end_read(self) -> None:
        """End the read steps' COPY (it waits until the server has written them)."""
        self._copy = None
        self._reading.close()

    # --- superseded and outcomes, beside the apply ---------------------------------------------------
    def replace(self, conn: Connection, selects: list[tuple[str, dict]]) -> None:
        """After a reskip: make the rows of `selects` (the run's `skipped` entries) the entries of their records.

        Reading under the newer watermark would have skipped them: their `staged` or `skipped` entries
        sent while reading are deleted (they have the same ids), then these written.
        """
        self.end_read()
        cursor = self._cursor
        cursor.execute(f"CREATE TEMP TABLE sluice_redo AS SELECT {COLUMNS} FROM lineage WITH NO DATA")
        with self._spool(conn, selects) as spool, cursor.copy(f"COPY sluice_redo ({COLUMNS}) FROM STDIN") as copy:
            while block := spool.read(1 << 20):
                copy.write(block)
        cursor.execute("ANALYZE sluice_redo")
        # Within the run's own range of ids: a probe of the primary key, never a scan of all lineage.
        cursor.execute("DELETE FROM lineage l USING sluice_redo r WHERE l.id = r.id "
                       "AND l.id BETWEEN %(lo)s AND %(hi)s", {"lo": self.base, "hi": self.base + (1 << SHIFT) - 1})
        self.written -= cursor.rowcount
        cursor.execute(f"INSERT INTO lineage ({COLUMNS}) SELECT {COLUMNS} FROM sluice_redo")
        self.written += cursor.rowcount
        cursor.execute("DROP TABLE sluice_redo")

    def outcomes(self, conn: Connection, selects: list[tuple[str, dict]], entries: int) -> None:
        """Copy the `entries` rows of `selects` (each SQL and its parameters, run on the run's connection) into lineage.

        The rows are read into a spool first, so that the run's own connection is free again at once
        for its apply; a thread writes them while it upserts.
        """
        self.end_read()
        spool = self._spool(conn, selects)
        self.written += entries
        self._thread = threading.Thread(target=self._feed, args=(spool,), name=f"lineage-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _spool(conn: Connection, selects: list[tuple[str, dict]]):
        """The rows of `selects`, run on `conn`, in COPY's text format in a spooled file, rewound."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (the caller closes it)
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor:
            for statement, params in selects:
                with cursor.copy(f"COPY ({statement}) TO STDOUT", params) as copy:
                    for block in copy:
                        spool.write(block)
        spool.seek(0)
        return spool

    def _feed(self, spool) -> None:
        try:
            with spool, self._cursor.copy(f"COPY lineage ({COLUMNS}) FROM STDIN") as copy:
                while block := spool.read(1 << 20):
                    copy.write(block)
        except BaseException as exc:  # noqa: BLE001 (handed to finish(), which raises it in the run's thread)
            self._error = exc

    # --- the apply's end -----------------------------------------------------------------------------
    def fits(self, conn: Connection, last_pos: int) -> bool:
        """Under the apply lock: whether every lineage id handed out so far is below this run's range.

        `last_pos` is the highest position of the run's records, which must fit the range too.
        """
        last = conn.exec_driver_sql(f"SELECT pg_sequence_last_value({_SEQUENCE}::regclass)").scalar()
        return (last or 0) < self.base and last_pos <= MAX_POS

    def claim(self, conn: Connection, last_pos: int) -> None:
        """Under the apply lock: move the lineage sequence past this run's ids (once `fits` held)."""
        conn.exec_driver_sql(f"SELECT setval({_SEQUENCE}, %(top)s)", {"top": self.base + 2 * last_pos + 1})

    def finish(self) -> None:
        """Wait for the entries still being written and commit them; the run's apply commits next."""
        self.end_read()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        self._raw.commit()
        self._committed = True

    @property
    def committed(self) -> bool:
        """Whether its entries were committed (a failure after that must delete them)."""
        return self._committed

    def close(self) -> None:
        """Roll back what was not committed and give the connection back; safe to call more than once."""
        if self._raw is None:
            return
        raw, self._raw = self._raw, None
        with contextlib.suppress(Exception):
            if self._thread is not None:
                # The thread may be in the middle of its COPY: cancel it on the server, then wait.
                raw.driver_connection.cancel_safe()
                self._thread.join()
        if self._copy is not None:  # a read that failed half way: abort its COPY
            self._copy = None
            with contextlib.suppress(Exception):
                self._reading.__exit__(RuntimeError, RuntimeError("the run did not apply"), None)
        try:
            raw.rollback()
            raw.close()
        except Exception:
            log.warning("closing a run's lineage connection failed; it is discarded", exc_info=True)
            with contextlib.suppress(Exception):
                raw.invalidate()



def forget(conn: Connection, run_id: int) -> int:
    """Delete the lineage of a run that did not apply (its writer committed, its apply did not); return how many."""
    applied = select(Run.id).where(Run.id == run_id, Run.applied_seq.is_not(None)).exists()
    with write_transaction(conn, apply_lock=False):
        return conn.execute(delete(Lineage).where(Lineage.run_id == run_id, ~applied)).rowcount
