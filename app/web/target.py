"""The target table: keyset pages, prefix search, sorts, and streamed CSV / JSON export of the view."""
import csv
import io
import json

from flask import Blueprint, Response, render_template, request, stream_with_context

from .. import queries
from ..extensions import db
from .filters import TargetView, lenient

bp = Blueprint("target", __name__, url_prefix="/target")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = ("key", "name", "value", "ts", "updated_at", "run_id")


def view_args() -> dict:
    """The target view a request asks for: prefixes, sort and direction."""
    return lenient(TargetView, {**request.args.to_dict(), "order": "desc" if request.args.get("desc") == "1"
                                else "asc"})


@bp.get("")
def index():
    """One page of the target table."""
    view = view_args()
    with db.engine.connect() as conn:
        page = queries.target_page(conn, **view, cursor=request.args.get("cursor"),
                                   before=request.args.get("before"), last=request.args.get("last") == "1")
    return render_template("target/index.html", page=page, sorts=list(queries.TARGET_SORTS))


def csv_cell(value):
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading quote; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    return value


def _stream(rows_of, fmt: str, columns=COLUMNS):
    """Yield the rows of a view as CSV or JSON, a chunk at a time, on a connection of its own."""
    with db.engine.connect() as conn:
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            for i, row in enumerate(rows_of(conn), start=1):
                writer.writerow([csv_cell(row[c]) for c in columns])
                if i % 1000 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()
        else:
            yield "["
            for i, row in enumerate(rows_of(conn)):
                yield ("," if i else "") + "\n" + json.dumps({c: row[c] for c in columns}, ensure_ascii=False)
            yield "\n]\n"


def export_response(rows_of, fmt: str, name: str, columns=COLUMNS) -> Response:
    """A streamed download of a view as CSV or JSON."""
    mimetype = "text/csv" if fmt == "csv" else "application/json"
    return Response(stream_with_context(_stream(rows_of, fmt, columns)), mimetype=f"{mimetype}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})


@bp.get("/export.<any(csv, json):fmt>")
def export(fmt: str):
    """The whole current view (search and sort) as CSV or JSON, streamed."""
    view = view_args()
    return export_response(lambda conn: queries.iter_target(conn, **view), fmt, "sluice-target")
