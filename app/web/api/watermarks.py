"""Watermarks over the API: list, one with its history, preview, set, reset."""
from flask import jsonify, url_for

from ... import queries
from ...extensions import db
from ...pipeline import WatermarkError
from ...pipeline import watermark as wm
from . import schemas
from .blueprint import ApiError, bp, clip, errors, id_cursor, pick, read
from .links import WATERMARK_LINKS

NAMES = (wm.NAME,)
NAME = [{"in": "path", "name": "name", "required": True, "description": "The watermark's name.",
         "schema": {"type": "string", "enum": list(NAMES)}}]
LINKS = {200: {"links": WATERMARK_LINKS}}


@bp.url_value_preprocessor
def _known_name(endpoint, values) -> None:
    """404 for another watermark's name before its body is parsed."""
    if values and "name" in values:
        _name(values["name"])


def _name(name: str) -> str:
    if name not in NAMES:
        raise ApiError(404, "not_found", f"no watermark {clip(name)}; the pipeline's is {wm.NAME!r}")
    return name


def watermark_json(page: dict) -> dict:
    """A watermark: its value, when it last changed, and its latest history, newest first."""
    return {"name": page["name"], "value": page["value"], "updated_at": page["updated_at"],
            "history": [pick(h, schemas.HISTORY_FIELDS) for h in page["rows"]], "history_next": page["next"],
            "url": url_for("api.get_watermark", name=page["name"])}


@bp.get("/watermarks")
@bp.arguments(schemas.LimitQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.WatermarkList, description="The watermarks.")
@errors(503)
def list_watermarks(limit):
    """Every watermark with its value and latest history."""
    items = [watermark_json(read(queries.watermark_page, name=name, limit=limit)) for name in NAMES]
    return jsonify({"items": items, "next": None})


@bp.route("/watermarks/<name>", methods=["GET"], parameters=NAME)
@bp.arguments(schemas.PageQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Watermark, description="The watermark (after a reset: `value` null).")
@bp.doc(responses=LINKS)
@errors(404, 503)
def get_watermark(name: str, limit, cursor=None):
    """One watermark with its history, newest first, one keyset page at a time."""
    id_cursor(cursor)
    return jsonify(watermark_json(read(queries.watermark_page, name=_name(name), cursor=cursor, limit=limit)))


@bp.route("/watermarks/<name>/preview", methods=["GET"], parameters=NAME)
@bp.arguments(schemas.PreviewQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Preview, description="The preview.")
@errors(404, 422, 503)
def preview_watermark(name: str, value=None):
    """How many target rows lie at or after a candidate value (all of them for a reset)."""
    _name(name)
    try:
        value = None if value is None else wm.check_value(value)
        count = read(wm.preview, value)
    except WatermarkError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    return jsonify({"name": name, "value": value, "rows_at_or_after": count})


@bp.route("/watermarks/<name>", methods=["PUT"], parameters=NAME)
@bp.arguments(schemas.WatermarkBody, as_kwargs=True)
@bp.response(200, schemas.Watermark, description="The watermark, set.")
@bp.doc(responses=LINKS)
@errors(403, 404, 413, 415, 422, 503)
def set_watermark(name: str, value: str):
    """Set the watermark to an operator's value (a past or present timestamp, any direction)."""
    _name(name)
    with db.engine.connect() as conn:
        try:
            wm.set_value(conn, value, via="api", name=name)
        except WatermarkError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
    return jsonify(watermark_json(read(queries.watermark_page, name=name)))


@bp.route("/watermarks/<name>", methods=["DELETE"], parameters=NAME)
@bp.response(200, schemas.Watermark, description="The watermark, reset: `value` is null until a "
                                                 "run or an operator sets it again.")
@bp.doc(responses=LINKS)
@errors(403, 404, 503)
def reset_watermark(name: str):
    """Remove the watermark: the next run processes everything and the stale rule protects newer data."""
    _name(name)
    with db.engine.connect() as conn:
        wm.reset(conn, via="api", name=name)
    return jsonify(watermark_json(read(queries.watermark_page, name=name)))
