"""The home page: headline numbers and the latest runs."""
from flask import Blueprint, render_template

from .. import queries
from ..extensions import db

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    """Headline numbers and the latest runs."""
    return render_template("home/index.html", **queries.overview(db.session.connection()))
