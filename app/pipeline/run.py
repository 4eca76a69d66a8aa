"""One run of the pipeline: create it, read and stage its input, apply it atomically, record the outcome."""
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from ..accounts import audit
from ..accounts.actor import Actor
from ..database import in_record_order, write_transaction
from ..intake import intake_for
from ..models import DeadLetter, Run
from . import lineage_writer, load, stage, watermark
from .extract import MAX_RECORD_BYTES, InputError, Item, Reader
from .validate import canonical, now_text, utc_now

GiB = 1024 ** 3
KINDS = ("upload", "api", "cli", "reprocess", "retry")
log = logging.getLogger(__name__)


@dataclass
class Options:
    """The options of a run (SPEC §2)."""

    ignore_watermark: bool = False
    max_reject_rate: float | None = None
    dry_run: bool = False
    # The run this one backfills (kept in the options, not a column): set by RunService.backfill only.
    backfill_of: int | None = None

    def __post_init__(self):
        if self.max_reject_rate is not None and not 0 <= self.max_reject_rate <= 1:
            raise ValueError("the reject threshold is a share between 0 and 1")

    @classmethod
    def from_json(cls, text: str | None) -> "Options":
        return cls(**json.loads(text or "{}"))

    def to_json(self) -> str:
        values = asdict(self)
        if values["backfill_of"] is None:
            del values["backfill_of"]  # the options of a run that backfills none read as they always did
        return json.dumps(values)


@dataclass
class Settings:
    """Limits that come from the configuration."""

    max_decompressed_bytes: int = 4 * GiB
    future_tolerance: timedelta = timedelta(days=1)
    max_upload_bytes: int | None = None
    max_record_bytes: int = MAX_RECORD_BYTES
    # Opens a run's recorded file_path for reading (the upload store's, for paths it owns);
    # raises FileNotFoundError when the file is gone.
    open_source: Callable[[str], BinaryIO] = lambda path: open(path, "rb")  # noqa: SIM115


class RunFailed(Exception):
    """A run failed; it has been recorded as failed with this message."""

    def __init__(self, run_id: int, message: str):
        super().__init__(message)
        self.run_id = run_id


class RunCancelled(Exception):
    """Raised by a progress callback to stop a run; the run is recorded as cancelled."""


class _Restart(Exception):
    """The watermark moved while the run was being read: read it again under the new one."""


class _DryRun(Exception):
    """Roll back a dry run's apply once everything has been computed."""


class _Lost(Exception):
    """The run is no longer this worker's (marked interrupted meanwhile): roll its apply back."""


Progress = Callable[[str, int, int], None]
# A progress callback that also has a `follow(counts)` method is handed the run's StageCounts as it
# starts reading: their `skipped` and `rejected` grow as the records are read (for a live page).

# What each phase a run reports (the first argument of its progress callback) means, in plain words.
PHASES = {"reading": "reading the file", "waiting for its turn": "read; waiting for the runs queued before it",
          "classifying": "checking against the table",
          "saving dead letters": "saving the rejected records",
          "waiting for the write lock": "waiting for another run to finish", "applying": "saving",
          "committing": "saving", "done": "done"}
DRY_RUN_REJECTS = 100  # a dry run keeps this many of its would-be rejects with its record
DRY_RUN_RAW = 2_000  # characters of each one's raw record
# Who executes a run once it is recorded: `supervise(run_id, execute)` calls `execute(progress)`. The
# run service passes one for `cli` and `reprocess` runs, so that they get the same progress reporter
# and cancel watcher as queued runs.
Supervisor = Callable[[int, Callable[[Progress], dict]], dict]
# Waits until every run queued before this one has finished, so that runs read side by side apply in
# queue order; calls its argument now and then, which raises RunCancelled when the run is cancelled.
Turn = Callable[[Callable[[], None]], None]
# The audit entry (`audit.entry(...)`) of the action that records a run, made once the run has its id.
AuditOf = Callable[[int], dict]


