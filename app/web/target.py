"""A dataset's target table: its own columns, keyset pages, prefix searches, sorts, streamed CSV / JSON export."""
import csv
import io
import itertools
import json

from flask import Blueprint, Response, g, render_template, request, stream_with_context

from .. import queries
from ..extensions import db
from .auth import VIEWER, requires
from .filters import TargetView, lenient, search_param

bp = Blueprint("target", __name__, url_prefix="/target")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = ("key", "name", "value", "ts", "updated_at", "run_id")


def view_args() -> dict:
    """The target view a request asks for, in the request's dataset: searches, sort and direction."""
    return lenient(TargetView, {**request.args.to_dict(), "dataset": g.dataset.name,
                                "order": "desc" if request.args.get("desc") == "1" else "asc"})


@bp.get("")
@requires(VIEWER)
def index():
    """One page of a dataset's target table."""
    view = view_args()
    with db.engine.connect() as conn:
        page = queries.target_page(conn, **view, cursor=request.args.get("cursor"),
                                   before=request.args.get("before"), last=request.args.get("last") == "1")
    return render_template("target/index.html", page=page, search_param=search_param)


def csv_cell(value):
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading quote; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    return value


def _encode(rows, fmt: str, columns):
    """Yield rows as CSV or JSON text, a chunk at a time."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for i, row in enumerate(rows, start=1):
            writer.writerow([csv_cell(row[c]) for c in columns])
            if i % 1000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    else:
        yield "["
        for i, row in enumerate(rows):
            yield ("," if i else "") + "\n" + json.dumps({c: row[c] for c in columns}, ensure_ascii=False)
        yield "\n]\n"


def snapshot_connection():
    """A connection in a read-only transaction that sees one snapshot of the database until it is closed."""
    conn = db.engine.connect()
    if conn.dialect.name == "postgresql":
        # READ COMMITTED, the default, lets each statement see what committed since the one before.
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    # On SQLite (WAL) a read transaction sees one snapshot from its first read until it ends.
    conn.begin()
    return conn


def export_response(rows_of, fmt: str, name: str, columns=COLUMNS) -> Response:
    """A streamed download of a view as CSV or JSON, every batch read from one snapshot.

    `rows_of(conn)` yields the view's rows. Its first batch is read before the response starts, so a
    view that cannot be read answers an error status rather than a 200 cut short.
    """
    conn = snapshot_connection()
    try:
        rows = iter(rows_of(conn))
        first = list(itertools.islice(rows, 1))
    except BaseException:
        conn.close()
        raise
    def body():
        try:
            yield from _encode(itertools.chain(first, rows), fmt, columns)
        finally:
            conn.close()

    mimetype = "text/csv" if fmt == "csv" else "application/json"
    response = Response(stream_with_context(body()), mimetype=f"{mimetype}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})
    response.call_on_close(conn.close)  # also when the body is never read to its end
    return response


@bp.get("/export.<any(csv, json):fmt>")
@requires(VIEWER)
def export(fmt: str):
    """The whole current view (search and sort) as CSV or JSON, streamed, with the dataset's columns."""
    view = view_args()
    ds = view["dataset"]
    name = "sluice-target" if ds.name == queries.DEFAULT else f"sluice-{ds.name}"
    return export_response(lambda conn: queries.iter_target(conn, **view), fmt, name,
                           tuple(c.key for c in ds.table.columns))
