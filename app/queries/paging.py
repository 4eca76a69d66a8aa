"""Keyset pages: opaque cursors, index-served prefix ranges and the reader that walks an index either way."""
import base64
import binascii
import json
import math
import re

from sqlalchemy import and_, tuple_
from sqlalchemy.engine import Connection

PAGE = 50
MAX_PAGE = 500


class BadCursor(ValueError):
    """A cursor that this code did not write (or for another sort)."""


# Text no row can hold (NUL, lone surrogates: the pipeline rejects them and PostgreSQL refuses
# them outright); a search or cursor holding it matches nothing instead of reaching the database.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INT64 = 2 ** 63
STALE = "this page link is not valid any more; start from the first page"


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
        raise BadCursor(STALE) from None
    if not isinstance(values, list) or len(values) != size or not all(map(_valid_cursor_value, values)):
        raise BadCursor(STALE)
    return values


def page_limit(limit: int | None) -> int:
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


def nullable_lead(columns) -> bool:
    return len(columns) > 1 and bool(columns[0].nullable)


def read_ordered(conn: Connection, query, columns, *, forward: bool, after, n: int) -> list[dict]:
    """Up to `n` rows of `query` past `after` in the order of `columns`, read forward or backward.

    An optional (nullable) leading column puts its NULL rows after every value when ascending, and
    first when descending, on both databases: two index ranges, the values then the NULLs by key,
    each read with a plain keyset condition (a row comparison with NULL would match nothing).
    """
    def ordered(q, cols):
        return q.order_by(*[c.asc() if forward else c.desc() for c in cols])

    def rows(q):
        return [dict(r._mapping) for r in conn.execute(q)]

    if not nullable_lead(columns):
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


def keyset_page(conn: Connection, query, columns, *, key_of, limit: int, after=None, before=None, last=False,
          descending=False) -> dict:
    """One keyset page of `query` ordered by `columns`: rows, and cursors for the next and previous pages.

    `after` continues forwards, `before` goes back a page and `last` is the final page; the last
    two read the index backwards, so the last page costs what the first does.
    """
    backwards = bool(before is not None or last)
    forward = descending == backwards
    rows = read_ordered(conn, query, columns, forward=forward, after=after if after is not None else before, n=limit + 1)
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



def one_int(values):
    return values if values is None else ints(values)


def ints(values: list) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise BadCursor(STALE)
    return values


def newest_first(conn: Connection, query, id_column, cursor: str | None, limit: int | None) -> dict:
    """A keyset page of `query`, newest id first: its rows, limit, next cursor and whether it is the first."""
    after = one_int(decode_cursor(cursor, 1))
    if after is not None:
        query = query.where(id_column < after[0])
    limit = page_limit(limit)
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(id_column.desc()).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": rows, "limit": limit, "next": encode_cursor((rows[-1]["id"],)) if more else None,
            "first_page": after is None}