def upload_audit(actor: Actor | None, *, dataset: str, source_name: str | None,
                 source_size: int | None) -> AuditOf | None:
    """The audit entry of an upload (or a `cli` run) of a file, for `create_run`; None without an actor."""
    if actor is None:
        return None
    return lambda run_id: audit.entry("upload", actor, object_type="run", object_id=run_id, dataset=dataset,
                                      detail={"file": source_name, "size": source_size})


def writable_dataset(conn: Connection, dataset="events"):
    """The Dataset a new run may load into (a Dataset, a name or None for events), read in its own transaction.

    Raises registry.DatasetError when it does not exist ("not_found") or is archived ("archived").
    """
    # Imported here: app.datasets builds on app.pipeline, not the other way round.
    from ..datasets.registry import ensure_writable, get_dataset

    with conn.begin():
        found = get_dataset(conn, _dataset_name(dataset))
    ensure_writable(found)
    return found


def _dataset_name(dataset) -> str:
    return getattr(dataset, "name", dataset) or "events"


def create_run(conn: Connection, *, kind: str, options: Options | None = None, source_name: str | None = None,
               source_size: int | None = None, source_sha256: str | None = None, file_path: str | None = None,
               retry_of_id: int | None = None, dead_letter_id: int | None = None, worker: str | None = None,
               run_id: int | None = None, dataset="events", actor: Actor | None = None,
               audit_of: AuditOf | None = None, enqueue: Callable[[Connection, int], None] | None = None) -> int:
    """Record a queued run of `dataset`; return its id. With `worker`, that process claims the run at once.

    `actor` is who asked for it (its `created_by`); `audit_of(run_id)` gives the audit entry written
    with the run's row; `enqueue(conn, run_id)` is called in the transaction that records it (a task
    queue's job goes in with the run, or neither does). Raises registry.DatasetError when the
    dataset does not exist or is archived.
    """
    from ..datasets.registry import ensure_writable, get_dataset

    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    name = writable_dataset(conn, dataset).name  # before an id is handed out for it
    intake = intake_for(conn.engine) if run_id is None else None
    # On SQLite the intake hands out every run id, so that runs recorded there and here never collide.
    if intake is not None:
        run_id = intake.allocate()
    run_id = {"id": run_id} if run_id is not None else {}
    with write_transaction(conn, apply_lock=False):
        in_record_order(conn)
        ensure_writable(get_dataset(conn, name))  # archived meanwhile?
        same = None
        if source_sha256:
            same = conn.execute(select(func.min(Run.id)).where(Run.source_sha256 == source_sha256)).scalar()
        claimed = {"status": "running", "worker": worker, "heartbeat_at": now_text()} if worker else {}
        new_id = conn.execute(insert(Run).values(
            kind=kind, dataset=name, status=claimed.pop("status", "queued"),
            options=(options or Options()).to_json(),
            source_name=source_name, source_size=source_size, source_sha256=source_sha256,
            file_path=file_path, retry_of_id=retry_of_id, same_file_run_id=same,
            dead_letter_id=dead_letter_id, queued_at=now_text(), created_by=actor.label if actor else None,
            **claimed, **run_id,
        ).returning(Run.id)).scalar_one()
        if audit_of is not None:
            audit.write(conn, audit_of(new_id))
        if enqueue is not None:
            enqueue(conn, new_id)
        return new_id


def _set(conn: Connection, run_id: int, *where, **values) -> int:
    with write_transaction(conn, apply_lock=False):
        return conn.execute(update(Run).where(Run.id == run_id, *where).values(**values)).rowcount


def _owned(run) -> tuple:
    """The conditions under which this execution still owns its run: running, by the worker that claimed it."""
    return (Run.status == "running",) + ((Run.worker == run.worker,) if run.worker else ())


