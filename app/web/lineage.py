"""Lineage of a key in a dataset: its current target row and its timeline by run; the jump-to-key box lands here."""
from flask import Blueprint, g, redirect, render_template, request, url_for

from .. import queries
from ..extensions import db
from .auth import VIEWER, requires

bp = Blueprint("lineage", __name__, url_prefix="/lineage")


@bp.get("")
@requires(VIEWER)
def jump():
    """The jump-to-key box: go to the lineage of the key exactly as typed (spaces are part of a key)."""
    key = request.args.get("key", "")
    if not key:
        return redirect(url_for("target.index"))
    return redirect(url_for("lineage.show", key=key))


@bp.get("/<path:key>")
@requires(VIEWER)
def show(key: str):
    """A key's target row and timeline by run; for a key never seen, the keys it may have meant."""
    with db.engine.connect() as conn:
        data = queries.lineage_of_key(conn, key, g.dataset, cursor=request.args.get("cursor"))
        unseen = not data["rows"] and data["target"] is None
        variants = queries.key_variants(conn, key, g.dataset) if unseen else []
        similar = [k for k in queries.similar_keys(conn, key, g.dataset) if k not in variants] if unseen else []
    status = 404 if unseen and data["first_page"] else 200
    trimmed = key.strip()
    return render_template("lineage/show.html", data=data, variants=variants, similar=similar,
                           trimmed=trimmed if trimmed != key and trimmed in variants else None,
                           columns=queries.target_columns(g.dataset)), status
