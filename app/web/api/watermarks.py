"""Watermarks over the API: a dataset's watermark with its history, preview, set, reset.

Each dataset has one watermark (`events_ts` for events, `<name>_<version field>` otherwise); its path
names it, and `?dataset=`, when given, must be the dataset it belongs to.
"""
from flask import jsonify, request, url_for

from ... import queries
from ...datasets.registry import list_datasets
from ...extensions import db
from ...pipeline import WatermarkError
from ...pipeline import watermark as wm
from ..auth import OPERATOR, VIEWER, current_actor, requires
from ..filters import current_dataset
from . import schemas
from .blueprint import ApiError, bp, clip, errors, id_cursor, pick, read, writable
from .links import WATERMARK_LINKS

NAME = [{"in": "path", "name": "name", "required": True,
         "description": "The watermark's name: `events_ts`, or another dataset's (its `watermark`).",
         "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z_][a-z0-9_]*$"}}]
LINKS = {200: {"links": WATERMARK_LINKS}}
ENDPOINTS = frozenset({"api.get_watermark", "api.preview_watermark", "api.set_watermark", "api.reset_watermark"})


@bp.url_value_preprocessor
def _known_name(endpoint, values) -> None:
    """404 for a name that is no dataset's watermark before a body is parsed."""
    if endpoint in ENDPOINTS and values and "name" in values:
        _dataset(values["name"], request.args.get("dataset"))


def _dataset(name: str, dataset: str | None = None):
    """The dataset whose watermark this is (and the one `dataset` names, when given); 404 otherwise."""
    if dataset is not None:
        found = current_dataset(dataset)  # unknown: 404 unknown_dataset
        if found.watermark != name:
            raise ApiError(404, "not_found", f"no watermark {clip(name)} in dataset {found.name}; "
                                             f"its watermark is {found.watermark!r}")
        return found
    with db.engine.connect() as conn:
        found = [d for d in list_datasets(conn) if d.watermark == name]
    if not found:
        raise ApiError(404, "not_found", f"no watermark {clip(name)}; the pipeline's is {wm.NAME!r}")
    return found[0]


def watermark_json(page: dict) -> dict:
    """A watermark: its value, when it last changed, and its latest history, newest first."""
    return {"name": page["name"], "dataset": page["dataset"], "value": page["value"],
            "updated_at": page["updated_at"],
            "history": [pick(h, schemas.HISTORY_FIELDS) for h in page["rows"]], "history_next": page["next"],
            "url": url_for("api.get_watermark", name=page["name"])}


@bp.get("/watermarks")
@requires(VIEWER)
@bp.arguments(schemas.WatermarksQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.WatermarkList, description="The dataset's watermark.")
@errors(404, 503)
def list_watermarks(limit, dataset="events"):
    """A dataset's watermark (default events) with its value and latest history."""
    ds = current_dataset(dataset)
    return jsonify({"items": [watermark_json(read(queries.watermark_page, ds, limit=limit))], "next": None})


@bp.route("/watermarks/<name>", methods=["GET"], parameters=NAME)
@requires(VIEWER)
@bp.arguments(schemas.WatermarkPageQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Watermark, description="The watermark (after a reset: `value` null).")
@bp.doc(responses=LINKS)
@errors(404, 503)
def get_watermark(name: str, limit, cursor=None, dataset=None):
    """One watermark with its history, newest first, one keyset page at a time."""
    id_cursor(cursor)
    ds = _dataset(name, dataset)
    return jsonify(watermark_json(read(queries.watermark_page, ds, cursor=cursor, limit=limit)))


@bp.route("/watermarks/<name>/preview", methods=["GET"], parameters=NAME)
@requires(VIEWER)
@bp.arguments(schemas.WatermarkPreviewQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Preview, description="The preview.")
@errors(404, 422, 503)
def preview_watermark(name: str, value=None, dataset=None):
    """How many of its dataset's target rows lie at or after a candidate value (all of them for a reset)."""
    ds = _dataset(name, dataset)
    try:
        value = None if value is None else wm.check_value(value)
        count = read(wm.preview, value, ds)
    except WatermarkError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    return jsonify({"name": name, "value": value, "rows_at_or_after": count})


@bp.route("/watermarks/<name>", methods=["PUT"], parameters=NAME)
@requires(OPERATOR)
@bp.arguments(schemas.OwnerQuery, location="query", as_kwargs=True)
@bp.arguments(schemas.WatermarkBody, as_kwargs=True)
@bp.response(200, schemas.Watermark, description="The watermark, set.")
@bp.doc(responses=LINKS)
@errors(403, 404, 409, 413, 415, 422, 503)
def set_watermark(name: str, value: str, dataset=None):
    """Set the watermark to an operator's value (a past or present timestamp, any direction)."""
    ds = writable(_dataset(name, dataset))
    with db.engine.connect() as conn:
        try:
            wm.set_value(conn, value, via="api", actor=current_actor(), dataset=ds)
        except WatermarkError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
    return jsonify(watermark_json(read(queries.watermark_page, ds)))


@bp.route("/watermarks/<name>", methods=["DELETE"], parameters=NAME)
@requires(OPERATOR)
@bp.arguments(schemas.OwnerQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Watermark, description="The watermark, reset: `value` is null until a "
                                                 "run or an operator sets it again.")
@bp.doc(responses=LINKS)
@errors(403, 404, 409, 503)
def reset_watermark(name: str, dataset=None):
    """Remove the watermark: the next run processes everything and the stale rule protects newer data."""
    ds = writable(_dataset(name, dataset))
    with db.engine.connect() as conn:
        wm.reset(conn, via="api", actor=current_actor(), dataset=ds)
    return jsonify(watermark_json(read(queries.watermark_page, ds)))
