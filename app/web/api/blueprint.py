"""The API's blueprint, its request parser and the helpers every area's views share.

flask-smorest documents each view from its decorators: `@bp.arguments` parses the query string or the
JSON body with a schema of `schemas.py` (webargs), `@bp.response` names the answer, `@errors(...)` the
error statuses it may answer.
"""
import http

from flask_smorest import Blueprint
from marshmallow import ValidationError
from webargs import core
from webargs.flaskparser import FlaskParser

from ... import queries
from ...datasets.registry import Dataset, ensure_writable
from ...extensions import csrf, db
from ...pipeline import jsontext
from ..filters import current_dataset

JSON_TYPES = ("application/json", "application/merge-patch+json")
MAX_ECHO = 200  # characters of a client's input an error message may repeat


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", ...}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def clip(value, limit: int = MAX_ECHO) -> str:
    """The repr of a client's value, cut to `limit` characters, for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _flatten(messages, prefix: str = ""):
    """(field path, message) pairs of a marshmallow error dict."""
    if isinstance(messages, dict):
        for name, inner in messages.items():
            path = f"{prefix}.{name}" if prefix and name != "_schema" else (prefix or str(name))
            yield from _flatten(inner, path)
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        yield prefix, " ".join(messages)
    elif isinstance(messages, list):
        for inner in messages:
            yield from _flatten(inner, prefix)
    else:
        yield prefix, str(messages)


class Parser(FlaskParser):
    """webargs, answering 400 in the API's error format, and checking a body's type before reading it."""

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req, schema):
        """The JSON object body; `missing` when there is none (no bytes at all); 415 for another type, before
        any read; 400 for bytes that are not a JSON object (white space included)."""
        if not req.content_length and "chunked" not in req.headers.get("Transfer-Encoding", "").lower():
            return core.missing
        if req.mimetype not in JSON_TYPES:
            raise ApiError(415, "unsupported_media_type",
                           "send the body as JSON with Content-Type: application/json")
        data = req.get_data(cache=True)  # bounded by the request limit (MAX_CONTENT_LENGTH): 413 beyond
        try:
            body = jsontext.loads(data.decode("utf-8"))  # any depth: a deep record is a record like any other
        except ValueError as exc:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {str(exc)[:MAX_ECHO]}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return body

    def handle_error(self, error: ValidationError, req, schema, *, error_status_code, error_headers):
        """Say which parameter or field is wrong, in one line that never repeats the whole input."""
        location, messages = next(iter(error.messages.items()))  # webargs keys them by location
        if location == "query":
            name, message = next(_flatten(messages))
            raise ApiError(400, "bad_parameter", f"parameter {name!r}: {message}")
        pairs = list(_flatten(messages))
        unknown = sorted(name for name, message in pairs if message == "Unknown field.")
        if unknown:
            raise ApiError(400, "bad_request",
                           f"the body has unknown fields: {', '.join(map(repr, unknown))[:MAX_ECHO]}; "
                           f"it may have {', '.join(schema.fields)}")
        name, message = pairs[0]
        raise ApiError(400, "bad_request", f"{name!r}: {message}")


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = Parser()


bp = ApiBlueprint("api", __name__, url_prefix="/api", description="Sluice's JSON API (SPEC §9).")
csrf.exempt(bp)


def errors(*statuses: int):
    """Document the error statuses a view may answer, each with the `Error` schema."""
    def decorator(view):
        for status in statuses:
            view = bp.alt_response(status, response=http.HTTPStatus(status).name)(view)
        return view
    return decorator


def read(fn, *args, **kwargs):
    """Call a read function of `queries` on a fresh connection, in one read transaction."""
    with db.engine.connect() as conn, conn.begin():
        return fn(conn, *args, **kwargs)


def pick(row: dict, fields) -> dict:
    """The named fields of a row, in order."""
    return {f: row.get(f) for f in fields}


def id_cursor(cursor: str | None) -> None:
    """Refuse a cursor of an id-ordered list that this API could not have written (400)."""
    values = queries.decode_cursor(cursor, 1)
    if values is not None and (isinstance(values[0], bool) or not isinstance(values[0], int)
                               or not 0 <= values[0] < 2 ** 63):
        raise queries.BadCursor("this cursor is not valid any more; start from the first page")


def writable(dataset: "Dataset | str | None") -> Dataset:
    """The dataset a write names, when it exists and takes new runs.

    Raises DatasetError: "not_found" (404 `unknown_dataset`) or "archived" (409 `archived`).
    """
    found = dataset if isinstance(dataset, Dataset) else current_dataset(dataset)
    ensure_writable(found)
    return found


def owned(row: dict | None, dataset: str | None) -> dict | None:
    """The row when `dataset` is not given or is the row's own dataset; None otherwise (the caller answers 404).

    A given dataset that does not exist raises DatasetError("not_found") (404 `unknown_dataset`).
    """
    if dataset is None or row is None:
        return row
    return row if current_dataset(dataset).name == row.get("dataset", "events") else None
