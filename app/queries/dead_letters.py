"""Dead letters: error codes, filtered and searched keyset pages, counts per code and status, selections, one in full.

Search (`text`): a case-insensitive substring of the raw record, of the attempted edit (`last_raw`)
or of the detail. On PostgreSQL an ILIKE that pg_trgm's GIN indexes serve (a scan where the
extension could not be created); on SQLite a LIKE (case-insensitive for ASCII letters only, as
SQLite's LIKE is) whose candidates come from the FTS5 trigram table when they are few, and that is
tested row by row along the id index when they are many (a page of those is near at hand). Text
shorter than SEARCH_MIN has no trigram: the views refuse it; called directly it scans.
`key_prefix`: a range of the (dataset, key, id) index. Unstorable text matches nothing.
"""
from collections.abc import Iterator

from sqlalchemy import and_, column, false, func, literal, or_, select, tuple_, union_all
from sqlalchemy import text as sql
from sqlalchemy.engine import Connection

from ..datasets.registry import Dataset, resolve
from ..models import DeadLetter, Lineage
from .paging import MAX_PAGE, decode_cursor, keyset_page, one_int, page_limit, prefix_range, storable

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


SEARCH_MIN = 3  # a trigram index needs three characters
SEARCH_MAX = 200
# Below this many FTS candidates a SQLite search reads them by id; at or above it, matches are
# dense enough that walking the id index newest first and testing each row finds a page sooner
# than reading every candidate (which a common term makes hundreds of thousands).
SPARSE_CAP = 5000
_SEARCHED = (DeadLetter.raw, DeadLetter.last_raw, DeadLetter.detail)
_FTS_CANDIDATES = " UNION ALL ".join(f"SELECT rowid FROM dead_letters_fts WHERE {c.key} LIKE :fts_pattern"
                                     for c in _SEARCHED)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _text_condition(conn: Connection, text: str):
    """Rows holding `text` in raw, last_raw or detail, ignoring case (see the module's docstring)."""
    pattern = f"%{_escape_like(text)}%"
    if conn.dialect.name != "sqlite":
        return or_(*[c.ilike(pattern, escape="\\") for c in _SEARCHED])
    # SQLite's LIKE ignores the case of ASCII letters (the FTS5 trigram table folds more, so its
    # candidates are a superset: the LIKE decides).
    matches = or_(*[c.like(pattern, escape="\\") for c in _SEARCHED])
    if len(text) < SEARCH_MIN:
        return matches
    # FTS5 serves LIKE only without ESCAPE: there `%` and `_` in the text are wildcards, which
    # only widens the candidates.
    fts_pattern = f"%{text}%"
    capped = conn.execute(sql(f"SELECT count(*) FROM ({_FTS_CANDIDATES} LIMIT :cap)"),
                          {"fts_pattern": fts_pattern, "cap": SPARSE_CAP}).scalar()
    candidates = sql(_FTS_CANDIDATES).bindparams(fts_pattern=fts_pattern).columns(column("rowid"))
    return and_(DeadLetter.id.in_(candidates), matches) if capped < SPARSE_CAP else matches


def _dead_letter_filter(query, conn: Connection, *, dataset: str, error: str | None, status: str | None,
                        run_id: int | None, text: str | None = None, key_prefix: str | None = None):
    query = query.where(DeadLetter.dataset == dataset)
    if error:
        query = query.where(DeadLetter.error == error)
    if status:
        query = query.where(DeadLetter.status == status)
    if run_id is not None:
        query = query.where(DeadLetter.run_id == run_id)
    if not storable(text) or not storable(key_prefix):
        return query.where(false())
    if key_prefix:
        query = query.where(prefix_range(DeadLetter.key, key_prefix))
    if text:
        query = query.where(_text_condition(conn, text))
    return query


def dead_letters_page(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, text: str | None = None, key_prefix: str | None = None,
                      cursor: str | None = None, before: str | None = None, limit: int | None = None) -> dict:
    """A dataset's dead letters newest first, filtered by error code, status, run, text and key prefix, a keyset page at a time."""
    name = resolve(conn, dataset).name
    query = _dead_letter_filter(
        select(DeadLetter.id, DeadLetter.run_id, DeadLetter.last_run_id, DeadLetter.pos, DeadLetter.line,
               DeadLetter.key, DeadLetter.error, DeadLetter.detail, DeadLetter.raw, DeadLetter.status,
               DeadLetter.created_at, DeadLetter.updated_at, DeadLetter.attempts, DeadLetter.sightings,
               DeadLetter.outcome, DeadLetter.resolved_run_id, DeadLetter.reason, DeadLetter.dataset,
               DeadLetter.updated_by),
        conn, dataset=name, error=error, status=status, run_id=run_id, text=text, key_prefix=key_prefix)
    page = keyset_page(conn, query, (DeadLetter.id,), key_of=lambda r: (r["id"],), limit=page_limit(limit),
                 after=one_int(decode_cursor(cursor, 1)), before=one_int(decode_cursor(before, 1)), descending=True)
    page.update(dataset=name, error=error, status=status, run_id=run_id, text=text, key_prefix=key_prefix)
    return page


def dead_letter_counts(conn: Connection, dataset=None, *, status: str | None = None, run_id: int | None = None,
                       text: str | None = None, key_prefix: str | None = None) -> list[dict]:
    """How many of a dataset's dead letters there are per error code (within a status, run and search)."""
    name = resolve(conn, dataset).name
    query = _dead_letter_filter(select(DeadLetter.error, func.count().label("n")), conn, dataset=name, error=None,
                                status=status, run_id=run_id, text=text, key_prefix=key_prefix)
    return [{"error": e, "n": n} for e, n in conn.execute(query.group_by(DeadLetter.error).order_by(DeadLetter.error))]


