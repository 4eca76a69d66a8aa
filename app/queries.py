"""The read side for pages and API: headline numbers, keyset pages, lineage of a key. No Flask here.

Every function takes a Connection first and returns plain dicts and lists, so an HTML page and a
JSON answer render the same data. Pages are keyset pages: fetch `limit + 1` rows past an opaque
cursor (the last row's sort key plus its primary key); never OFFSET, never a full count.

Every function that reads one dataset's data takes `dataset`: a Dataset, its name, or None for the
default dataset `events` (resolved with `registry.resolve`, which raises DatasetError("not_found")).
"""
import base64
import binascii
import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict
from types import SimpleNamespace

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Integer,
    and_,
    false,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection

from .datasets.registry import DEFAULT, Dataset, list_datasets, resolve
from .intake import pending_runs
from .models import DeadLetter, Lineage, Run, Target, Watermark, WatermarkHistory
from .pipeline.run import Options, warnings_of
from .pipeline.watermark import NAME as WATERMARK  # noqa: F401  (the name of events' watermark, for callers)

PAGE = 50
MAX_PAGE = 500
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
DEAD_LETTER_STATUSES = ("open", "resolved", "discarded")
# Codes of a record that could not be read as an object at all, before any field is looked at.
READER_CODES = ("not_an_object", "malformed_json", "record_too_large")
VERSION_CODES = ("missing_timestamp", "invalid_timestamp", "future_timestamp")
# The error codes of `events` (see `error_codes` for any dataset's).
ERROR_CODES = ("not_an_object", "malformed_json", "record_too_large", "missing_key", "invalid_key", "missing_name", "invalid_name",
               "missing_value", "invalid_value", "missing_timestamp", "invalid_timestamp", "future_timestamp")
# The sorts of `events`: sort name -> the columns of the index that serves it (the key last, to make it
# unique). `target_sorts(dataset)` gives any dataset's.
_T = Target.__table__.c
TARGET_SORTS = {
    "key": (_T.key,),
    "ts": (_T.ts, _T.key),
    "value": (_T.value, _T.key),
    "updated": (_T.updated_at, _T.key),
    "name": (_T.name, _T.key),
}


class BadCursor(ValueError):
    """A cursor that this code did not write (or for another sort)."""


class UnknownField(ValueError):
    """A search names a field of the dataset that is neither its key nor searchable."""


# Text no row can hold (NUL, lone surrogates: the pipeline rejects them and PostgreSQL refuses
# them outright); a search or cursor holding it matches nothing instead of reaching the database.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INT64 = 2 ** 63
_STALE = "this page link is not valid any more; start from the first page"


def storable(text: str | None) -> bool:
    """Whether a row could hold this text (no NUL, no unpaired surrogate)."""
    return text is None or not _UNSTORABLE.search(text)


def _valid_cursor_value(value) -> bool:
    if value is None or isinstance(value, bool):
        return True  # a NULL of an optional sort field, a boolean field's value: checked per column later
    if isinstance(value, str):
        return storable(value)
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
        raise BadCursor(_STALE) from None
    if not isinstance(values, list) or len(values) != size or not all(map(_valid_cursor_value, values)):
        raise BadCursor(_STALE)
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


def _nullable_lead(columns) -> bool:
    return len(columns) > 1 and bool(columns[0].nullable)


def _read(conn: Connection, query, columns, *, forward: bool, after, n: int) -> list[dict]:
    """Up to `n` rows of `query` past `after` in the order of `columns`, read forward or backward.

    An optional (nullable) leading column puts its NULL rows after every value when ascending, and
    first when descending, on both databases: two index ranges, the values then the NULLs by key,
    each read with a plain keyset condition (a row comparison with NULL would match nothing).
    """
    def ordered(q, cols):
        return q.order_by(*[c.asc() if forward else c.desc() for c in cols])

    def rows(q):
        return [dict(r._mapping) for r in conn.execute(q)]

    if not _nullable_lead(columns):
        sort_key = tuple_(*columns) if len(columns) > 1 else columns[0]
        if after is not None:
            bound = tuple_(*after) if len(columns) > 1 else after[0]
            query = query.where(sort_key > bound if forward else sort_key < bound)
        return rows(ordered(query, columns).limit(n))
    lead, key = columns
    values = (query.where(lead.is_not(None)), columns)
    nulls = (query.where(lead.is_(None)), (key,))
    pair = tuple_(lead, key)
    if after is None:
        segments = [(values, None), (nulls, None)] if forward else [(nulls, None), (values, None)]
    elif after[0] is None:
        nulls_after = key > after[1] if forward else key < after[1]
        segments = [(nulls, nulls_after)] if forward else [(nulls, nulls_after), (values, None)]
    else:
        values_after = pair > tuple_(*after) if forward else pair < tuple_(*after)
        segments = [(values, values_after), (nulls, None)] if forward else [(values, values_after)]
    found: list[dict] = []
    for (q, cols), condition in segments:
        if condition is not None:
            q = q.where(condition)
        found += rows(ordered(q, cols).limit(n - len(found)))
        if len(found) >= n:
            break
    return found


