"""The home page: the upload form, headline numbers and the latest runs."""
from flask import Blueprint, render_template

from .. import queries
from ..extensions import db
from .forms import UploadForm

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    """Upload form, headline numbers and the latest runs."""
    with db.engine.connect() as conn:
        data = queries.overview(conn)
    return render_template("home/index.html", form=UploadForm(), **data)
