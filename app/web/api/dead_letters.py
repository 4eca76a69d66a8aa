"""Dead letters over the API: list, export, one, reprocess (as is or edited), discard, reopen, bulk (reopen by ids too)."""

from flask import current_app, jsonify, url_for

from ... import queries
from ...extensions import db
from ...pipeline import DeadLetterError, RunFailed, jsontext, parse_edit
from ...pipeline import dead_letters as actions
from ...runs import current_service
from ..auth import OPERATOR, VIEWER, current_actor, requires
from ..target import export_response
from . import schemas
from .blueprint import ApiError, bp, errors, id_cursor, owned, pick, read, writable
from .links import DEAD_LETTER_LINKS, DEAD_LETTER_PAGE_LINKS, REPROCESS_LINKS

EXPORT = {"application/json": {"schema": {"anyOf": [
    {"$ref": "#/components/schemas/DeadLetterPage"},
    {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetterExport"}}]}},
    "text/csv": {"schema": {"type": "string"}}}
ID = [{"in": "path", "name": "dl_id", "required": True, "description": "A dead letter's id.",
       "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID}}]


def dead_letter_json(row: dict, detail: bool = False) -> dict:
    """A dead letter as the API shows it (with its last attempt and history in detail)."""
    out = pick(row, schemas.DEAD_LETTER_FIELDS)
    out["dataset"] = row.get("dataset") or "events"
    out["url"] = url_for("api.get_dead_letter", dl_id=row["id"])
    if detail:
        out["last_raw"] = row.get("last_raw")
        out["history"] = [pick(h, schemas.LINEAGE_FIELDS) for h in row.get("history", [])]
    return out


def _letter_or_404(dl_id: int, dataset: str | None = None) -> dict:
    """The dead letter as JSON; 404 when there is none, or when it is not of `dataset` (when given)."""
    row = read(queries.dead_letter, dl_id) if 1 <= dl_id <= schemas.MAX_ID else None
    if owned(row, dataset) is None:
        raise ApiError(404, "not_found", f"no dead letter {dl_id}" + (f" in dataset {dataset}" if row else ""))
    return dead_letter_json(row, detail=True)


def _writable_letter(dl_id: int, dataset: str | None) -> dict:
    """The dead letter, when its dataset takes changes (409 `archived` otherwise)."""
    letter = _letter_or_404(dl_id, dataset)
    writable(letter["dataset"])
    return letter


def _error(exc: DeadLetterError) -> ApiError:
    status = {"not_found": 404, "conflict": 409, "invalid": 422}.get(exc.code, 409)
    return ApiError(status, exc.code, str(exc))


def _reprocess(ids: list[int], edited=None) -> dict:
    try:
        return current_service().reprocess(ids, edited=edited, actor=current_actor())
    except DeadLetterError as exc:
        raise _error(exc) from None
    except RunFailed as exc:
        raise ApiError(409, "run_failed", f"reprocess run {exc.run_id} failed: {exc}") from None


@bp.get("/dead-letters")
@requires(VIEWER)
@bp.arguments(schemas.DeadLetterQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.DeadLetterPage, description="A page of dead letters, or the streamed export.")
@bp.doc(responses={200: {"content": EXPORT, "links": DEAD_LETTER_PAGE_LINKS}})
@errors(404, 503)
def list_dead_letters(view, limit, cursor=None, format=None):
    """A dataset's dead letters newest first, filtered by error, status and run; counts per error; or streamed."""
    if format:
        return export_response(lambda conn: queries.iter_dead_letters(conn, **view), format,
                               "sluice-dead-letters", schemas.DEAD_LETTER_FIELDS)
    id_cursor(cursor)

    def both(conn):
        return (queries.dead_letters_page(conn, cursor=cursor, limit=limit, **view),
                queries.dead_letter_counts(conn, view["dataset"], status=view["status"], run_id=view["run_id"],
                                           text=view["text"], key_prefix=view["key_prefix"]))

    page, counts = read(both)
    return jsonify({"items": [dead_letter_json(r) for r in page["rows"]], "next": page["next"],
                    "counts": {c["error"]: c["n"] for c in counts}})


@bp.route("/dead-letters/<int:dl_id>", methods=["GET"], parameters=ID)
@requires(VIEWER)
@bp.arguments(schemas.OwnerQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.DeadLetterDetail, description="The dead letter.")
@bp.doc(responses={200: {"links": DEAD_LETTER_LINKS}})
@errors(404, 503)
def get_dead_letter(dl_id: int, dataset=None):
    """One dead letter with its raw record, its last attempt and its history."""
    return jsonify(_letter_or_404(dl_id, dataset))


def _edited(raw):
    """The edited record: an object, or parsed from its JSON text; bounded by the record limit."""
    if raw is None:
        return None
    limit = current_app.config["SLUICE_MAX_RECORD_BYTES"]
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else \
        len(jsontext.dumps(raw).encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ApiError(413, "record_too_large",
                       f"the edited record is {size:,} bytes as JSON, more than the record limit of {limit:,}")
    if isinstance(raw, str):
        try:
            return parse_edit(raw)
        except DeadLetterError as exc:
            raise _error(exc) from None
    return raw


@bp.route("/dead-letters/<int:dl_id>/reprocess", methods=["POST"], parameters=ID)
@requires(OPERATOR)
@bp.arguments(schemas.OwnerQuery, location="query", as_kwargs=True)
@bp.arguments(schemas.ReprocessBody, required=False, as_kwargs=True)
@bp.response(200, schemas.ReprocessResult, description="The reprocess run's summary and the dead letter.")
@bp.doc(responses={200: {"links": REPROCESS_LINKS}})
@errors(403, 404, 409, 413, 415, 422, 503)
def reprocess_dead_letter(dl_id: int, raw=None, dataset=None):
    """Retry one open dead letter, unchanged or with an edited record (`raw`), as a run of its own."""
    _writable_letter(dl_id, dataset)
    summary = _reprocess([dl_id], _edited(raw))
    return jsonify({"run": summary, "dead_letter": _letter_or_404(dl_id)})


@bp.route("/dead-letters/<int:dl_id>/discard", methods=["POST"], parameters=ID)
@requires(OPERATOR)
@bp.arguments(schemas.OwnerQuery, location="query", as_kwargs=True)
@bp.arguments(schemas.DiscardBody, required=False, as_kwargs=True)
@bp.response(200, schemas.DeadLetterDetail, description="The dead letter, discarded.")
@bp.doc(responses={200: {"links": DEAD_LETTER_LINKS}})
@errors(403, 404, 409, 413, 415, 503)
def discard_dead_letter(dl_id: int, reason=None, dataset=None):
    """Discard one open dead letter, with an optional reason (at most 500 characters)."""
    _writable_letter(dl_id, dataset)
    with db.engine.connect() as conn:
        try:
            actions.discard(conn, [dl_id], reason=reason, actor=current_actor())
        except DeadLetterError as exc:
            raise _error(exc) from None
    return jsonify(_letter_or_404(dl_id))


@bp.route("/dead-letters/<int:dl_id>/reopen", methods=["POST"], parameters=ID)
@requires(OPERATOR)
@bp.arguments(schemas.OwnerQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.DeadLetterDetail, description="The dead letter, open again.")
@bp.doc(responses={200: {"links": DEAD_LETTER_LINKS}})
@errors(403, 404, 409, 503)
def reopen_dead_letter(dl_id: int, dataset=None):
    """Reopen one discarded dead letter."""
    _writable_letter(dl_id, dataset)
    with db.engine.connect() as conn:
        try:
            actions.reopen(conn, [dl_id], actor=current_actor())
        except DeadLetterError as exc:
            raise _error(exc) from None
    return jsonify(_letter_or_404(dl_id))


def _selection(dataset: str, filter, confirm: int, status: str = "open") -> list[int]:
    """The ids of a dataset's dead letters of `status` a bulk filter selects; 409 unless `confirm` is their count."""
    ds = writable(dataset)
    filter = filter or {}
    if filter.get("error") is not None and filter["error"] not in queries.error_codes(ds):
        raise ApiError(400, "bad_request", f"'filter.error': not an error code of {ds.name}")
    ids = read(queries.dead_letter_ids, ds, error=filter.get("error"), status=status, run_id=filter.get("run"))
    if confirm != len(ids):
        raise ApiError(409, "count_mismatch",
                       f"{len(ids)} {status} dead letters match this filter, not {confirm}; "
                       f"send \"confirm\": {len(ids)} to act on them", count=len(ids))
    return ids


def _picked(dataset: str, ids: list[int], confirm: int, action: str) -> list[int]:
    """Listed ids of a dataset's dead letters for an action: 404 for one of no dataset's or another's, 409 for one
    whose status does not fit the action (they are named) or unless `confirm` is their count."""
    ds = writable(dataset)
    with db.engine.connect() as conn:
        try:
            selection = actions.select_ids(conn, ids, dataset=ds.name, action=action)
        except DeadLetterError as exc:
            raise _error(exc) from None
    wanted = actions.ACTION_STATUS[action]
    if selection.unfit:
        named = ", ".join(f"{i} ({s})" for i, s in list(selection.unfit.items())[:20])
        raise ApiError(409, "conflict", f"{len(selection.unfit)} of the listed dead letters are not {wanted}: "
                                        f"{named}; nothing was done")
    if confirm != len(selection.fit):
        raise ApiError(409, "count_mismatch", f"{len(selection.fit)} dead letters are listed, not {confirm}; "
                                              f"send \"confirm\": {len(selection.fit)}", count=len(selection.fit))
    return selection.fit


@bp.post("/dead-letters/reprocess")
@requires(OPERATOR)
@bp.arguments(schemas.DatasetQuery, location="query", as_kwargs=True)
@bp.arguments(schemas.BulkBody, as_kwargs=True)
@bp.response(200, schemas.BulkResult, description="How many, and the run's summary.")
@errors(403, 404, 409, 413, 415, 503)
def bulk_reprocess(confirm: int, filter=None, dataset="events"):
    """Retry every open dead letter of a dataset a filter selects as one run, once `confirm` equals their count."""
    ids = _selection(dataset, filter, confirm)
    if not ids:
        return jsonify({"count": 0, "run": None})
    return jsonify({"count": len(ids), "run": _reprocess(ids)})


@bp.post("/dead-letters/discard")
@requires(OPERATOR)
@bp.arguments(schemas.DatasetQuery, location="query", as_kwargs=True)
@bp.arguments(schemas.BulkDiscardBody, as_kwargs=True)
@bp.response(200, schemas.BulkResult, description="How many were discarded.")
@errors(403, 404, 409, 413, 415, 503)
def bulk_discard(confirm: int, filter=None, reason=None, dataset="events"):
    """Discard every open dead letter of a dataset a filter selects, once `confirm` equals their count."""
    ids = _selection(dataset, filter, confirm)
    if not ids:
        return jsonify({"count": 0, "run": None})
    with db.engine.connect() as conn:
        try:
            n = actions.discard(conn, ids, reason=reason, actor=current_actor())
        except DeadLetterError as exc:
            raise _error(exc) from None
    return jsonify({"count": n, "run": None})


@bp.post("/dead-letters/reopen")
@requires(OPERATOR)
@bp.arguments(schemas.DatasetQuery, location="query", as_kwargs=True)
@bp.arguments(schemas.BulkReopenBody, as_kwargs=True)
@bp.response(200, schemas.BulkResult, description="How many were reopened.")
@errors(403, 404, 409, 413, 415, 422, 503)
def bulk_reopen(confirm: int, filter=None, ids=None, dataset="events"):
    """Reopen the discarded dead letters of a dataset that a filter selects, or listed `ids` (at most 500), once
    `confirm` equals their count."""
    if ids is not None and filter is not None:
        raise ApiError(422, "invalid", "send either 'ids' or 'filter', not both")
    ids = _picked(dataset, ids, confirm, "reopen") if ids is not None else \
        _selection(dataset, filter, confirm, "discarded")
    if not ids:
        return jsonify({"count": 0, "run": None})
    with db.engine.connect() as conn:
        try:
            n = actions.reopen(conn, ids, actor=current_actor())
        except DeadLetterError as exc:
            raise _error(exc) from None
    return jsonify({"count": n, "run": None})
