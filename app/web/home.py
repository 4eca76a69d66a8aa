"""The home page: every dataset's numbers, the upload form (which asks for the dataset) and the latest runs."""
from flask import Blueprint, g, render_template
from wtforms.fields.choices import SelectChoice

from .. import queries
from ..extensions import db
from .auth import VIEWER, requires
from .forms import UploadForm

bp = Blueprint("home", __name__)


def upload_choices(conn, form: UploadForm) -> list:
    """Offer the datasets a file can be uploaded to (not the archived ones); the page's own is chosen first."""
    datasets = queries.datasets_overview(conn)
    form.dataset.choices = [SelectChoice(d["name"], d["name"] + (f" — {d['title']}" if d["title"] else ""))
                            for d in datasets if d["archived_at"] is None]
    if not form.is_submitted() and g.dataset.archived_at is None:
        form.dataset.data = g.dataset.name
    return datasets


def home_page(form: UploadForm, status: int = 200, **extra):
    """The home page with this upload form (and its errors)."""
    with db.engine.connect() as conn:
        datasets = upload_choices(conn, form)
        data = queries.overview(conn, g.dataset)
        del data["dataset"]  # its name: the page shows g.dataset itself (title and all)
        data["latest_runs"] = queries.latest_runs(conn, every=True)
    return render_template("home/index.html", form=form, datasets=datasets, **data, **extra), status


@bp.get("/")
@requires(VIEWER)
def index():
    """Every dataset's numbers, the upload form and the latest runs of every dataset."""
    return home_page(UploadForm())