def _page(conn: Connection, query, columns, *, key_of, limit: int, after=None, before=None, last=False,
          descending=False) -> dict:
    """One keyset page of `query` ordered by `columns`: rows, and cursors for the next and previous pages.

    `after` continues forwards, `before` goes back a page and `last` is the final page; the last
    two read the index backwards, so the last page costs what the first does.
    """
    backwards = bool(before is not None or last)
    forward = descending == backwards
    rows = _read(conn, query, columns, forward=forward, after=after if after is not None else before, n=limit + 1)
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


# --- datasets, headline numbers and runs ------------------------------------------------------------

def _rows_loaded(conn: Connection, name: str | None = None) -> dict[str, int]:
    # Rows are only ever added to a target by applied runs, so their inserted counts add up to the
    # row count: an aggregate over the small runs table instead of counting millions of rows.
    query = select(Run.dataset, func.coalesce(func.sum(Run.inserted), 0)).where(Run.applied_seq.is_not(None))
    if name is not None:
        query = query.where(Run.dataset == name)
    return {d: int(n) for d, n in conn.execute(query.group_by(Run.dataset))}


def _open_dead_letters(conn: Connection, name: str) -> int:
    return conn.execute(select(func.count()).select_from(DeadLetter)
                        .where(DeadLetter.dataset == name, DeadLetter.status == "open")).scalar()


def overview(conn: Connection, dataset=None) -> dict:
    """A dataset's headline numbers (target rows, open dead letters, watermark) and its latest runs."""
    ds = resolve(conn, dataset)
    watermark = conn.execute(select(Watermark.value).where(Watermark.name == ds.watermark)).scalar()
    return {"dataset": ds.name, "target_rows": _rows_loaded(conn, ds.name).get(ds.name, 0),
            "open_dead_letters": _open_dead_letters(conn, ds.name), "watermark": watermark,
            "latest_runs": latest_runs(conn, ds)}


def latest_runs(conn: Connection, dataset=None, *, every: bool = False, limit: int = 10) -> list[dict]:
    """The newest runs of a dataset (or of every dataset), those waiting in the intake included."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    name = None if every else resolve(conn, dataset).name
    if name is not None:
        query = query.where(Run.dataset == name)
    rows = [dict(r._mapping) for r in conn.execute(query)]
    waiting = [r for r in pending_runs(conn) if name is None or r.get("dataset", DEFAULT) == name]
    return sorted(rows + waiting, key=lambda r: r["id"], reverse=True)[:limit]


def datasets_overview(conn: Connection, *, archived: bool = True) -> list[dict]:
    """Every dataset (events first) with its row count, open dead letters and watermark: a few cheap queries."""
    datasets = [d for d in list_datasets(conn) if archived or d.archived_at is None]
    loaded = _rows_loaded(conn)
    marks = dict(conn.execute(select(Watermark.name, Watermark.value)
                              .where(Watermark.name.in_([d.watermark for d in datasets]))).all()) if datasets else {}
    return [{"dataset": d, "name": d.name, "title": d.title, "archived_at": d.archived_at,
             "target_rows": loaded.get(d.name, 0), "open_dead_letters": _open_dead_letters(conn, d.name),
             "watermark": marks.get(d.watermark)} for d in datasets]


def runs_page(conn: Connection, dataset=None, *, status: str | None = None, cursor: str | None = None,
              before: str | None = None, limit: int | None = None) -> dict:
    """A dataset's runs newest first, optionally of one status, one keyset page at a time."""
    ds = resolve(conn, dataset)
    query = select(Run).where(Run.dataset == ds.name)
    if status:
        query = query.where(Run.status == status)
    page = _page(conn, query, (Run.id,), key_of=lambda r: (r["id"],), limit=_limit(limit),
                 after=_one(decode_cursor(cursor, 1)), before=_one(decode_cursor(before, 1)), descending=True)
    page.update(status=status, dataset=ds.name)
    _add_pending(conn, page, status, ds.name)
    return page


