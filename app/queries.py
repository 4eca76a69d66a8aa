"""The read side for pages and API: headline numbers, keyset pages, lineage of a key. No Flask here.

Every function takes a Connection first and returns plain dicts and lists, so an HTML page and a
JSON answer render the same data. Pages are keyset pages: fetch `limit + 1` rows past an opaque
cursor (the last row's sort key plus its primary key); never OFFSET, never a full count.
"""
import base64
import binascii
import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict

from sqlalchemy import and_, false, func, literal_column, or_, select, tuple_
from sqlalchemy.engine import Connection

from .intake import pending_runs
from .models import DeadLetter, Lineage, Run, Target, Watermark, WatermarkHistory
from .pipeline.run import Options
from .pipeline.watermark import NAME as WATERMARK

PAGE = 50
MAX_PAGE = 500
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
DEAD_LETTER_STATUSES = ("open", "resolved", "discarded")
ERROR_CODES = ("not_an_object", "malformed_json", "record_too_large", "missing_key", "invalid_key", "missing_name", "invalid_name",
               "missing_value", "invalid_value", "missing_timestamp", "invalid_timestamp", "future_timestamp")
# Sort name -> the columns of the index that serves it (the primary key last, to make it unique).
TARGET_SORTS = {
    "key": (Target.key,),
    "ts": (Target.ts, Target.key),
    "value": (Target.value, Target.key),
    "updated": (Target.updated_at, Target.key),
    "name": (Target.name, Target.key),
}


class BadCursor(ValueError):
    """A cursor that this code did not write (or for another sort)."""


# Text no row can hold (NUL, lone surrogates: the pipeline rejects them and PostgreSQL refuses
# them outright); a search or cursor holding it matches nothing instead of reaching the database.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INT64 = 2 ** 63


def storable(text: str | None) -> bool:
    """Whether a row could hold this text (no NUL, no unpaired surrogate)."""
    return text is None or not _UNSTORABLE.search(text)


def _valid_cursor_value(value) -> bool:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def encode_cursor(values) -> str:
    """An opaque, URL-safe cursor for a row's sort key."""
    return base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list | None:
    """The sort key inside a cursor of `size` values; None for no cursor; BadCursor when it is not one."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("this page link is not valid any more; start from the first page") from None
    if not isinstance(values, list) or len(values) != size or not all(map(_valid_cursor_value, values)):
        raise BadCursor("this page link is not valid any more; start from the first page")
    return values


def _limit(limit: int | None) -> int:
    return max(1, min(int(limit or PAGE), MAX_PAGE))


def prefix_range(column, prefix: str):
    """`column` starts with `prefix`, as a range an index serves (binary order on both databases)."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return and_(column >= prefix, column < "".join(chars[:-1]) + chr(nxt))
        chars.pop()
    return column >= prefix


