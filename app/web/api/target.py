"""The target table and the lineage of a key over the API, per dataset (`?dataset=`, default events)."""
from flask import jsonify

from ... import queries
from ...datasets.registry import DEFAULT
from ..auth import VIEWER, requires
from ..filters import current_dataset
from ..target import export_response
from . import schemas
from .blueprint import ApiError, bp, errors, id_cursor, pick, read
from .links import TARGET_LINKS

EXPORT = {"application/json": {"schema": {"anyOf": [
    {"$ref": "#/components/schemas/TargetPage"},
    {"type": "array", "items": schemas.ROW}]}},
    "text/csv": {"schema": {"type": "string"}}}


def row_fields(dataset) -> tuple[str, ...]:
    """The columns a dataset's rows show: events' six of SPEC §9, another dataset's table columns in order."""
    return schemas.TARGET_FIELDS if dataset.name == DEFAULT else tuple(c.key for c in dataset.table.columns)


@bp.get("/target")
@requires(VIEWER)
@bp.arguments(schemas.TargetQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.TargetPage, description="A page of rows, or with `format` the whole view streamed.")
@bp.doc(responses={200: {"content": EXPORT, "links": TARGET_LINKS}})
@errors(404, 503)
def list_target(view, limit, cursor=None, format=None):
    """A dataset's target table: prefix searches, sort, keyset pages; or the whole view streamed."""
    columns = row_fields(view["dataset"])
    if format:
        return export_response(lambda conn: queries.iter_target(conn, **view), format,
                               "sluice-target" if view["dataset"].name == DEFAULT else f"sluice-{view['dataset'].name}",
                               columns)
    page = read(queries.target_page, cursor=cursor, limit=limit, **view)
    return jsonify({"items": [pick(r, columns) for r in page["rows"]], "next": page["next"]})


KEY = [{"in": "path", "name": "key", "required": True, "description": "A record key (may contain `/`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": schemas.TEXT_PATTERN}}]


@bp.route("/lineage/<path:key>", methods=["GET"], parameters=KEY)
@requires(VIEWER)
@bp.arguments(schemas.LineageQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.Lineage, description="The key's lineage.")
@errors(404, 503)
def lineage(key: str, limit, cursor=None, dataset=DEFAULT):
    """A key's current target row in a dataset and its lineage timeline: newest first, and by run."""
    ds = current_dataset(dataset)
    id_cursor(cursor)
    if not queries.storable(key) or len(key) > 256:
        raise ApiError(404, "not_found", "no record was ever seen with this key")
    data = read(queries.lineage_of_key, key, ds, cursor=cursor, limit=limit)
    if data["target"] is None and not data["rows"] and cursor is None:
        raise ApiError(404, "not_found", f"no record was ever seen with the key {key!r}"
                       + ("" if ds.name == DEFAULT else f" in dataset {ds.name}"))
    return jsonify({"key": key, "dataset": ds.name,
                    "target": data["target"] and pick(data["target"], row_fields(ds)),
                    "items": [pick(r, schemas.LINEAGE_FIELDS) for r in data["rows"]],
                    "groups": [{**pick(grp, ("run_id", "at", "continued", "continues")),
                                "items": [pick(e, schemas.LINEAGE_STEP_FIELDS) for e in grp["entries"]]}
                               for grp in data["groups"]],
                    "next": data["next"]})