def execute_run(conn: Connection, run_id: int, items: Callable[[], Iterable[Item]] | None = None, *,
                settings: Settings | None = None, progress: Progress | None = None,
                dl_ids: dict | None = None, supervise: Supervisor | None = None, turn: Turn | None = None) -> dict:
    """Execute a queued run from its stored file (or `items`); return its summary or raise RunFailed.

    The input is read and staged without the database's write lock; only the final apply holds it.
    With `turn`, the run waits after reading until the runs queued before it have finished (see Turn).
    A failure of any kind leaves target, lineage, dead letters and watermark as they were.
    """
    if supervise is not None:
        return supervise(run_id, lambda reporter: execute_run(conn, run_id, items, settings=settings,
                                                              progress=reporter, dl_ids=dl_ids, turn=turn))
    settings = settings or Settings()
    run = read_run(conn, run_id)
    options = Options.from_json(run.options)
    report = progress or (lambda phase, records, nbytes: None)
    files, readers = [], []

    def source() -> Iterable[Item]:
        if items is not None:
            return items()
        try:
            files.append(settings.open_source(run.file_path or ""))  # closed by close_files
        except FileNotFoundError:
            raise InputError("the run's file is no longer stored") from None
        # Reported per chunk read, so that progress moves and a cancel stops the run even where the
        # file holds no record (white space, or a record over the limit being skipped).
        reader = Reader(files[-1], settings.max_decompressed_bytes, settings.max_upload_bytes,
                        max_record=settings.max_record_bytes,
                        on_chunk=lambda: report("reading", reader.records, bytes_read()))
        readers.append(reader)
        return reader

    def bytes_read() -> int:
        return readers[-1].bytes_read() if readers else 0

    def close_files() -> None:
        while files:
            files.pop().close()

    with conn.begin():
        shape_version, wm_seen = _dataset_state(conn, run.dataset)
    # A run that was cancelled, interrupted or finished meanwhile is not executed (again). Its page
    # shows the watermark it sees from now on, whatever its outcome.
    started = _set(conn, run_id, Run.status.in_(("queued", "running")), Run.applied_seq.is_(None),
                   *((Run.worker == run.worker,) if run.worker else ()),
                   status="running", started_at=now_text(), error=None, shape_version=shape_version,
                   watermark_before=wm_seen)
    if not started:
        status = read_run(conn, run_id).status
        raise RunFailed(run_id, f"run {run_id} is {status}; it was not executed")
    try:
        for _attempt in range(3):
            try:
                summary = _attempt_run(conn, run, options, settings, source, report, bytes_read, dl_ids, turn)
                break
            except _Restart:
                close_files()
        else:
            raise InputError("the watermark or the dataset's shape kept changing while the run was read; "
                             "retry the run")
    except RunCancelled:
        _finish_failed(conn, run, "cancelled", "cancelled by request")
        raise RunFailed(run_id, "cancelled by request") from None
    except InputError as exc:
        _finish_failed(conn, run, "failed", str(exc))
        raise RunFailed(run_id, str(exc)) from None
    except _Lost:
        _rollback(conn)
        message = f"run {run_id} is no longer this worker's (it was marked interrupted); nothing was applied"
        raise RunFailed(run_id, message) from None
    except RunFailed:
        raise
    except Exception as exc:  # a database error, a bug, a failure injected by a test
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        _finish_failed(conn, run, "failed", message)
        raise RunFailed(run_id, message) from exc
    finally:
        close_files()
        _drop_staging(conn)
    return summary


def _rollback(conn: Connection) -> None:
    if conn.in_transaction():
        conn.rollback()


def _drop_staging(conn: Connection) -> None:
    """Drop the run's TEMP tables; best effort, as the run's outcome is recorded already."""
    try:
        _rollback(conn)
        with conn.begin():
            stage.drop(conn)
    except Exception:
        log.warning("dropping the staging tables failed; the connection is discarded", exc_info=True)
        with contextlib.suppress(Exception):
            conn.invalidate()  # its TEMP tables go with it instead of meeting the next run