def _page(conn: Connection, query, columns, *, key_of, limit: int, after=None, before=None, last=False,
          descending=False) -> dict:
    """One keyset page of `query` ordered by `columns`: rows, and cursors for the next and previous pages.

    `after` continues forwards, `before` goes back a page and `last` is the final page; the last
    two read the index backwards, so the last page costs what the first does.
    """
    backwards = bool(before is not None or last)
    ascending = descending == backwards
    sort_key = tuple_(*columns) if len(columns) > 1 else columns[0]

    def bound(values):
        return tuple_(*values) if len(columns) > 1 else values[0]

    if after is not None:
        query = query.where(sort_key < bound(after) if descending else sort_key > bound(after))
    elif before is not None:
        query = query.where(sort_key > bound(before) if descending else sort_key < bound(before))
    query = query.order_by(*[c.asc() if ascending else c.desc() for c in columns]).limit(limit + 1)
    rows = [dict(r._mapping) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
        has_prev, has_next = more, before is not None
    else:
        has_prev, has_next = after is not None, more
    return {
        "rows": rows,
        "next": encode_cursor(key_of(rows[-1])) if rows and has_next else None,
        "prev": encode_cursor(key_of(rows[0])) if rows and has_prev else None,
        "limit": limit,
    }


# --- headline numbers and runs --------------------------------------------------------------------

def overview(conn: Connection) -> dict:
    """Headline numbers (target rows, open dead letters, watermark) and the latest runs."""
    # Rows are only ever added to the target by applied runs, so their inserted counts add up to
    # the row count: an aggregate over the small runs table instead of counting millions of rows.
    target_rows = conn.execute(select(func.coalesce(func.sum(Run.inserted), 0))
                               .where(Run.applied_seq.is_not(None))).scalar()
    open_dead_letters = conn.execute(select(func.count()).select_from(DeadLetter)
                                     .where(DeadLetter.status == "open")).scalar()
    watermark = conn.execute(select(Watermark.value).where(Watermark.name == WATERMARK)).scalar()
    latest_runs = [dict(r._mapping) for r in conn.execute(select(Run).order_by(Run.id.desc()).limit(10))]
    latest_runs = sorted(latest_runs + pending_runs(conn), key=lambda r: r["id"], reverse=True)[:10]
    return {"target_rows": target_rows, "open_dead_letters": open_dead_letters, "watermark": watermark,
            "latest_runs": latest_runs}


def runs_page(conn: Connection, *, status: str | None = None, cursor: str | None = None,
              before: str | None = None, limit: int | None = None) -> dict:
    """Runs newest first, optionally of one status, one keyset page at a time."""
    query = select(Run)
    if status:
        query = query.where(Run.status == status)
    page = _page(conn, query, (Run.id,), key_of=lambda r: (r["id"],), limit=_limit(limit),
                 after=_one(decode_cursor(cursor, 1)), before=_one(decode_cursor(before, 1)), descending=True)
    page["status"] = status
    _add_pending(conn, page, status)
    return page


def _add_pending(conn: Connection, page: dict, status: str | None) -> None:
    """Add the runs waiting in the SQLite intake (not in `runs` yet) that fall within this page."""
    waiting = [r for r in pending_runs(conn) if status in (None, r["status"])]
    if waiting:
        rows = page["rows"]
        high = rows[0]["id"] if rows and page["prev"] else math.inf
        low = rows[-1]["id"] if rows and page["next"] else -math.inf
        page["rows"] = sorted(rows + [r for r in waiting if low < r["id"] < high], key=lambda r: r["id"],
                              reverse=True)


def _one(values):
    return values if values is None else _ints(values)


def _ints(values: list) -> list[int]:
    if not all(isinstance(v, int) for v in values):
        raise BadCursor("this page link is not valid any more; start from the first page")
    return values


def run_detail(conn: Connection, run_id: int) -> dict | None:
    """A run's row with its options, the runs it relates to, and whether its file is still kept."""
    row = conn.execute(select(Run).where(Run.id == run_id)).first()
    waiting = pending_runs(conn, [run_id]) if row is None else []
    if row is None and not waiting:
        return None
    run = dict(row._mapping) if row is not None else waiting[0]
    run["options_parsed"] = asdict(Options.from_json(run["options"]))
    run["retried_by"] = [r for (r,) in conn.execute(select(Run.id).where(Run.retry_of_id == run_id)
                                                      .order_by(Run.id))]
    run["loaded"] = run["inserted"] + run["updated"]
    return run


def run_status(conn: Connection, run_ids: list[int]) -> list[dict]:
    """The status and counts of a few runs, for live pages."""
    if not run_ids:
        return []
    rows = conn.execute(select(Run.id, Run.status, Run.input_records, Run.inserted, Run.updated, Run.rejected,
                               Run.skipped, Run.error, Run.started_at, Run.finished_at)
                        .where(Run.id.in_(run_ids[:100])))
    found = [dict(r._mapping) for r in rows]
    missing = sorted(set(run_ids[:100]) - {r["id"] for r in found})
    columns = ("id", "status", "input_records", "inserted", "updated", "rejected", "skipped", "error",
               "started_at", "finished_at")
    return found + [{k: r[k] for k in columns} for r in (pending_runs(conn, missing) if missing else [])]


def run_lineage(conn: Connection, run_id: int, *, cursor: str | None = None, limit: int | None = None) -> dict:
    """The lineage entries a run wrote, in file order, one keyset page at a time."""
    after = decode_cursor(cursor, 2)
    after = after if after is None else _ints(after)
    query = select(Lineage).where(Lineage.run_id == run_id)
    columns = (func.coalesce(Lineage.pos, 0), Lineage.id)
    limit = _limit(limit)
    if after is not None:
        query = query.where(tuple_(*columns) > tuple_(int(after[0]), int(after[1])))
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(*columns).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": rows, "limit": limit,
            "next": encode_cursor((rows[-1]["pos"] or 0, rows[-1]["id"])) if more else None}


# --- target ---------------------------------------------------------------------------------------

# A prefix that matches at least this many rows is common enough that walking the sort's index and
# skipping non-matching rows finds a page sooner than sorting every match.
DENSE_PREFIX = 5000


def _is_dense(conn: Connection, condition) -> bool:
    """Whether a prefix matches DENSE_PREFIX rows or more (a capped count over its index range)."""
    capped = select(Target.key).where(condition).limit(DENSE_PREFIX).subquery()
    return conn.execute(select(func.count()).select_from(capped)).scalar() >= DENSE_PREFIX


