"""The JSON API under /api/: runs, target, lineage, dead letters and watermarks (SPEC §9).

Views parse the request, make one call to the pipeline or to `queries`, and render JSON; the pages
render the same data functions as HTML. Errors are `{"error": {"code", "message"}}` with a 4xx status.

Cross-site requests: the API is exempt from the dashboard's CSRF tokens, so `_gate` refuses every
state-changing request that a browser marks as coming from another site (`Sec-Fetch-Site`) or from
another origin (`Origin`); scripts (curl, requests) send neither header and pass. Cross-site reads
are left to the browser's same-origin policy: no CORS header is ever sent.
"""
import json
import math
import re
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlsplit

from flask import Blueprint, current_app, jsonify, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .. import queries
from ..config import pipeline_settings
from ..extensions import csrf, db
from ..pipeline import (
    DeadLetterError,
    InputError,
    Options,
    RunFailed,
    TooLarge,
    WatermarkError,
    parse_edit,
    summary_of,
)
from ..pipeline import dead_letters as dead_letter_actions
from ..pipeline import watermark as wm
from ..runs import current_service
from .target import export_response

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)

MAX_ID = 2 ** 63 - 1
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPES = ("application/json", "application/merge-patch+json")
# A raw upload must say what it is: a cross-site form can only send urlencoded, multipart or text/plain.
RAW_UPLOAD_TYPES = ("application/json", "application/x-ndjson", "application/jsonl", "application/gzip",
                    "application/octet-stream")
ERROR_NAMES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid"}
RUN_FIELDS = ("id", "kind", "status", "source_name", "source_size", "source_sha256", "retry_of_id",
              "same_file_run_id", "dead_letter_id", "queued_at", "started_at", "finished_at",
              "file_removed_at",
              "cancel_requested", "error")
TARGET_FIELDS = ("key", "name", "value", "ts", "updated_at", "run_id")
DEAD_LETTER_FIELDS = ("id", "run_id", "last_run_id", "pos", "line", "key", "error", "detail", "raw", "status",
                      "created_at", "updated_at", "attempts", "sightings", "outcome", "resolved_run_id",
                      "reason")
LINEAGE_FIELDS = ("id", "run_id", "pos", "line", "key", "step", "at", "detail", "dead_letter_id", "actor")
HISTORY_FIELDS = ("id", "old_value", "new_value", "at", "via", "run_id", "actor")
WATERMARK_NAMES = (wm.NAME,)


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", ...}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# --- parameters: one declaration parses the request and documents it in the OpenAPI document ------

TEXT_PATTERN = "^[^\\u0000]*$"  # no NUL: no key or name holds one, and PostgreSQL text cannot


@dataclass(frozen=True)
class Param:
    """A query parameter: its JSON schema drives both the parsing here and the OpenAPI document."""

    name: str
    schema: dict
    description: str
    required: bool = False


def _text(max_length: int = 1024, **more) -> dict:
    return {"type": "string", "maxLength": max_length, "pattern": TEXT_PATTERN, **more}


LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": queries.MAX_PAGE,
                        "default": queries.PAGE},
              "How many items per page.")
CURSOR = Param("cursor", _text(4096), "The `next` cursor of the previous page (opaque).")
FORMAT = Param("format", {"type": "string", "enum": ["csv", "json"]},
               "Stream the whole view (every page) as CSV or as a JSON array instead of one page.")
BOOL = {"type": "boolean"}

UPLOAD_PARAMS = (
    Param("ignore_watermark", BOOL, "Backfill: load records older than the watermark."),
    Param("max_reject_rate", {"type": "number", "minimum": 0, "maximum": 1},
          "Fail the run, loading nothing, when a larger share of its records is rejected."),
    Param("dry_run", BOOL, "Compute and report everything, keep nothing but the run's record."),
    Param("filename", _text(255),
          "The source name recorded for a raw-body upload (multipart uses the part's)."),
)
RUNS_PARAMS = (Param("status", {"type": "string", "enum": list(queries.RUN_STATUSES)},
                     "Only runs in this status."),
               CURSOR, LIMIT)
