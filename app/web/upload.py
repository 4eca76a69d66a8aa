"""Uploads from the browser: every file becomes a queued run (by form post, or by XHR with progress)."""
from flask import Blueprint, current_app, flash, jsonify, redirect, request, url_for

from .. import queries
from ..datasets.registry import DatasetError
from ..extensions import db
from ..formatting import human_bytes
from ..pipeline import InputError, Options, TooLarge
from ..runs import current_service
from .auth import OPERATOR, current_actor, requires
from .forms import UploadForm
from .home import home_page, upload_choices

bp = Blueprint("upload", __name__)


def _options(form: UploadForm) -> Options:
    percent = form.max_reject_percent.data
    return Options(ignore_watermark=bool(form.ignore_watermark.data),
                   max_reject_rate=None if percent is None else float(percent) / 100,
                   dry_run=bool(form.dry_run.data))


@bp.post("/upload")
@requires(OPERATOR)
def upload():
    """Queue one run per uploaded file; go to the run (or the runs) — JSON for the page's XHR."""
    form = UploadForm()
    xhr = request.accept_mimetypes.best == "application/json"
    files = [f for f in (form.files.data or []) if getattr(f, "filename", "")]
    errors = []
    with db.engine.connect() as conn:
        upload_choices(conn, form)
    offered = {c.value for c in form.dataset.choices}
    if not form.validate_on_submit():
        errors = [f"{form[name].label.text}: {' '.join(messages)}" for name, messages in form.errors.items()]
    elif (form.dataset.data or "events") not in offered:
        errors = [(f"Dataset: {str(form.dataset.data)[:100]!r} is not a dataset files can be uploaded to "
                  "(it does not exist or is archived). Choose another.")]
    elif not files:
        errors = ["Choose at least one file to upload."]
    run_ids = []
    if not errors:
        service = current_service()
        options, actor = _options(form), current_actor()
        for f in files:
            if not queries.storable(f.filename):  # PostgreSQL text cannot hold NUL
                errors.append("A file name must not contain NUL characters: rename the file and upload it again.")
                continue
            try:
                run_ids.append(service.submit(f.stream, f.filename, kind="upload", options=options,
                                              dataset=form.dataset.data or "events", actor=actor))
            except DatasetError as exc:
                errors.append(f"{f.filename}: {exc}")
            except TooLarge:
                errors.append(f"{f.filename}: larger than the upload limit of "
                              f"{human_bytes(current_app.config['SLUICE_MAX_UPLOAD_BYTES'])}.")
            except InputError as exc:
                errors.append(f"{f.filename}: not JSON, JSON Lines or gzip ({exc}).")
    target = url_for("runs.show", run_id=run_ids[0]) if len(run_ids) == 1 else url_for("runs.index")
    if xhr:
        return jsonify({"runs": run_ids, "errors": errors, "location": target if run_ids else None}), \
            202 if run_ids else 400
    if not run_ids:
        return home_page(form, 400, upload_errors=errors)
    for message in errors:
        flash(message, "error")
    flash(f"Queued {len(run_ids)} run{'s' if len(run_ids) != 1 else ''}: "
          + ", ".join(f"#{i}" for i in run_ids) + ".", "ok")
    return redirect(target, 303)
