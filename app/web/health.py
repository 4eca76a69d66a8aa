"""`GET /healthz`: whether the app and its database answer."""
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..config import redact
from ..extensions import db
from .auth import public

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz():
    """200 when the database answers a query, 503 with the reason otherwise."""
    error = current_app.config.get("SLUICE_DB_ERROR")
    if error is None:
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            error = redact(getattr(exc, "orig", None) or exc, current_app.config["SQLALCHEMY_DATABASE_URI"])
    if error:
        return jsonify(status="error", database=error), 503
    return jsonify(status="ok", database="ok")
