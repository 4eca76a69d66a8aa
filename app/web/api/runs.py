"""Runs over the API: upload a file, the history, one run, cancel, retry and backfill."""
import json
from types import SimpleNamespace

from flask import jsonify, request, url_for

from ... import queries
from ...pipeline import InputError, Options, TooLarge, summary_of, warnings_of
from ...runs import current_service
from ..auth import OPERATOR, VIEWER, current_actor, requires
from . import schemas
from .blueprint import ApiError, bp, errors, id_cursor, pick, read, writable
from .links import RUN_LINKS, RUN_PAGE_LINKS

MAX_ID = schemas.MAX_ID


def run_json(row: dict, svc) -> dict:
    """A run as the API shows it: its record, options, live progress while running, summary when done.

    A dry run's first would-be rejects are kept with it (`dry_run_rejects`, null for any other run).
    """
    out = pick(row, schemas.RUN_FIELDS)
    out["cancel_requested"] = bool(out["cancel_requested"])
    out["options"] = json.loads(row.get("options") or "{}")
    out["file_kept"] = svc.file_available(SimpleNamespace(**row))
    out["retried_by"] = row.get("retried_by", [])
    out["progress"] = svc.progress(row["id"]) if row["status"] == "running" else None
    out["summary"] = summary_of(SimpleNamespace(**row)) if row.get("finished_at") else None
    out["warnings"] = warnings_of(SimpleNamespace(**row))
    rejects = row.get("dry_run_rejects")  # parsed by run_detail, JSON text in a page's rows
    out["dry_run_rejects"] = json.loads(rejects) if isinstance(rejects, str) else rejects
    out["dataset"] = row.get("dataset") or "events"
    out["url"] = url_for("api.get_run", run_id=row["id"])
    return out


def run_or_404(run_id: int) -> dict:
    """The run's row, or a 404 ApiError."""
    row = read(queries.run_detail, run_id) if 1 <= run_id <= MAX_ID else None
    if row is None:
        raise ApiError(404, "not_found", f"no run {run_id}")
    return row


def _accepted(run_id: int, svc, *, location: bool):
    """202 with the run (and its Location when it is a new one)."""
    response = jsonify(run_json(run_or_404(run_id), svc))
    response.status_code = 202
    if location:
        response.headers["Location"] = url_for("api.get_run", run_id=run_id)
    return response


LOCATION = {"Location": {"description": "The run's URL.", "schema": {"type": "string"}}}
# The file's bytes are read by its run, not by this request: a malformed file is accepted and its run fails
# saying where. The request only sniffs the first bytes (415 `not_json` when they cannot start JSON,
# JSON Lines or gzip), so every media type's body is documented as bytes.
BINARY = {"type": "string", "format": "binary"}
UPLOAD_BODY = {"required": True, "description": "The file (JSON, JSON Lines, or gzip of either): a multipart "
                                                 "field `file`, or the raw body with one of these media types.",
               "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                              "properties": {"file": BINARY}}},
                           **{t: {"schema": BINARY} for t in schemas.RAW_UPLOAD_TYPES}}}