def _add_pending(conn: Connection, page: dict, status: str | None, name: str) -> None:
    """Add the runs waiting in the SQLite intake (not in `runs` yet) that fall within this page."""
    waiting = [r for r in pending_runs(conn) if status in (None, r["status"]) and r.get("dataset", DEFAULT) == name]
    if waiting:
        rows = page["rows"]
        high = rows[0]["id"] if rows and page["prev"] else math.inf
        low = rows[-1]["id"] if rows and page["next"] else -math.inf
        page["rows"] = sorted(rows + [r for r in waiting if low < r["id"] < high], key=lambda r: r["id"],
                              reverse=True)


def _one(values):
    return values if values is None else _ints(values)


def _ints(values: list) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise BadCursor(_STALE)
    return values


def run_detail(conn: Connection, run_id: int) -> dict | None:
    """A run's row (its dataset and shape version too) with its options, related runs (retries, backfills)."""
    row = conn.execute(select(Run).where(Run.id == run_id)).first()
    waiting = pending_runs(conn, [run_id]) if row is None else []
    if row is None and not waiting:
        return None
    run = dict(row._mapping) if row is not None else waiting[0]
    run.setdefault("dataset", DEFAULT)
    run.setdefault("shape_version", None)
    run["options_parsed"] = asdict(Options.from_json(run["options"]))
    later = conn.execute(select(Run.id, Run.options).where(Run.retry_of_id == run_id).order_by(Run.id)).all()
    run["retried_by"] = [r.id for r in later]  # retries and backfills alike (both are kind `retry`)
    run["backfilled_by"] = [r.id for r in later if Options.from_json(r.options).backfill_of == run_id]
    run["loaded"] = run["inserted"] + run["updated"]
    return run


_STATUS_COLUMNS = ("id", "status", "input_records", "inserted", "updated", "rejected", "skipped", "error",
                   "started_at", "finished_at")


def run_status(conn: Connection, run_ids: list[int]) -> list[dict]:
    """The status, counts and warnings of a few runs, for live pages."""
    wanted = run_ids[:100]
    if not wanted:
        return []
    rows = [dict(r._mapping) for r in conn.execute(select(Run).where(Run.id.in_(wanted)))]
    missing = sorted(set(wanted) - {r["id"] for r in rows})
    rows += pending_runs(conn, missing) if missing else []
    return [{**{k: r[k] for k in _STATUS_COLUMNS}, "warnings": warnings_of(SimpleNamespace(**r))} for r in rows]


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


def target_columns(dataset: Dataset) -> list[dict]:
    """A dataset's target columns in table order: row key, field, role, type, sort name, searchable, required."""
    shape, sorts = dataset.shape, target_sorts(dataset)
    sort_of = {cols[0].key: name for name, cols in reversed(list(sorts.items()))}
    out = [{"name": dataset.key_col.key, "field": shape.key, "role": "key", "type": "string", "required": True,
            "searchable": True}]
    for field, col in zip(shape.fields, dataset.payload_cols):
        out.append({"name": col.key, "field": field.name, "role": "payload", "type": field.type,
                    "required": field.required, "searchable": field.searchable})
    out += [{"name": dataset.version_col.key, "field": shape.version, "role": "version", "type": "timestamp",
             "required": True, "searchable": False},
            {"name": dataset.updated_col.key, "field": None, "role": "updated", "type": "timestamp",
             "required": True, "searchable": False},
            {"name": dataset.run_col.key, "field": None, "role": "run", "type": "integer", "required": False,
             "searchable": False}]
    for column in out:
        column["sort"] = sort_of.get(column["name"])
    return out