TARGET_PARAMS = (
    Param("key", _text(256), "Key prefix."),
    Param("name", _text(1024), "Name prefix."),
    Param("sort", {"type": "string", "enum": list(queries.TARGET_SORTS), "default": "key"}, "Sort column."),
    Param("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "Sort direction."),
    CURSOR, LIMIT, FORMAT,
)
DEAD_LETTER_PARAMS = (
    Param("error", {"type": "string", "enum": list(queries.ERROR_CODES)}, "Only this error code."),
    Param("status", {"type": "string", "enum": list(queries.DEAD_LETTER_STATUSES)}, "Only this status."),
    Param("run", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "Only those first seen by this run."),
    CURSOR, LIMIT, FORMAT,
)
PAGE_PARAMS = (CURSOR, LIMIT)
PREVIEW_PARAMS = (Param("value", _text(64), "The candidate value; leave it out to preview a reset."),)

_INT = re.compile(r"[+-]?[0-9]{1,20}")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _bad(name: str, message: str) -> ApiError:
    return ApiError(400, "bad_parameter", f"parameter {name!r}: {message}")


def parse_value(name: str, schema: dict, raw: str):
    """Convert one query-string value by its schema, or raise a 400 ApiError."""
    kind = schema["type"]
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise _bad(name, "must be true or false")
        return raw == "true"
    if kind in ("integer", "number"):
        pattern = _INT if kind == "integer" else _NUMBER
        if not pattern.fullmatch(raw):
            raise _bad(name, f"must be an {kind}" if kind == "integer" else "must be a number")
        value = int(raw) if kind == "integer" else float(raw)
        if not math.isfinite(value) or value < schema.get("minimum", -math.inf) \
                or value > schema.get("maximum", math.inf):
            raise _bad(name, f"must lie between {schema.get('minimum')} and {schema.get('maximum')}")
        return value
    if "\x00" in raw:
        raise _bad(name, "must not contain NUL")
    if "enum" in schema and raw not in schema["enum"]:
        raise _bad(name, "must be one of " + ", ".join(schema["enum"]))
    if len(raw) > schema.get("maxLength", math.inf):
        raise _bad(name, f"must be at most {schema['maxLength']} characters")
    return raw


def parse_args(params) -> SimpleNamespace:
    """The declared query parameters of this request, converted; defaults where absent."""
    values = {}
    for p in params:
        raw = request.args.get(p.name)
        if raw is None:
            if p.required:
                raise _bad(p.name, "is required")
            values[p.name] = p.schema.get("default")
        else:
            values[p.name] = parse_value(p.name, p.schema, raw)
    return SimpleNamespace(**values)


def _sql_safe(value) -> bool:
    """A cursor value the databases can bind: UTF-8 text without NUL, a 64-bit int, a finite float."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_ID <= value <= MAX_ID
    return isinstance(value, float) and math.isfinite(value)


def _check_cursor(cursor: str | None, size: int) -> None:
    """Refuse a cursor whose values could not come from this API, before they reach SQL."""
    if not all(_sql_safe(v) for v in queries.decode_cursor(cursor, size) or ()):
        raise queries.BadCursor("this cursor is not valid any more; start from the first page")


def _id_cursor(cursor: str | None) -> None:
    values = queries.decode_cursor(cursor, 1)
    if values is not None and (isinstance(values[0], bool) or not isinstance(values[0], int)
                               or not 0 <= values[0] <= MAX_ID):
        raise queries.BadCursor("this cursor is not valid any more; start from the first page")


def _json_body(fields: tuple, required: bool = False) -> dict:
    """The request's JSON object body ({} when optional and empty); 400/415 when it is not one."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise ApiError(400, "bad_request", "a JSON object body is required")
        return {}
    if request.mimetype not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       "send the body as JSON with Content-Type: application/json")
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    _only(body, fields, "the body")
    return body