def _target_query(conn: Connection, key_prefix: str | None, name_prefix: str | None, sort: str):
    query = select(Target.key, Target.name, Target.value, Target.ts, Target.updated_at, Target.run_id)
    if not (storable(key_prefix) and storable(name_prefix)):
        return query.where(false())
    leading = TARGET_SORTS[sort][0]
    for column, prefix in ((Target.key, key_prefix), (Target.name, name_prefix)):
        if not prefix:
            continue
        condition = prefix_range(column, prefix)
        if column is not leading and conn.dialect.name == "sqlite" and _is_dense(conn, condition):
            # SQLite's planner cannot tell a common prefix from a rare one and would sort every
            # match; a unary + keeps it from using this column's index, so it walks the sort's.
            condition = prefix_range(literal_column(f"+target.{column.key}", type_=column.type), prefix)
        query = query.where(condition)
    return query


def _target_key(sort: str):
    names = {"key": ("key",), "ts": ("ts", "key"), "value": ("value", "key"), "updated": ("updated_at", "key"),
             "name": ("name", "key")}[sort]
    return lambda row: tuple(row[n] for n in names)


def _check_target_cursor(values, sort: str):
    if values is None:
        return None
    for value, column in zip(values, TARGET_SORTS[sort]):
        wanted = (int, float) if column is Target.value else str
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise BadCursor("this page link is not valid any more; start from the first page")
    return values


def target_page(conn: Connection, *, key_prefix: str | None = None, name_prefix: str | None = None,
                sort: str = "key", descending: bool = False, cursor: str | None = None, before: str | None = None,
                last: bool = False, limit: int | None = None) -> dict:
    """A keyset page of the target table, filtered by key and name prefix, in the order of an index."""
    sort = sort if sort in TARGET_SORTS else "key"
    size = len(TARGET_SORTS[sort])
    page = _page(conn, _target_query(conn, key_prefix, name_prefix, sort), TARGET_SORTS[sort], key_of=_target_key(sort),
                 limit=_limit(limit), after=_check_target_cursor(decode_cursor(cursor, size), sort),
                 before=_check_target_cursor(decode_cursor(before, size), sort), last=last, descending=descending)
    page.update(sort=sort, descending=descending, key_prefix=key_prefix or "", name_prefix=name_prefix or "")
    return page


def iter_target(conn: Connection, *, key_prefix: str | None = None, name_prefix: str | None = None,
                sort: str = "key", descending: bool = False, batch: int = 5000) -> Iterator[dict]:
    """Every row of a target view in its order, read in keyset batches (for streamed exports)."""
    sort = sort if sort in TARGET_SORTS else "key"
    columns, key_of = TARGET_SORTS[sort], _target_key(sort)
    sort_key = tuple_(*columns) if len(columns) > 1 else columns[0]
    base = _target_query(conn, key_prefix, name_prefix, sort)
    after = None
    while True:
        query = base
        if after is not None:
            bound = tuple_(*after) if len(columns) > 1 else after[0]
            query = query.where(sort_key < bound if descending else sort_key > bound)
        query = query.order_by(*[c.desc() if descending else c.asc() for c in columns]).limit(batch)
        rows = [dict(r._mapping) for r in conn.execute(query)]
        yield from rows
        if len(rows) < batch:
            return
        after = key_of(rows[-1])


def target_row(conn: Connection, key: str) -> dict | None:
    """The target row of a key, or None."""
    if not storable(key):
        return None
    row = conn.execute(select(Target).where(Target.key == key)).first()
    return dict(row._mapping) if row else None


# --- lineage --------------------------------------------------------------------------------------

def _newest_first(conn: Connection, query, id_column, cursor: str | None, limit: int | None) -> dict:
    """A keyset page of `query`, newest id first: its rows, limit, next cursor and whether it is the first."""
    after = _one(decode_cursor(cursor, 1))
    if after is not None:
        query = query.where(id_column < after[0])
    limit = _limit(limit)
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(id_column.desc()).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": rows, "limit": limit, "next": encode_cursor((rows[-1]["id"],)) if more else None,
            "first_page": after is None}


def lineage_of_key(conn: Connection, key: str, *, cursor: str | None = None, limit: int | None = None) -> dict:
    """A key's current target row and its timeline across runs, newest first, one keyset page at a time."""
    query = select(Lineage).where(Lineage.key == key if storable(key) else false())
    return {"key": key, "target": target_row(conn, key), **_newest_first(conn, query, Lineage.id, cursor, limit)}


def similar_keys(conn: Connection, key: str, limit: int = 10) -> list[str]:
    """Target keys that start like `key` (for a key that was never seen)."""
    stem = key[: max(1, len(key) - 2)]
    if not storable(stem):
        return []
    rows = conn.execute(select(Target.key).where(prefix_range(Target.key, stem)).order_by(Target.key).limit(limit))
    return [k for (k,) in rows]