@bp.post("/runs")
@requires(OPERATOR)
@bp.arguments(schemas.UploadQuery, location="query", as_kwargs=True)
@bp.response(202, schemas.Run, description="The queued run.", headers=LOCATION)
@bp.doc(requestBody=UPLOAD_BODY, responses={202: {"links": RUN_LINKS}})
@errors(403, 404, 409, 413, 415, 503)
def create_run(ignore_watermark, dry_run, max_reject_rate=None, filename=None, dataset="events"):
    """Upload a file into a dataset: queue a run (multipart field `file`, or the raw body with its media type).

    An unknown dataset answers 404 `unknown_dataset`, an archived one 409 `archived`, before the body is read.
    """
    options = Options(ignore_watermark=ignore_watermark, max_reject_rate=max_reject_rate, dry_run=dry_run)
    writable(dataset)
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "bad_request", "send the file as the multipart field 'file'")
        stream, filename = upload.stream, upload.filename or "upload"
    elif request.mimetype in schemas.RAW_UPLOAD_TYPES:
        # A cross-site form can only send urlencoded, multipart or text/plain: a raw upload must say its type.
        stream, filename = request.stream, filename or "upload"
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send the file as multipart field 'file', or as the body with Content-Type "
                       + ", ".join(schemas.RAW_UPLOAD_TYPES))
    if "\x00" in filename:
        raise ApiError(400, "bad_request", "the file name must not contain NUL")
    svc = current_service()
    try:
        run_id = svc.submit(stream, filename[:255], kind="api", options=options, dataset=dataset,
                            actor=current_actor())
    except TooLarge as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    except InputError as exc:
        raise ApiError(415, "not_json", str(exc)) from None
    return _accepted(run_id, svc, location=True)


@bp.get("/runs")
@requires(VIEWER)
@bp.arguments(schemas.RunsQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.RunPage, description="A page of runs.")
@bp.doc(responses={200: {"links": RUN_PAGE_LINKS}})
@errors(404, 503)
def list_runs(view, limit, cursor=None):
    """A dataset's run history, newest first, a keyset page at a time, by status, kind and queued days.

    `from` and `to` are UTC days, both included; `from` after `to` answers 400 `bad_parameter`.
    """
    id_cursor(cursor)
    page = read(queries.runs_page, **view, cursor=cursor, limit=limit)
    svc = current_service()
    return jsonify({"items": [run_json(r, svc) for r in page["rows"]], "next": page["next"]})


@bp.get("/runs/<int:run_id>")
@requires(VIEWER)
@bp.response(200, schemas.Run, description="The run.")
@errors(404, 503)
def get_run(run_id: int):
    """One run: its record, live progress while it runs, its summary when it is done."""
    return jsonify(run_json(run_or_404(run_id), current_service()))


@bp.post("/runs/<int:run_id>/cancel")
@requires(OPERATOR)
@bp.response(202, schemas.Run, description="The run, cancelled or stopping.")
@errors(403, 404, 409, 503)
def cancel_run(run_id: int):
    """Cancel a queued or running run."""
    run_or_404(run_id)
    svc = current_service()
    try:
        svc.cancel(run_id, current_actor())
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _accepted(run_id, svc, location=False)


def _queue_again(run_id: int, how: str):
    """Queue a new run of a run's kept file (the service's `retry` or `backfill`): 202 with its Location."""
    writable(run_or_404(run_id)["dataset"])
    svc = current_service()
    try:
        new_id = getattr(svc, how)(run_id, current_actor())
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _accepted(new_id, svc, location=True)


@bp.post("/runs/<int:run_id>/retry")
@requires(OPERATOR)
@bp.response(202, schemas.Run, description="The new run.", headers=LOCATION)
@bp.doc(responses={202: {"links": RUN_LINKS}})
@errors(403, 404, 409, 503)
def retry_run(run_id: int):
    """Retry a failed or cancelled run from its kept file: a new queued run, 202 with its Location.

    The new run loads into the run's dataset: 409 `archived` when that dataset is archived.
    """
    return _queue_again(run_id, "retry")


@bp.post("/runs/<int:run_id>/backfill")
@requires(OPERATOR)
@bp.response(202, schemas.Run, description="The new run.", headers=LOCATION)
@bp.doc(responses={202: {"links": RUN_LINKS}})
@errors(403, 404, 409, 503)
def backfill_run(run_id: int):
    """Backfill a run whose records were all older than the watermark: a new queued run of its kept file that
    ignores the watermark (kind `retry`, `options.backfill_of` naming the run), 202 with its Location.

    409 `conflict` when the run has no `all_skipped` warning or its file is gone, `archived` when its dataset is.
    """
    return _queue_again(run_id, "backfill")