def _only(obj: dict, fields: tuple, what: str) -> None:
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise ApiError(400, "bad_request",
                       f"{what} has unknown fields: {', '.join(map(repr, unknown))[:200]}; "
                       f"it may have {', '.join(fields)}")


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _field(body: dict, name: str, kinds: tuple, what: str, *, required: bool = False, nullable: bool = True):
    if name not in body or (body[name] is None and nullable):
        if required:
            raise ApiError(400, "bad_request", f"{name!r} is required")
        return None
    value = body[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ApiError(400, "bad_request", f"{name!r} must be {what}")
    if isinstance(value, str) and not _sql_safe(value):
        raise ApiError(400, "bad_request", f"{name!r} must be UTF-8 text without NUL")
    return value


# --- the gate, and errors as JSON ------------------------------------------------------------------

@bp.before_request
def _gate():
    """Every API request passes here: keep cross-site browser requests out of state changes.

    This is the seam for authentication: API tokens will be checked here (an `Authorization`
    header is never sent by a cross-site form, so token requests stay safe without CSRF tokens).
    """
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    foreign_origin = origin is not None and urlsplit(origin).netloc != request.host
    if site in ("cross-site", "same-site") or foreign_origin:
        raise ApiError(403, "cross_site",
                       "requests from another site's pages cannot change data through the API")


def _error_response(status: int, code: str, message: str, headers=None, **extra):
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    for name, value in headers or ():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def request_limit() -> int:
    """The body size limit of this request: the upload limit on upload endpoints, small elsewhere."""
    return request.max_content_length


def _http_error(exc: HTTPException):
    status = exc.code or 500
    if status == 413:
        message = f"the request is larger than its limit of {request_limit():,} bytes"
    else:
        message = exc.description or exc.name
    return _error_response(status, ERROR_NAMES.get(status, exc.name.lower().replace(" ", "_")), message,
                           exc.get_headers())


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return _error_response(exc.status, exc.code, exc.message, **exc.extra)


@bp.errorhandler(HTTPException)
def _http_exception(exc: HTTPException):
    return _http_error(exc)


@bp.errorhandler(queries.BadCursor)
def _bad_cursor(exc):
    return _error_response(400, "bad_cursor", str(exc))


@bp.errorhandler(SQLAlchemyError)
def _database_error(exc):
    current_app.logger.exception("database error in %s %s", request.method, request.path)
    return _error_response(503, "database_error", "the database could not answer; try again")


@bp.errorhandler(Exception)
def _unexpected(exc):
    current_app.logger.exception("unexpected error in %s %s", request.method, request.path)
    return _error_response(500, "internal", "the server hit an error it did not expect")


@bp.before_app_request
def _routing_error():
    """404 and 405 under /api/ as JSON: routing fails before any blueprint's handlers apply."""
    exc = request.routing_exception
    if exc is not None and request.path.startswith("/api/") and getattr(exc, "code", 0) >= 400:
        return _http_error(exc)
    return None


# --- rendering -------------------------------------------------------------------------------------

def _pick(row: dict, fields) -> dict:
    return {f: row.get(f) for f in fields}


def run_json(row: dict, svc) -> dict:
    """A run as the API shows it: its record, options, live progress while running, summary when done."""
    out = _pick(row, RUN_FIELDS)
    out["cancel_requested"] = bool(out["cancel_requested"])
    out["options"] = json.loads(row.get("options") or "{}")
    out["file_kept"] = svc.file_available(SimpleNamespace(**row))
    out["retried_by"] = row.get("retried_by", [])
    out["progress"] = svc.progress(row["id"]) if row["status"] == "running" else None
    out["summary"] = summary_of(SimpleNamespace(**row)) if row.get("finished_at") else None
    out["url"] = url_for("api.get_run", run_id=row["id"])
    return out


def _page_json(page: dict, items: list) -> dict:
    return {"items": items, "next": page["next"]}


def _settings():
    return pipeline_settings(current_app.config)


def _read(fn, *args, **kwargs):
    """Call a read function of `queries` on a fresh connection, in one read transaction."""
    with db.engine.connect() as conn, conn.begin():
        return fn(conn, *args, **kwargs)


def _check_id(value: int, what: str) -> int:
    if not 1 <= value <= MAX_ID:
        raise ApiError(404, "not_found", f"no {what} {value}")
    return value


def _run_or_404(run_id: int) -> dict:
    row = _read(queries.run_detail, _check_id(run_id, "run"))
    if row is None:
        raise ApiError(404, "not_found", f"no run {run_id}")
    return row


def _dead_letter_or_404(dl_id: int) -> dict:
    row = _read(queries.dead_letter, _check_id(dl_id, "dead letter"))
    if row is None:
        raise ApiError(404, "not_found", f"no dead letter {dl_id}")
    return dead_letter_json(row, detail=True)


def dead_letter_json(row: dict, detail: bool = False) -> dict:
    """A dead letter as the API shows it (with its last attempt and history in detail)."""
    out = _pick(row, DEAD_LETTER_FIELDS)
    out["url"] = url_for("api.get_dead_letter", dl_id=row["id"])
    if detail:
        out["last_raw"] = row.get("last_raw")
        out["history"] = [_pick(h, LINEAGE_FIELDS) for h in row.get("history", [])]
    return out


def _dead_letter_error(exc: DeadLetterError) -> ApiError:
    status = {"not_found": 404, "conflict": 409, "invalid": 422}.get(exc.code, 409)
    return ApiError(status, exc.code, str(exc))


# --- runs ------------------------------------------------------------------------------------------

@bp.post("/runs")
def create_run():
    """Queue a run for an uploaded file (multipart field `file`, or the raw body); 202 with the run."""
    args = parse_args(UPLOAD_PARAMS)
    try:
        options = Options(ignore_watermark=bool(args.ignore_watermark), max_reject_rate=args.max_reject_rate,
                          dry_run=bool(args.dry_run))
    except ValueError as exc:
        raise _bad("max_reject_rate", str(exc)) from None
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "bad_request", "send the file as the multipart field 'file'")
        stream, filename = upload.stream, upload.filename or "upload"
    elif request.mimetype in RAW_UPLOAD_TYPES:
        stream, filename = request.stream, args.filename or "upload"
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send the file as multipart field 'file', or as the body "
                       "with Content-Type " + ", ".join(RAW_UPLOAD_TYPES))
    if "\x00" in filename:
        raise ApiError(400, "bad_request", "the file name must not contain NUL")
    svc = current_service()
    try:
        run_id = svc.submit(stream, filename[:255], kind="api", options=options)
    except TooLarge as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    except InputError as exc:
        raise ApiError(415, "not_json", str(exc)) from None
    return _accepted(run_id, svc, location=True)


