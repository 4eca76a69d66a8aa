"""Lineage of a key in a dataset: its current target row and its timeline across runs; the jump-to-key box lands here."""
from flask import Blueprint, g, redirect, render_template, request, url_for

from .. import queries
from ..extensions import db
from .auth import VIEWER, requires

bp = Blueprint("lineage", __name__, url_prefix="/lineage")


@bp.get("")
@requires(VIEWER)
def jump():
    """The jump-to-key box: go to the key's lineage."""
    key = request.args.get("key", "").strip()
    if not key:
        return redirect(url_for("target.index"))
    return redirect(url_for("lineage.show", key=key))


@bp.get("/<path:key>")
@requires(VIEWER)
def show(key: str):
    """A key's target row and timeline, newest first; a helpful page for a key never seen."""
    with db.engine.connect() as conn:
        data = queries.lineage_of_key(conn, key, g.dataset, cursor=request.args.get("cursor"))
        similar = queries.similar_keys(conn, key, g.dataset) if not data["rows"] and data["target"] is None else []
    status = 404 if not data["rows"] and data["target"] is None and data["first_page"] else 200
    return render_template("lineage/show.html", data=data, similar=similar,
                           columns=queries.target_columns(g.dataset)), status