def _finish_failed(conn: Connection, run, status: str, message: str) -> None:
    """Record a run's failure, unless it applied (its COMMIT is its outcome) or is no longer ours."""
    _rollback(conn)
    _set(conn, run.id, *_owned(run), Run.applied_seq.is_(None), status=status, error=message,
         finished_at=now_text())


def _check_still_open(conn: Connection, ids: list[int]) -> None:
    """Refuse a reprocess whose dead letters were resolved or discarded since it was requested."""
    for i in range(0, len(ids), 500):
        closed = conn.execute(select(DeadLetter.id, DeadLetter.status).where(
            DeadLetter.id.in_(ids[i:i + 500]), DeadLetter.status != "open").limit(1)).first()
        if closed:
            raise InputError(f"dead letter {closed.id} was {closed.status} meanwhile; nothing was reprocessed")


def _applied_version(conn: Connection):
    return conn.execute(select(func.max(Run.applied_seq))).scalar()


def _dataset_state(conn: Connection, name: str) -> tuple[int | None, str | None]:
    """The current shape version and watermark of a dataset ((None, None) when it is gone)."""
    from ..datasets.registry import DatasetError, get_dataset

    try:
        dataset = get_dataset(conn, name)
    except DatasetError:
        return None, None
    return dataset.version, watermark.current(conn, dataset.watermark)


def _first_rejects(conn: Connection) -> str:
    """A dry run's first would-be rejects, in file order, as JSON for its record; each raw cut to DRY_RUN_RAW."""
    table = stage.rejected
    rows = conn.execute(select(table.c.pos, table.c.line, table.c.key, table.c.error, table.c.detail,
                               func.substr(table.c.raw, 1, DRY_RUN_RAW).label("raw"),
                               func.length(table.c.raw).label("raw_length"))
                        .order_by(table.c.pos).limit(DRY_RUN_REJECTS))
    return json.dumps([{**r._asdict(), "truncated": r.raw_length > DRY_RUN_RAW} for r in rows], ensure_ascii=False)


def _loadable(conn: Connection, name: str):
    """The run's dataset as it is now; InputError when it can no longer take a run."""
    from ..datasets.registry import DatasetError, get_dataset

    try:
        dataset = get_dataset(conn, name)
    except DatasetError as exc:
        raise InputError(f"{exc}; nothing was loaded") from None
    if dataset.archived_at is not None:
        raise InputError(f"the dataset {name} was archived at {dataset.archived_at}; nothing was loaded")
    return dataset


def _attempt_run(conn, run, options: Options, settings: Settings, source, report, bytes_read, dl_ids,
                 turn: Turn | None) -> dict:
    writers: list[lineage_writer.LineageWriter] = []
    try:
        return _attempt(conn, run, options, settings, source, report, bytes_read, dl_ids, turn, writers)
    except BaseException:
        if any(w.committed for w in writers):  # its lineage committed, its apply did not
            lineage_writer.forget(conn, run.id)
        raise
    finally:
        for w in writers:
            w.close()