def _accepted(run_id: int, svc, *, location: bool):
    """202 with the run (and its Location when it is a new one)."""
    response = jsonify(run_json(_run_or_404(run_id), svc))
    response.status_code = 202
    if location:
        response.headers["Location"] = url_for("api.get_run", run_id=run_id)
    return response


@bp.get("/runs")
def list_runs():
    """The run history, newest first, one keyset page at a time."""
    args = parse_args(RUNS_PARAMS)
    _id_cursor(args.cursor)
    page = _read(queries.runs_page, status=args.status, cursor=args.cursor, limit=args.limit)
    svc = current_service()
    return jsonify(_page_json(page, [run_json(r, svc) for r in page["rows"]]))


@bp.get("/runs/<int:run_id>")
def get_run(run_id: int):
    """One run: its record, live progress while it runs, its summary when it is done."""
    return jsonify(run_json(_run_or_404(run_id), current_service()))


@bp.post("/runs/<int:run_id>/cancel")
def cancel_run(run_id: int):
    """Cancel a queued or running run (a running one stops at its next progress report)."""
    _run_or_404(run_id)
    svc = current_service()
    try:
        svc.cancel(run_id)
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _accepted(run_id, svc, location=False)


@bp.post("/runs/<int:run_id>/retry")
def retry_run(run_id: int):
    """Retry a failed or cancelled run from its kept file: a new queued run, 202 with its Location."""
    _run_or_404(run_id)
    svc = current_service()
    try:
        new_id = svc.retry(run_id)
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _accepted(new_id, svc, location=True)


# --- target and lineage ----------------------------------------------------------------------------

@bp.get("/target")
def list_target():
    """The target table: key and name prefix search, sort, keyset pages; or the whole view streamed."""
    args = parse_args(TARGET_PARAMS)
    view = {"key_prefix": args.key, "name_prefix": args.name, "sort": args.sort,
            "descending": args.order == "desc"}
    if args.format:
        return export_response(lambda conn: queries.iter_target(conn, **view), args.format, "sluice-target",
                               TARGET_FIELDS)
    _check_cursor(args.cursor, len(queries.TARGET_SORTS[args.sort]))
    page = _read(queries.target_page, cursor=args.cursor, limit=args.limit, **view)
    return jsonify(_page_json(page, [_pick(r, TARGET_FIELDS) for r in page["rows"]]))


@bp.get("/lineage/<path:key>")
def lineage(key: str):
    """A key's current target row and its lineage timeline across runs, newest first."""
    args = parse_args(PAGE_PARAMS)
    _id_cursor(args.cursor)
    if "\x00" in key or len(key) > 256:
        raise ApiError(404, "not_found", "no record was ever seen with this key")
    data = _read(queries.lineage_of_key, key, cursor=args.cursor, limit=args.limit)
    if data["target"] is None and not data["rows"] and args.cursor is None:
        raise ApiError(404, "not_found", f"no record was ever seen with the key {key!r}")
    return jsonify({"key": key, "target": data["target"] and _pick(data["target"], TARGET_FIELDS),
                    "items": [_pick(r, LINEAGE_FIELDS) for r in data["rows"]], "next": data["next"]})


