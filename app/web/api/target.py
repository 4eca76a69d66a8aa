"""The target table and the lineage of a key over the API."""
from flask import jsonify

from ... import queries
from ..target import export_response
from . import schemas
from .blueprint import ApiError, bp, errors, id_cursor, pick, read
from .links import TARGET_LINKS

EXPORT = {"application/json": {"schema": {"anyOf": [
    {"$ref": "#/components/schemas/TargetPage"},
    {"type": "array", "items": {"$ref": "#/components/schemas/TargetRow"}}]}},
    "text/csv": {"schema": {"type": "string"}}}


@bp.get("/target")
@bp.arguments(schemas.TargetQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.TargetPage, description="A page of rows, or with `format` the whole view streamed.")
@bp.doc(responses={200: {"content": EXPORT, "links": TARGET_LINKS}})
@errors(503)
def list_target(view, limit, cursor=None, format=None):
    """The target table: key and name prefix search, sort, keyset pages; or the whole view streamed."""
    if format:
        return export_response(lambda conn: queries.iter_target(conn, **view), format, "sluice-target",
                               schemas.TARGET_FIELDS)
    page = read(queries.target_page, cursor=cursor, limit=limit, **view)
    return jsonify({"items": [pick(r, schemas.TARGET_FIELDS) for r in page["rows"]], "next": page["next"]})


KEY = [{"in": "path", "name": "key", "required": True, "description": "A record key (may contain `/`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": schemas.TEXT_PATTERN}}]


@bp.route("/lineage/<path:key>", methods=["GET"], parameters=KEY)
@bp.arguments(schemas.PageQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Lineage, description="The key's lineage.")
@errors(404, 503)
def lineage(key: str, limit, cursor=None):
    """A key's current target row and its lineage timeline across runs, newest first."""
    id_cursor(cursor)
    if not queries.storable(key) or len(key) > 256:
        raise ApiError(404, "not_found", "no record was ever seen with this key")
    data = read(queries.lineage_of_key, key, cursor=cursor, limit=limit)
    if data["target"] is None and not data["rows"] and cursor is None:
        raise ApiError(404, "not_found", f"no record was ever seen with the key {key!r}")
    return jsonify({"key": key, "target": data["target"] and pick(data["target"], schemas.TARGET_FIELDS),
                    "items": [pick(r, schemas.LINEAGE_FIELDS) for r in data["rows"]], "next": data["next"]})