def _attempt(conn, run, options: Options, settings: Settings, source, report, bytes_read, dl_ids,
             turn: Turn | None, writers: list) -> dict:
    run_id = run.id
    with conn.begin():
        if conn.dialect.name == "sqlite":
            # Page cache for the index upkeep of a large apply; SQLite sizes its sort buffers from it
            # too, so it is most of a run's peak memory (64 MiB keeps a 3M-record run under 250 MB).
            conn.exec_driver_sql("PRAGMA cache_size = -65536")
        dataset = _loadable(conn, run.dataset)
        wm_before = watermark.current(conn, dataset.watermark)
        shown = conn.execute(select(Run.watermark_before).where(Run.id == run_id)).scalar()
    if wm_before != shown:  # moved since the run started: its page shows the one it reads under
        _set(conn, run_id, *_owned(run), watermark_before=wm_before)
    wm_for_skip = None if options.ignore_watermark or dl_ids is not None else wm_before
    latest = canonical(utc_now() + settings.future_tolerance)

    def tick(records: int) -> None:
        report("reading", records, bytes_read())

    counts = stage.StageCounts()
    follow = getattr(report, "follow", None)
    if follow is not None:
        follow(counts)
    # A run that waits for its turn keeps its rejects' versions: the watermark may move meanwhile.
    versions = turn is not None and not options.ignore_watermark and dl_ids is None
    read_at = now_text()
    writer = None
    if lineage_writer.usable(conn.engine, run_id) and not options.dry_run and dl_ids is None:
        writer = lineage_writer.LineageWriter(conn.engine, run_id=run_id, dataset=dataset.name, read_at=read_at,
                                              texts=load.texts(dataset.shape))
        writers.append(writer)
    report("reading", 0, 0)
    with conn.begin():
        staging = stage.create(conn, dataset)
        stage.fill(staging, source(), watermark=wm_for_skip, latest=latest, dl_ids=dl_ids, tick=tick, counts=counts,
                   versions=versions,
                   read_steps=None if writer is None else lambda good, old: writer.read_steps(good, old, wm_for_skip))
    if turn is not None:
        report("waiting for its turn", counts.input_records, bytes_read())
        turn(lambda: report("waiting for its turn", counts.input_records, bytes_read()))
        if versions:
            with conn.begin():
                wm_now = watermark.current(conn, dataset.watermark)
            if wm_now is not None and (wm_before is None or wm_now > wm_before):
                # The runs before it moved the watermark on: skip what they made old, as if it had
                # been read after them. A watermark moved back (a reset) reads it again (below).
                with conn.begin():
                    stage.reskip(staging, counts, wm_now)
                    if writer is not None and counts.skipped:
                        # Its entries of skipped records name the watermark they meet now, as reading now would.
                        writer.replace(conn, load.skipped_entries(staging, load.parameters(
                            staging, run_id=run_id, now=read_at, read_at=read_at, watermark=wm_now, base=writer.base)))
                wm_before = wm_for_skip = wm_now
                _set(conn, run_id, *_owned(run), watermark_before=wm_before)
    if options.dry_run:
        with conn.begin():
            rejects = _first_rejects(conn)
    else:
        rejects = None
    result = {"input_records": counts.input_records, "skipped": counts.skipped,
              "rejected": counts.rejected, "staged": counts.staged, "shape_version": dataset.version}

    considered = counts.input_records - counts.skipped
    if options.max_reject_rate is not None and considered and counts.rejected / considered > options.max_reject_rate:
        message = (f"{counts.rejected} of {considered} records were rejected "
                   f"({counts.rejected / considered:.1%}), over the reject threshold of "
                   f"{options.max_reject_rate:.1%}; nothing was loaded")
        _set(conn, run_id, *_owned(run), Run.applied_seq.is_(None), status="failed", error=message,
             finished_at=now_text(), watermark_before=wm_before, watermark_after=wm_before,
             dry_run_rejects=rejects, **result)
        raise RunFailed(run_id, message)

    report("classifying", counts.input_records, 0)
    with conn.begin():
        loaded = load.LoadCounts(superseded=load.prepare(staging))
        version = _applied_version(conn)
        if writer is not None:
            # Written beside the apply, as decided now; should another run apply first, the
            # outcomes are decided again under the lock and the apply writes all the lineage.
            params = load.parameters(staging, run_id=run_id, now=now_text(), read_at=read_at, watermark=wm_before,
                                     base=writer.base)
            # Superseded and rejected records need no outcome: their entries are written while the run classifies.
            load.reserve_dead_letters(staging, params)
            writer.outcomes(conn, load.prepared_entries(staging, params), loaded.superseded + counts.rejected)
        outcomes = load.classify(staging)
        if writer is not None:
            writer.outcomes(conn, load.outcome_entries(staging, params), sum(outcomes.values()))

    held = None  # the savepoint before the dead letters written ahead of the lock

    def ahead_of_the_lock(conn: Connection) -> None:
        # With a lineage writer (PostgreSQL), in the apply's transaction before its lock is taken.
        nonlocal held
        report("saving dead letters", counts.input_records, 0)
        held = conn.begin_nested()
        loaded.dead_letters = load.insert_reserved_dead_letters(staging, params)
        report("waiting for the write lock", counts.input_records, 0)

    if writer is None:
        report("waiting for the write lock", counts.input_records, 0)
    try:
        with write_transaction(conn, before_lock=None if writer is None else ahead_of_the_lock):
            locked_at = time.perf_counter()
            report("applying", counts.input_records, 0)
            if _loadable(conn, dataset.name).version != dataset.version:
                raise _Restart()  # its shape changed meanwhile: read the input again with the new one
            wm_now = watermark.current(conn, dataset.watermark)
            if wm_now != wm_before:
                if wm_for_skip is not None:
                    raise _Restart()  # the run's skip decisions used the old value
                wm_before = wm_now  # nothing was skipped by it: apply and advance from the new value
            if dl_ids:
                _check_still_open(conn, list(dl_ids.values()))
            moved = _applied_version(conn) != version
            if writer is not None and (moved or not writer.fits(conn, counts.input_records)
                                       or not load.reservations_hold(staging, params, inserted=loaded.dead_letters)):
                # Its ids, its outcomes or its rejects' dead letters would be wrong: the apply writes all
                # the lineage and the dead letters.
                writer.close()
                writer = None
                held.rollback()
                loaded.dead_letters = 0
            elif held is not None:
                held.commit()
            if moved:
                outcomes = load.classify(staging)  # another run applied meanwhile: decide again, under the lock
            for name, n in outcomes.items():
                setattr(loaded, name, n)
            if writer is None:
                now = now_text()
                # A reprocess's dead letters and `reprocessed` entries name who asked for it (the run's created_by).
                params = load.parameters(staging, run_id=run_id, now=now, read_at=read_at, watermark=wm_before,
                                         actor=run.created_by)
            else:
                writer.claim(conn, counts.input_records)
            load.apply(staging, params=params, retry=dl_ids is not None, counts=loaded, lineage=writer)
            wm_after = watermark.advance(conn, wm_before, run_id, dataset)
            result.update(asdict(loaded), watermark_before=wm_before, watermark_after=wm_after)
            report("committing", counts.input_records, 0)
            if options.dry_run:
                raise _DryRun()
            if writer is not None:
                writer.finish()  # its lineage commits just before the rest of the apply (and inside its lock time)
            seq = (_applied_version(conn) or 0) + 1
            # Everything the run's row needs is in the committed UPDATE, so that nothing after COMMIT
            # can leave an applied run looking unfinished; the lock time is measured up to here.
            # Only while this worker still owns the run: otherwise the apply rolls back.
            done = conn.execute(update(Run).where(Run.id == run_id, *_owned(run)).values(
                status="succeeded", finished_at=now_text(), applied_seq=seq,
                lock_seconds=time.perf_counter() - locked_at, **result))
            if done.rowcount != 1:
                raise _Lost()
    except _DryRun:
        if not _set(conn, run_id, *_owned(run), status="succeeded", finished_at=now_text(),
                    lock_seconds=time.perf_counter() - locked_at, dry_run_rejects=rejects, **result):
            raise _Lost() from None
    # The run has committed: what follows is best effort, too late to fail or cancel it.
    with contextlib.suppress(Exception):
        report("done", counts.input_records, 0)
    return summary_of(SimpleNamespace(id=run_id, dataset=dataset.name, kind=run.kind, status="succeeded",
                                      options=run.options, error=None,
                                      watermark_before=result["watermark_before"],
                                      watermark_after=result["watermark_after"],
                                      **{k: v for k, v in result.items()
                                         if not k.startswith("watermark") and k != "shape_version"}))