# --- dead letters ----------------------------------------------------------------------------------

@bp.get("/dead-letters")
def list_dead_letters():
    """Dead letters newest first, filtered by error, status and run; counts per error; or streamed."""
    args = parse_args(DEAD_LETTER_PARAMS)
    view = {"error": args.error, "status": args.status, "run_id": args.run}
    if args.format:
        return export_response(lambda conn: queries.iter_dead_letters(conn, **view), args.format,
                               "sluice-dead-letters", DEAD_LETTER_FIELDS)
    _id_cursor(args.cursor)

    def read(conn):
        return (queries.dead_letters_page(conn, cursor=args.cursor, limit=args.limit, **view),
                queries.dead_letter_counts(conn, status=args.status, run_id=args.run))

    page, counts = _read(read)
    body = _page_json(page, [dead_letter_json(r) for r in page["rows"]])
    body["counts"] = {c["error"]: c["n"] for c in counts}
    return jsonify(body)


@bp.get("/dead-letters/<int:dl_id>")
def get_dead_letter(dl_id: int):
    """One dead letter with its raw record, its last attempt and its history."""
    return jsonify(_dead_letter_or_404(dl_id))


def _edited(body: dict):
    if "raw" not in body or body["raw"] is None:
        return None
    raw = _field(body, "raw", (dict, str), "the edited record (an object) or its JSON text")
    if isinstance(raw, str):
        try:
            return parse_edit(raw)
        except DeadLetterError as exc:
            raise _dead_letter_error(exc) from None
    return raw


@bp.post("/dead-letters/<int:dl_id>/reprocess")
def reprocess_dead_letter(dl_id: int):
    """Retry one open dead letter, unchanged or with an edited record (`raw`), as a run of its own."""
    _dead_letter_or_404(dl_id)
    edited = _edited(_json_body(("raw",)))
    try:
        summary = current_service().reprocess([dl_id], edited=edited)
    except DeadLetterError as exc:
        raise _dead_letter_error(exc) from None
    except RunFailed as exc:
        raise ApiError(409, "run_failed", f"reprocess run {exc.run_id} failed: {exc}") from None
    return jsonify({"run": summary, "dead_letter": _dead_letter_or_404(dl_id)})


@bp.post("/dead-letters/<int:dl_id>/discard")
def discard_dead_letter(dl_id: int):
    """Discard one open dead letter, with an optional reason."""
    _dead_letter_or_404(dl_id)
    reason = _field(_json_body(("reason",)), "reason", (str,), "a string")
    with db.engine.connect() as conn:
        try:
            dead_letter_actions.discard(conn, [dl_id], reason=reason, actor="api")
        except DeadLetterError as exc:
            raise _dead_letter_error(exc) from None
    return jsonify(_dead_letter_or_404(dl_id))


@bp.post("/dead-letters/<int:dl_id>/reopen")
def reopen_dead_letter(dl_id: int):
    """Reopen one discarded dead letter."""
    _dead_letter_or_404(dl_id)
    with db.engine.connect() as conn:
        try:
            dead_letter_actions.reopen(conn, [dl_id], actor="api")
        except DeadLetterError as exc:
            raise _dead_letter_error(exc) from None
    return jsonify(_dead_letter_or_404(dl_id))


def _bulk_selection(body: dict) -> list[int]:
    """The ids of the open dead letters a bulk body's filter selects; 409 unless `confirm` is their count."""
    confirm = _field(body, "confirm", (int,), "the number of dead letters you were shown", required=True,
                     nullable=False)
    if confirm < 0:
        raise ApiError(400, "bad_request", "'confirm' must be a count (0 or more)")
    selection = _field(body, "filter", (dict,), "an object") or {}
    _only(selection, ("error", "run"), "the filter")
    error = _field(selection, "error", (str,), "an error code")
    if error is not None and error not in queries.ERROR_CODES:
        raise ApiError(400, "bad_request", "filter 'error' must be one of " + ", ".join(queries.ERROR_CODES))
    run = _field(selection, "run", (int,), "a run id")
    if run is not None and not 1 <= run <= MAX_ID:
        raise ApiError(400, "bad_request", "filter 'run' must be a run id")
    ids = _read(queries.dead_letter_ids, error=error, status="open", run_id=run)
    if confirm != len(ids):
        raise ApiError(409, "count_mismatch",
                       f"{len(ids)} open dead letters match this filter, not {confirm}; "
                       f"send \"confirm\": {len(ids)} to act on them", count=len(ids))
    return ids


