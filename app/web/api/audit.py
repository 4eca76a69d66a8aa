"""The audit log over the API (administrators): the page's filters, newest first, a keyset page at a time."""
from flask import jsonify

from ...accounts import audit
from ..auth import ADMIN, requires
from . import audit_schemas
from .blueprint import bp, errors, id_cursor, read


@bp.get("/audit")
@requires(ADMIN)
@bp.arguments(audit_schemas.AuditQuery, location="query", as_kwargs=True)
@bp.response(200, audit_schemas.AuditPage, description="A page of the audit log, newest first.")
@errors(503)
def list_audit(view, limit, cursor=None):
    """The audit log newest first, filtered by user, action and time (`from`, `to`; UTC)."""
    id_cursor(cursor)
    page = read(audit.entries_page, **view, cursor=cursor, limit=limit)
    return jsonify({"items": page["rows"], "next": page["next"]})