def read_run(conn: Connection, run_id: int):
    """The run's row, read in a transaction of its own."""
    with conn.begin():
        return conn.execute(select(Run).where(Run.id == run_id)).one()


def summary_of(run) -> dict:
    """The summary JSON of a run: every count of SPEC §2 plus the seed's keys."""
    options = Options.from_json(run.options)
    return {
        "run_id": run.id,
        "dataset": getattr(run, "dataset", None) or "events",
        "status": run.status,
        "input_records": run.input_records,
        "skipped": run.skipped,
        "rejected": run.rejected,
        "staged": run.staged,
        "superseded": run.superseded,
        "inserted": run.inserted,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "stale": run.stale,
        "loaded": run.inserted + run.updated,
        "dead_letters": run.dead_letters,
        "lineage_entries": run.lineage_entries,
        "watermark_before": run.watermark_before,
        "watermark": run.watermark_after,
        "dry_run": options.dry_run,
        "error": run.error,
        "warnings": warnings_of(run),
    }


# What a run that succeeded but needs attention says (SPEC §5), most serious first.
WARNING_CODES = ("all_rejected", "reprocess_all_failed", "high_reject_rate", "all_skipped", "dry_run")


def warnings_of(run) -> list[dict]:
    """The warnings of a run that succeeded but needs attention: a list of {"code", "message"}, [] for a clean one.

    Computed from the run's row alone (its counts, kind and options), so every run has them, old ones too.
    """
    if run.status != "succeeded":
        return []  # a failed or cancelled run says why in its error; a queued or running one is not done
    found = []

    def add(code: str, message: str) -> None:
        found.append({"code": code, "message": message})

    n, rejected, skipped = run.input_records or 0, run.rejected or 0, run.skipped or 0
    if n and rejected == n and run.kind == "reprocess":
        add("reprocess_all_failed", f"Every one of the {n:,} reprocessed records failed again: "
                                    "their dead letters stay open, with the new errors.")
    elif n and rejected == n:
        add("all_rejected", f"Every one of the {n:,} records was rejected; nothing was loaded. "
                            "Their dead letters say why.")
    elif n and rejected * 2 > n:
        add("high_reject_rate", f"{rejected:,} of {n:,} records ({rejected / n:.0%}) were rejected, more than half.")
    if n and skipped == n and not (run.inserted or 0) + (run.updated or 0):
        add("all_skipped", f"Nothing was loaded: all {n:,} records were older than the watermark {run.watermark_before}. "
                           "Run this file again as a backfill to load them.")
    if Options.from_json(run.options).dry_run:
        add("dry_run", "Dry run: nothing was kept but the run's record. Run the file again without dry run "
                       "to load it.")
    return found