# The counts beside a list stop here ("10,000+"): an exact count of a million dead letters reads
# every entry of an index (about a second), a capped one at most this many per code.
COUNT_CAP = 10_000
# Within a text search each counted row is tested by LIKE: a common term stops sooner.
SEARCH_COUNT_CAP = 1_000

# The error codes a dataset's dead letters have, one index probe of (dataset, error, id) per code (a
# loose index scan): cheap however many rows, and it finds codes of fields a later shape dropped.
_CODES_PRESENT = sql(
    "WITH RECURSIVE codes(e) AS ("
    " SELECT min(error) FROM dead_letters WHERE dataset = :dataset"
    " UNION ALL"
    " SELECT (SELECT min(error) FROM dead_letters WHERE dataset = :dataset AND error > codes.e)"
    " FROM codes WHERE codes.e IS NOT NULL"
    ") SELECT e FROM codes WHERE e IS NOT NULL")


def _capped_counts(conn: Connection, base, column, values, cap: int) -> dict:
    """How many rows of `base` hold each of `values` in `column`, each counted up to `cap` + 1, in one statement."""
    if not values:
        return {}
    parts = [select(literal(v).label("v"), func.count().label("n"))
             .select_from(base.where(column == v).limit(cap + 1).subquery()) for v in values]
    return dict(conn.execute(union_all(*parts)).all())


def dead_letter_tallies(conn: Connection, dataset=None, *, status: str | None = None, run_id: int | None = None,
                        text: str | None = None, key_prefix: str | None = None) -> dict:
    """A dataset's dead letters per error code within the status (and run and search) a list shows, and per status.

    `errors` counts within `status` (any status for None), so that the counts beside a list add up
    to it; `statuses` and `total` count every status within the run and search, to offer the other
    statuses. Each count stops at COUNT_CAP, or SEARCH_COUNT_CAP within a text search (`capped` says
    so), so that a million dead letters cost what ten thousand do; a bulk action counts its
    selection exactly (`dead_letter_count`).
    """
    name = resolve(conn, dataset).name
    base = _dead_letter_filter(select(literal(1)), conn, dataset=name, error=None, status=None, run_id=run_id,
                               text=text, key_prefix=key_prefix)
    cap = SEARCH_COUNT_CAP if text else COUNT_CAP
    statuses = _capped_counts(conn, base, DeadLetter.status, DEAD_LETTER_STATUSES, cap)
    codes = [c for (c,) in conn.execute(_CODES_PRESENT, {"dataset": name})]
    within = base.where(DeadLetter.status == status) if status else base
    errors = _capped_counts(conn, within, DeadLetter.error, codes, cap)

    def tally(n: int) -> dict:
        return {"n": min(n, cap), "capped": n > cap}

    return {"errors": [{"error": e, **tally(n)} for e, n in sorted(errors.items()) if n],
            "statuses": [{"status": s, **tally(statuses.get(s, 0))} for s in DEAD_LETTER_STATUSES],
            "total": sum(min(n, cap) for n in statuses.values()),
            "total_capped": any(n > cap for n in statuses.values())}


def dead_letter_count(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, text: str | None = None, key_prefix: str | None = None) -> int:
    """How many of a dataset's dead letters a filter selects (what a bulk action would touch)."""
    query = _dead_letter_filter(select(func.count()).select_from(DeadLetter), conn,
                                dataset=resolve(conn, dataset).name, error=error, status=status, run_id=run_id,
                                text=text, key_prefix=key_prefix)
    return conn.execute(query).scalar()


def dead_letter_ids(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                    run_id: int | None = None, text: str | None = None, key_prefix: str | None = None) -> list[int]:
    """The ids of every dead letter of a dataset a filter selects, oldest first (for bulk actions)."""
    query = _dead_letter_filter(select(DeadLetter.id), conn, dataset=resolve(conn, dataset).name, error=error,
                                status=status, run_id=run_id, text=text, key_prefix=key_prefix)
    return [i for (i,) in conn.execute(query.order_by(DeadLetter.id))]


def iter_dead_letters(conn: Connection, dataset=None, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, text: str | None = None, key_prefix: str | None = None,
                      batch: int = 2000) -> Iterator[dict]:
    """Every dead letter of a dataset a filter selects, newest first, in keyset batches (for streamed exports)."""
    name = resolve(conn, dataset).name
    cursor = None
    while True:
        page = dead_letters_page(conn, name, error=error, status=status, run_id=run_id, text=text,
                                 key_prefix=key_prefix, cursor=cursor, limit=batch)
        yield from page["rows"]
        cursor = page["next"]
        if cursor is None:
            return


def next_open_dead_letter(conn: Connection, dl_id: int, dataset=None, *, error: str | None = None,
                          run_id: int | None = None, text: str | None = None,
                          key_prefix: str | None = None) -> int | None:
    """The open dead letter after `dl_id` in list order (newest first) within a filter, else the newest other one."""
    if dataset is None:  # the dead letter's own dataset
        dataset = conn.execute(select(DeadLetter.dataset).where(DeadLetter.id == dl_id)).scalar()
    query = _dead_letter_filter(select(DeadLetter.id), conn, dataset=resolve(conn, dataset).name, error=error,
                                status="open", run_id=run_id, text=text, key_prefix=key_prefix)
    newest_first = query.order_by(DeadLetter.id.desc()).limit(1)
    return (conn.execute(newest_first.where(DeadLetter.id < dl_id)).scalar()
            or conn.execute(newest_first.where(DeadLetter.id != dl_id)).scalar())


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