def target_sorts(dataset: Dataset) -> dict[str, tuple]:
    """A dataset's sorts: name -> the columns of the index that serves it (the key column last).

    `key`, the version field's name, each sortable field's name and `updated` (the time a row was
    last written; a field of that name wins, and the time is then `sluice_updated_at`). The key
    field's name and `version` are accepted too, as other names of those two sorts.
    """
    if dataset.name == DEFAULT and dataset.table is Target.__table__:
        return TARGET_SORTS
    key = dataset.key_col
    sorts = {"key": (key,), dataset.shape.version: (dataset.version_col, key)}
    for field, col in zip(dataset.shape.fields, dataset.payload_cols):
        if field.sortable:
            sorts.setdefault(field.name, (col, key))  # `key` stays the key's (a payload field `key` is not sortable)
    sorts.setdefault("updated", (dataset.updated_col, key))
    sorts.setdefault(dataset.updated_col.key, (dataset.updated_col, key))
    sorts.setdefault(dataset.shape.key, (key,))
    sorts.setdefault("version", (dataset.version_col, key))
    return sorts


def searchable_fields(dataset: Dataset) -> list[str]:
    """The fields a target view can search by prefix: the key field, then each searchable field."""
    return [dataset.shape.key] + [f.name for f in dataset.shape.fields if f.searchable]


def _search_columns(dataset: Dataset) -> dict:
    columns = {dataset.shape.key: dataset.key_col}
    for field, col in zip(dataset.shape.fields, dataset.payload_cols):
        if field.searchable:
            columns[field.name] = col
    return columns


def target_search(dataset: Dataset, search: dict | None = None, key_prefix: str | None = None,
                  name_prefix: str | None = None) -> dict[str, str]:
    """One `{field: prefix}` of a view: `key_prefix` is the key field's, `name_prefix` the `name` field's.

    Empty prefixes are dropped; a field that is neither the key nor searchable raises UnknownField.
    """
    merged = dict(search or {})
    if key_prefix:
        merged[dataset.shape.key] = key_prefix
    if name_prefix:
        merged["name"] = name_prefix
    merged = {f: p for f, p in merged.items() if p}
    allowed = _search_columns(dataset)
    for field in merged:
        if field not in allowed:
            raise UnknownField(f"{field!r} is not a searchable field of the dataset {dataset.name!r}; "
                               f"search by {', '.join(allowed)}")
    return merged


def _is_dense(conn: Connection, dataset: Dataset, condition) -> bool:
    """Whether a prefix matches DENSE_PREFIX rows or more (a capped count over its index range)."""
    capped = select(dataset.key_col).where(condition).limit(DENSE_PREFIX).subquery()
    return conn.execute(select(func.count()).select_from(capped)).scalar() >= DENSE_PREFIX


def _unindexed(conn: Connection, column):
    """`column` written as `+table.column`: SQLite will not use an index of it."""
    quote = conn.dialect.identifier_preparer
    return literal_column(f"+{quote.format_table(column.table)}.{quote.quote(column.name)}", type_=column.type)


def _target_query(conn: Connection, dataset: Dataset, search: dict[str, str], sort: str):
    table = dataset.table
    query = select(*table.columns)
    if not all(storable(p) for p in search.values()):
        return query.where(false())
    leading = target_sorts(dataset)[sort][0]
    columns = _search_columns(dataset)
    for field, prefix in search.items():
        column = columns[field]
        condition = prefix_range(column, prefix)
        if column is not leading and conn.dialect.name == "sqlite" and _is_dense(conn, dataset, condition):
            # SQLite's planner cannot tell a common prefix from a rare one and would sort every
            # match; a unary + keeps it from using this column's index, so it walks the sort's.
            condition = prefix_range(_unindexed(conn, column), prefix)
        query = query.where(condition)
    return query


def _target_key(columns):
    names = tuple(c.key for c in columns)
    return lambda row: tuple(row[n] for n in names)


def _cursor_type(column):
    kind = column.type
    if isinstance(kind, Boolean):
        return (bool,)
    if isinstance(kind, (Integer, BigInteger)):
        return (int,)
    if isinstance(kind, Float):
        return (int, float)
    return (str,)


