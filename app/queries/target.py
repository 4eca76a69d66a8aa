"""A dataset's target table: its columns, sorts and prefix searches, keyset pages and streamed exports."""
from collections.abc import Iterator

from sqlalchemy import BigInteger, Boolean, Float, Integer, false, func, literal_column, select
from sqlalchemy.engine import Connection

from ..datasets.registry import DEFAULT, Dataset, resolve
from ..models import Target
from .paging import (
    STALE,
    BadCursor,
    decode_cursor,
    keyset_page,
    nullable_lead,
    page_limit,
    prefix_range,
    read_ordered,
    storable,
)


class UnknownField(ValueError):
    """A search names a field of the dataset that is neither its key nor searchable."""


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
        if value is None and nullable_lead(columns) and column is columns[0]:
            continue
        wanted = _cursor_type(column)
        if value is None or (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            raise BadCursor(STALE)
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
    page = keyset_page(conn, _target_query(conn, ds, search, sort), columns, key_of=_target_key(columns),
                 limit=page_limit(limit), after=_check_target_cursor(decode_cursor(cursor, size), columns),
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
        rows = read_ordered(conn, base, columns, forward=not descending, after=after, n=batch)
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
