"""A run's lineage written beside the run on PostgreSQL: a second connection, ids in the run's own range.

Lineage is most of what a run writes, and PostgreSQL executes one connection's statements on one
core. So on PostgreSQL a run writes its lineage on a second connection of its own: the read steps
(`staged`, `skipped`) as the file is parsed, the `superseded` and `rejected` entries (once its
rejects' dead letters are chosen: load.reserve_dead_letters) while the run classifies, and the
outcome entries while its own connection writes the target under the apply lock. A thread
streams them to the server through a spool file, so that neither parsing nor the apply ever waits
for it. Its transaction stays open, its entries invisible, until it commits just before the run's
apply does; a run that fails rolls it back.

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
import os
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
COLUMNS = "id, dataset, run_id, pos, line, key, step, at, detail, dead_letter_id"
_SEQUENCE = "pg_get_serial_sequence('lineage', 'id')"
CHUNK = 1 << 20
# COPY's text format: these four are written as escapes (the run's own texts never hold a NUL).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def usable(engine: Engine, run_id: int) -> bool:
    """Whether a run may write its lineage on a second connection (PostgreSQL, and an id that fits the scheme)."""
    return engine.dialect.name == "postgresql" and 0 < run_id <= MAX_RUN_ID


class _Stream:
    """One COPY into lineage, fed from a spool file that the run's thread appends to and a sender thread drains.

    The spool is on disk, so memory stays flat however far the server falls behind.
    """

    def __init__(self, cursor, run_id: int):
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the sender)
        self._size = 0
        self._ended = False
        self._cancelled = False
        self._ready = threading.Condition()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._send, args=(cursor,), name=f"lineage-{run_id}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        with self._ready:
            os.pwrite(self._file.fileno(), data, self._size)
            self._size += len(data)
            self._ready.notify()

    def end(self) -> None:
        """Wait until everything written is in the server (the COPY has ended); raise what the sender met."""
        with self._ready:
            self._ended = True
            self._ready.notify()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self, connection) -> None:
        """Stop the sender and its COPY (the transaction is rolled back after)."""
        with self._ready:
            self._cancelled = self._ended = True
            self._ready.notify()
        with contextlib.suppress(Exception):
            connection.cancel_safe()
        self._thread.join()

    def _send(self, cursor) -> None:
        sent = 0
        try:
            with self._file, cursor.copy(f"COPY lineage ({COLUMNS}) FROM STDIN") as copy:
                while True:
                    with self._ready:
                        while sent == self._size and not self._ended:
                            self._ready.wait()
                        if self._cancelled:
                            raise RuntimeError("the run did not apply")  # aborts the COPY
                        size, ended = self._size, self._ended
                    while sent < size:  # the GIL is released while psycopg sends
                        block = os.pread(self._file.fileno(), min(CHUNK, size - sent), sent)
                        copy.write(block)
                        sent += len(block)
                    if ended:
                        break
        except BaseException as exc:  # noqa: BLE001 (raised in the run's thread by write() or end())
            self.error = exc


class LineageWriter:
    """The second connection of a run that writes its lineage; see the module's docstring."""

    def __init__(self, engine: Engine, *, run_id: int, dataset: str, read_at: str, texts: dict):
        self.run_id = run_id
        self.base = run_id << SHIFT  # the first id of its range
        self.written = 0  # entries sent, counted when they are sent
        self._raw = engine.raw_connection()
        self._cursor = self._raw.driver_connection.cursor()
        self._stream: _Stream | None = None
        self.committed = False  # its entries are committed: a failure after that must delete them (`forget`)
        # Every read step's line is "id\t<these>\tpos\tline\tkey\tstep\t<at>\tdetail\t\N".
        self._head = f"\t{_text(dataset)}\t{run_id}\t"
        self._at = _text(read_at)
        self._valid, self._ver = _text(texts["valid"]), _text(texts["ver"])

    def _open(self) -> _Stream:
        if self._stream is None:
            self._stream = _Stream(self._cursor, self.run_id)
        return self._stream

    # --- the read steps, while the file is parsed --------------------------------------------------
    def read_steps(self, staged: list[tuple], skipped: list[tuple], watermark: str | None) -> None:
        """Send a batch's `staged` rows (pos, line, key, …, ver) and `skipped` rows (pos, line, key, ver)."""
        base, head, at = self.base, self._head, self._at
        lines = [f"{base + 2 * r[0]}{head}{r[0]}\t{_int(r[1])}\t{r[2].translate(_ESCAPES)}\tstaged\t{at}\t"
                 f"{self._valid}{r[-1]}\t\\N\n" for r in staged]
        if skipped:
            older = _text(f" is older than the watermark {watermark or ''}")
            lines += [f"{base + 2 * pos}{head}{pos}\t{_int(line)}\t{(key or '').translate(_ESCAPES)}\tskipped\t{at}\t"
                      f"{self._ver}{version}{older}\t\\N\n" for pos, line, key, version in skipped]
        if lines:
            self._open().write("".join(lines).encode())
        self.written += len(staged) + len(skipped)

    def replace(self, conn: Connection, selects: list[tuple[str, dict]]) -> None:
        """After a reskip: make the rows of `selects` (the run's `skipped` entries) the entries of their records.

        Reading under the newer watermark would have skipped them: their `staged` or `skipped` entries
        sent while reading are deleted (they have the same ids), then these written.
        """
        self._end_stream()
        cursor = self._cursor
        cursor.execute(f"CREATE TEMP TABLE sluice_redo AS SELECT {COLUMNS} FROM lineage WITH NO DATA")
        with cursor.copy(f"COPY sluice_redo ({COLUMNS}) FROM STDIN") as copy:
            _copy_out(conn, selects, copy.write)
        cursor.execute("ANALYZE sluice_redo")
        # Within the run's own range of ids: a probe of the primary key, never a scan of all lineage.
        cursor.execute("DELETE FROM lineage l USING sluice_redo r WHERE l.id = r.id "
                       "AND l.id BETWEEN %(lo)s AND %(hi)s", {"lo": self.base, "hi": self.base + (1 << SHIFT) - 1})
        self.written -= cursor.rowcount
        cursor.execute(f"INSERT INTO lineage ({COLUMNS}) SELECT {COLUMNS} FROM sluice_redo")
        self.written += cursor.rowcount
        cursor.execute("DROP TABLE sluice_redo")

    # --- superseded and outcomes, beside the apply ---------------------------------------------------
    def outcomes(self, conn: Connection, selects: list[tuple[str, dict]], entries: int) -> None:
        """Send the `entries` rows of `selects` (each SQL and its parameters, run on the run's connection).

        They go through the spool, so the run's own connection is free again as soon as the server
        has written them out, and the apply starts while they are still being sent.
        """
        _copy_out(conn, selects, self._open().write)
        self.written += entries

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
        """Wait for the entries still being sent and commit them; the run's apply commits next."""
        self._end_stream()
        self._raw.commit()
        self.committed = True

    def _end_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.end()

    def close(self) -> None:
        """Roll back what was not committed and give the connection back; safe to call more than once."""
        if self._raw is None:
            return
        raw, self._raw = self._raw, None
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.cancel(raw.driver_connection)
        try:
            raw.rollback()
            raw.close()
        except Exception:
            log.warning("closing a run's lineage connection failed; it is discarded", exc_info=True)
            with contextlib.suppress(Exception):
                raw.invalidate()


def _text(value: str) -> str:
    return value.translate(_ESCAPES)


def _int(value) -> str:
    return r"\N" if value is None else str(value)


def _copy_out(conn: Connection, selects: list[tuple[str, dict]], write) -> None:
    """Hand the rows of `selects`, run on `conn`, to `write` in COPY's text format, block by block."""
    cursor = conn.connection.dbapi_connection.cursor()
    buffer = bytearray()  # COPY TO hands out a row at a time: written on in chunks
    with cursor:
        for statement, params in selects:
            with cursor.copy(f"COPY ({statement}) TO STDOUT", params) as copy:
                for row in copy:
                    buffer += row
                    if len(buffer) >= CHUNK:
                        write(bytes(buffer))
                        buffer.clear()
    if buffer:
        write(bytes(buffer))


def forget(conn: Connection, run_id: int) -> int:
    """Delete the lineage of a run that did not apply (its writer committed, its apply did not); return how many."""
    applied = select(Run.id).where(Run.id == run_id, Run.applied_seq.is_not(None)).exists()
    with write_transaction(conn, apply_lock=False):
        return conn.execute(delete(Lineage).where(Lineage.run_id == run_id, ~applied)).rowcount