def _check_target_cursor(values, columns):
    if values is None:
        return None
    for value, column in zip(values, columns):
        if value is None and _nullable_lead(columns) and column is columns[0]:
            continue
        wanted = _cursor_type(column)
        if value is None or (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            raise BadCursor(_STALE)
    return values


def _view(conn: Connection, dataset, search, key_prefix, name_prefix, sort):
    ds = resolve(conn, dataset)
    sorts = target_sorts(ds)
    sort = sort if sort in sorts else "key"
    return ds, target_search(ds, search, key_prefix, name_prefix), sort, sorts[sort]


def target_page(conn: Connection, dataset=None, *, search: dict[str, str] | None = None,
                key_prefix: str | None = None, name_prefix: str | None = None, sort: str = "key",
                descending: bool = False, cursor: str | None = None, before: str | None = None,
                last: bool = False, limit: int | None = None) -> dict:
    """A keyset page of a dataset's target table, searched by field prefixes, in the order of an index.

    `search` maps the key field or a searchable field to a prefix (`key_prefix` and `name_prefix`
    are the key's and `name`'s, as for events); an unknown sort is the key's.
    """
    ds, search, sort, columns = _view(conn, dataset, search, key_prefix, name_prefix, sort)
    size = len(columns)
    page = _page(conn, _target_query(conn, ds, search, sort), columns, key_of=_target_key(columns),
                 limit=_limit(limit), after=_check_target_cursor(decode_cursor(cursor, size), columns),
                 before=_check_target_cursor(decode_cursor(before, size), columns), last=last,
                 descending=descending)
    page.update(dataset=ds.name, sort=sort, descending=descending, search=search,
                key_prefix=search.get(ds.shape.key, ""), name_prefix=search.get("name", ""),
                columns=target_columns(ds))
    return page


def iter_target(conn: Connection, dataset=None, *, search: dict[str, str] | None = None,
                key_prefix: str | None = None, name_prefix: str | None = None, sort: str = "key",
                descending: bool = False, batch: int = 5000) -> Iterator[dict]:
    """Every row of a target view in its order, read in keyset batches (for streamed exports)."""
    ds, search, sort, columns = _view(conn, dataset, search, key_prefix, name_prefix, sort)
    key_of = _target_key(columns)
    base = _target_query(conn, ds, search, sort)
    after = None
    while True:
        rows = _read(conn, base, columns, forward=not descending, after=after, n=batch)
        yield from rows
        if len(rows) < batch:
            return
        after = key_of(rows[-1])


def target_row(conn: Connection, key: str, dataset=None) -> dict | None:
    """The target row of a key in a dataset, or None."""
    ds = resolve(conn, dataset)
    if not storable(key):
        return None
    row = conn.execute(select(*ds.table.columns).where(ds.key_col == key)).first()
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


def lineage_of_key(conn: Connection, key: str, dataset=None, *, cursor: str | None = None,
                   limit: int | None = None) -> dict:
    """A key's current target row and its timeline across a dataset's runs, newest first, a keyset page at a time."""
    ds = resolve(conn, dataset)
    query = select(Lineage).where(Lineage.dataset == ds.name, Lineage.key == key if storable(key) else false())
    return {"key": key, "dataset": ds.name, "target": target_row(conn, key, ds),
            **_newest_first(conn, query, Lineage.id, cursor, limit)}


def similar_keys(conn: Connection, key: str, dataset=None, limit: int = 10) -> list[str]:
    """Target keys of a dataset that start like `key` (for a key that was never seen)."""
    ds = resolve(conn, dataset)
    stem = key[: max(1, len(key) - 2)]
    if not storable(stem):
        return []
    rows = conn.execute(select(ds.key_col).where(prefix_range(ds.key_col, stem)).order_by(ds.key_col).limit(limit))
    return [k for (k,) in rows]


# --- dead letters ---------------------------------------------------------------------------------

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
    page = _page(conn, query, (DeadLetter.id,), key_of=lambda r: (r["id"],), limit=_limit(limit),
                 after=_one(decode_cursor(cursor, 1)), before=_one(decode_cursor(before, 1)), descending=True)
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


# --- watermarks -----------------------------------------------------------------------------------

def watermark_page(conn: Connection, dataset=None, *, cursor: str | None = None, limit: int | None = None,
                   name: str | None = None) -> dict:
    """A dataset's watermark (or the one called `name`): its value and history, newest first, a keyset page at a time."""
    ds = resolve(conn, dataset) if name is None or dataset is not None else None
    name = ds.watermark if name is None else name
    row = conn.execute(select(Watermark).where(Watermark.name == name)).first()
    dataset_name = ds.name if ds is not None else (row.dataset if row is not None else None)
    query = select(WatermarkHistory).where(WatermarkHistory.name == name)
    return {"name": name, "dataset": dataset_name, "value": row.value if row else None,
            "updated_at": row.updated_at if row else None,
            **_newest_first(conn, query, WatermarkHistory.id, cursor, limit)}