# --- dead letters ---------------------------------------------------------------------------------

def _dead_letter_filter(query, *, error: str | None, status: str | None, run_id: int | None):
    if error:
        query = query.where(DeadLetter.error == error)
    if status:
        query = query.where(DeadLetter.status == status)
    if run_id is not None:
        query = query.where(DeadLetter.run_id == run_id)
    return query


def dead_letters_page(conn: Connection, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, cursor: str | None = None, before: str | None = None,
                      limit: int | None = None) -> dict:
    """Dead letters newest first, filtered by error code, status and run, one keyset page at a time."""
    query = _dead_letter_filter(
        select(DeadLetter.id, DeadLetter.run_id, DeadLetter.last_run_id, DeadLetter.pos, DeadLetter.line,
               DeadLetter.key, DeadLetter.error, DeadLetter.detail, DeadLetter.raw, DeadLetter.status,
               DeadLetter.created_at, DeadLetter.updated_at, DeadLetter.attempts, DeadLetter.sightings,
               DeadLetter.outcome, DeadLetter.resolved_run_id, DeadLetter.reason),
        error=error, status=status, run_id=run_id)
    page = _page(conn, query, (DeadLetter.id,), key_of=lambda r: (r["id"],), limit=_limit(limit),
                 after=_one(decode_cursor(cursor, 1)), before=_one(decode_cursor(before, 1)), descending=True)
    page.update(error=error, status=status, run_id=run_id)
    return page


def dead_letter_counts(conn: Connection, *, status: str | None = None, run_id: int | None = None) -> list[dict]:
    """How many dead letters there are per error code (within a status and run)."""
    query = _dead_letter_filter(select(DeadLetter.error, func.count().label("n")), error=None, status=status,
                                run_id=run_id).group_by(DeadLetter.error).order_by(DeadLetter.error)
    return [{"error": e, "n": n} for e, n in conn.execute(query)]


def dead_letter_tallies(conn: Connection, *, run_id: int | None = None) -> dict:
    """Dead letters per error code (any status) and per status, of one run or of all: cheap enough for a page.

    Both are counted over the (error, id) and (status, id) indexes alone; a count per error code
    within a status reads every row of that status, which at 50k dead letters costs more than a page.
    """
    by_status = _dead_letter_filter(select(DeadLetter.status, func.count().label("n")), error=None, status=None,
                                    run_id=run_id).group_by(DeadLetter.status)
    statuses = dict(conn.execute(by_status).all())
    return {"errors": dead_letter_counts(conn, run_id=run_id),
            "statuses": [{"status": s, "n": statuses.get(s, 0)} for s in DEAD_LETTER_STATUSES],
            "total": sum(statuses.values())}


def dead_letter_count(conn: Connection, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None) -> int:
    """How many dead letters a filter selects (what a bulk action would touch)."""
    query = _dead_letter_filter(select(func.count()).select_from(DeadLetter), error=error, status=status,
                                run_id=run_id)
    return conn.execute(query).scalar()


def dead_letter_ids(conn: Connection, *, error: str | None = None, status: str | None = None,
                    run_id: int | None = None) -> list[int]:
    """The ids of every dead letter a filter selects, oldest first (for bulk actions)."""
    query = _dead_letter_filter(select(DeadLetter.id), error=error, status=status, run_id=run_id)
    return [i for (i,) in conn.execute(query.order_by(DeadLetter.id))]


def iter_dead_letters(conn: Connection, *, error: str | None = None, status: str | None = None,
                      run_id: int | None = None, batch: int = 2000) -> Iterator[dict]:
    """Every dead letter a filter selects, newest first, in keyset batches (for streamed exports)."""
    cursor = None
    while True:
        page = dead_letters_page(conn, error=error, status=status, run_id=run_id, cursor=cursor, limit=batch)
        yield from page["rows"]
        cursor = page["next"]
        if cursor is None:
            return


def dead_letter(conn: Connection, dl_id: int) -> dict | None:
    """One dead letter with its history: every lineage entry about it, and what its retries did."""
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


# --- watermarks -----------------------------------------------------------------------------------

def watermark_page(conn: Connection, *, cursor: str | None = None, limit: int | None = None,
                   name: str = WATERMARK) -> dict:
    """The watermark's current value and its history, newest first, one keyset page at a time."""
    row = conn.execute(select(Watermark).where(Watermark.name == name)).first()
    query = select(WatermarkHistory).where(WatermarkHistory.name == name)
    return {"name": name, "value": row.value if row else None, "updated_at": row.updated_at if row else None,
            **_newest_first(conn, query, WatermarkHistory.id, cursor, limit)}