def run_file(conn: Connection, path: str | Path, *, kind: str = "cli", options: Options | None = None,
             settings: Settings | None = None, progress: Progress | None = None, worker: str | None = None,
             supervise: Supervisor | None = None, dataset="events", actor: Actor | None = None) -> dict:
    """Create a run of `dataset` for a file and execute it at once; return its summary or raise RunFailed.

    `worker` names the executing process (see `app.runs`), so that its death is noticed; `actor`, who
    runs it (audited as an `upload`). Raises registry.DatasetError (nothing recorded) when the dataset
    does not exist or is archived.
    """
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    size = path.stat().st_size
    run_id = create_run(conn, kind=kind, options=options, source_name=path.name, source_size=size,
                        source_sha256=digest.hexdigest(), file_path=str(path.resolve()), worker=worker,
                        dataset=dataset, actor=actor,
                        audit_of=upload_audit(actor, dataset=_dataset_name(dataset), source_name=path.name,
                                              source_size=size))
    return execute_run(conn, run_id, settings=settings, progress=progress, supervise=supervise)


__all__ = [
    "MAX_RECORD_BYTES",
    "PHASES",
    "AuditOf",
    "Options",
    "RunCancelled",
    "RunFailed",
    "Settings",
    "Turn",
    "create_run",
    "execute_run",
    "run_file",
    "summary_of",
    "upload_audit",
    "warnings_of",
    "writable_dataset",
]