@bp.post("/dead-letters/reprocess")
def bulk_reprocess():
    """Retry every open dead letter a filter selects as one run, once `confirm` equals their count."""
    ids = _bulk_selection(_json_body(("filter", "confirm"), required=True))
    if not ids:
        return jsonify({"count": 0, "run": None})
    try:
        summary = current_service().reprocess(ids)
    except DeadLetterError as exc:
        raise _dead_letter_error(exc) from None
    except RunFailed as exc:
        raise ApiError(409, "run_failed", f"reprocess run {exc.run_id} failed: {exc}") from None
    return jsonify({"count": len(ids), "run": summary})


@bp.post("/dead-letters/discard")
def bulk_discard():
    """Discard every open dead letter a filter selects, once `confirm` equals their count."""
    body = _json_body(("filter", "confirm", "reason"), required=True)
    reason = _field(body, "reason", (str,), "a string")
    ids = _bulk_selection(body)
    if not ids:
        return jsonify({"count": 0, "run": None})
    with db.engine.connect() as conn:
        try:
            n = dead_letter_actions.discard(conn, ids, reason=reason, actor="api")
        except DeadLetterError as exc:
            raise _dead_letter_error(exc) from None
    return jsonify({"count": n, "run": None})


# --- watermarks ------------------------------------------------------------------------------------

def _watermark_name(name: str) -> str:
    if name not in WATERMARK_NAMES:
        raise ApiError(404, "not_found", f"no watermark {name!r}; the pipeline's is {wm.NAME!r}")
    return name


def watermark_json(page: dict) -> dict:
    """A watermark: its value, when it last changed, and its latest history, newest first."""
    return {"name": page["name"], "value": page["value"], "updated_at": page["updated_at"],
            "history": [_pick(h, HISTORY_FIELDS) for h in page["rows"]], "history_next": page["next"],
            "url": url_for("api.get_watermark", name=page["name"])}


@bp.get("/watermarks")
def list_watermarks():
    """Every watermark with its value and latest history."""
    args = parse_args((LIMIT,))
    items = [watermark_json(_read(queries.watermark_page, name=name, limit=args.limit))
             for name in WATERMARK_NAMES]
    return jsonify({"items": items, "next": None})


@bp.get("/watermarks/<name>")
def get_watermark(name: str):
    """One watermark with its history, newest first, one keyset page at a time."""
    args = parse_args(PAGE_PARAMS)
    _id_cursor(args.cursor)
    page = _read(queries.watermark_page, name=_watermark_name(name), cursor=args.cursor, limit=args.limit)
    return jsonify(watermark_json(page))


@bp.get("/watermarks/<name>/preview")
def preview_watermark(name: str):
    """How many target rows lie at or after a candidate value (all of them for a reset)."""
    _watermark_name(name)
    args = parse_args(PREVIEW_PARAMS)
    try:
        value = None if args.value is None else wm.check_value(args.value)
        count = _read(wm.preview, value)
    except WatermarkError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    return jsonify({"name": name, "value": value, "rows_at_or_after": count})


@bp.put("/watermarks/<name>")
def set_watermark(name: str):
    """Set the watermark to an operator's value (a past or present timestamp, any direction)."""
    _watermark_name(name)
    body = _json_body(("value",), required=True)
    value = _field(body, "value", (str,), "a timestamp string", required=True)
    with db.engine.connect() as conn:
        try:
            wm.set_value(conn, value, via="api", name=name)
        except WatermarkError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
    return jsonify(watermark_json(_read(queries.watermark_page, name=name)))


@bp.delete("/watermarks/<name>")
def reset_watermark(name: str):
    """Remove the watermark: the next run processes everything and the stale rule protects newer data."""
    _watermark_name(name)
    with db.engine.connect() as conn:
        wm.reset(conn, via="api", name=name)
    return jsonify(watermark_json(_read(queries.watermark_page, name=name)))


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 document of this API."""
    from .openapi import document

    return jsonify(document())
