"""Dead letters: error codes, filtered keyset pages, counts per code and status, selections, one in full."""
from collections.abc import Iterator

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.engine import Connection

from ..datasets.registry import Dataset, resolve
from ..models import DeadLetter, Lineage
from .paging import MAX_PAGE, decode_cursor, keyset_page, one_int, page_limit

DEAD_LETTER_STATUSES = ("open", "resolved", "discarded")
# Codes of a record that could not be read as an object at all, before any field is looked at.
READER_CODES = ("not_an_object", "malformed_json", "record_too_large")
VERSION_CODES = ("missing_timestamp", "invalid_timestamp", "future_timestamp")
# The error codes of `events` (see `error_codes` for any dataset's).
ERROR_CODES = ("not_an_object", "malformed_json", "record_too_large", "missing_key", "invalid_key", "missing_name",
               "invalid_name", "missing_value", "invalid_value", "missing_timestamp", "invalid_timestamp",
               "future_timestamp")

def error_codes(dataset: Dataset) -> tuple[str, ...]:
    """Every error code a dataset's records can get, in the order they are checked (SPEC §10)."""
    payload = [code for f in dataset.shape.fields for code in (f"missing_{f.name}", f"invalid_{f.name}")]
    return (*READER_CODES, "missing_key", "invalid_key", *payload, *VERSION_CODES)


def _dead_letter_filter(query, *, dataset: str, error: str | None, status: str | None, run_id: int | None):
    query = query.where(DeadLetter.dataset == dataset)
    if error:
        query = query.where(DeadLetter.error == error)
    if status:
        query = query.where(DeadLetter.status == status)
    if run_id is not None:
        query = query.where(DeadLetter.run_id == run_id)
    return query


def dead_letters_page(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, cursor: str | None = None, before: str | None = None,
                      limit: int | None = None) -> dict:
    """A dataset's dead letters newest first, filtered by error code, status and run, a keyset page at a time."""
    name = resolve(conn, dataset).name
    query = _dead_letter_filter(
        select(DeadLetter.id, DeadLetter.run_id, DeadLetter.last_run_id, DeadLetter.pos, DeadLetter.line,
               DeadLetter.key, DeadLetter.error, DeadLetter.detail, DeadLetter.raw, DeadLetter.status,
               DeadLetter.created_at, DeadLetter.updated_at, DeadLetter.attempts, DeadLetter.sightings,
               DeadLetter.outcome, DeadLetter.resolved_run_id, DeadLetter.reason, DeadLetter.dataset,
               DeadLetter.updated_by),
        dataset=name, error=error, status=status, run_id=run_id)
    page = keyset_page(conn, query, (DeadLetter.id,), key_of=lambda r: (r["id"],), limit=page_limit(limit),
                 after=one_int(decode_cursor(cursor, 1)), before=one_int(decode_cursor(before, 1)), descending=True)
    page.update(dataset=name, error=error, status=status, run_id=run_id)
    return page


def dead_letter_counts(conn: Connection, dataset=None, *, status: str | None = None,
                       run_id: int | None = None) -> list[dict]:
    """How many of a dataset's dead letters there are per error code (within a status and run)."""
    name = resolve(conn, dataset).name
    query = _dead_letter_filter(select(DeadLetter.error, func.count().label("n")), dataset=name, error=None,
                                status=status, run_id=run_id).group_by(DeadLetter.error).order_by(DeadLetter.error)
    return [{"error": e, "n": n} for e, n in conn.execute(query)]


def dead_letter_tallies(conn: Connection, dataset=None, *, run_id: int | None = None) -> dict:
    """A dataset's dead letters per error code (any status) and per status, of one run or of all.

    Both are counted over the (dataset, error, id) and (dataset, status, id) indexes alone; a count
    per error code within a status reads every row of that status, which at 50k dead letters costs
    more than a page.
    """
    name = resolve(conn, dataset).name
    by_status = _dead_letter_filter(select(DeadLetter.status, func.count().label("n")), dataset=name, error=None,
                                    status=None, run_id=run_id).group_by(DeadLetter.status)
    statuses = dict(conn.execute(by_status).all())
    return {"errors": dead_letter_counts(conn, name, run_id=run_id),
            "statuses": [{"status": s, "n": statuses.get(s, 0)} for s in DEAD_LETTER_STATUSES],
            "total": sum(statuses.values())}


def dead_letter_count(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None) -> int:
    """How many of a dataset's dead letters a filter selects (what a bulk action would touch)."""
    query = _dead_letter_filter(select(func.count()).select_from(DeadLetter), dataset=resolve(conn, dataset).name,
                                error=error, status=status, run_id=run_id)
    return conn.execute(query).scalar()


def dead_letter_ids(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                    run_id: int | None = None) -> list[int]:
    """The ids of every dead letter of a dataset a filter selects, oldest first (for bulk actions)."""
    query = _dead_letter_filter(select(DeadLetter.id), dataset=resolve(conn, dataset).name, error=error,
                                status=status, run_id=run_id)
    return [i for (i,) in conn.execute(query.order_by(DeadLetter.id))]


def iter_dead_letters(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, batch: int = 2000) -> Iterator[dict]:
    """Every dead letter of a dataset a filter selects, newest first, in keyset batches (for streamed exports)."""
    name = resolve(conn, dataset).name
    cursor = None
    while True:
        page = dead_letters_page(conn, name, error=error, status=status, run_id=run_id, cursor=cursor, limit=batch)
        yield from page["rows"]
        cursor = page["next"]
        if cursor is None:
            return


def dead_letter(conn: Connection, dl_id: int) -> dict | None:
    """One dead letter (of any dataset: its row names it) with every lineage entry about it and its retries."""
    row = conn.execute(select(DeadLetter).where(DeadLetter.id == dl_id)).first()
    if row is None:
        return None
    letter = dict(row._mapping)
    # A retry's later steps (staged, inserted, …) sit at the same run and position as its
    # `reprocessed` entry, which is the one that names the dead letter.
    retried = select(Lineage.run_id, Lineage.pos).where(Lineage.dead_letter_id == dl_id,
                                                         Lineage.step == "reprocessed")
    history = conn.execute(select(Lineage).where(or_(
        Lineage.dead_letter_id == dl_id,
        and_(Lineage.run_id.is_not(None), tuple_(Lineage.run_id, Lineage.pos).in_(retried)),
    )).order_by(Lineage.id.desc()).limit(MAX_PAGE))
    letter["history"] = [dict(r._mapping) for r in history]
    return letter
