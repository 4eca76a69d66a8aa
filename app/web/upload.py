"""Uploads from the browser: every file becomes a queued run (by form post, or by XHR with progress)."""
from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for

from .. import queries
from ..extensions import db
from ..formatting import human_bytes
from ..pipeline import InputError, Options, TooLarge
from ..runs import current_service
from .forms import UploadForm

bp = Blueprint("upload", __name__)


def _options(form: UploadForm) -> Options:
    percent = form.max_reject_percent.data
    return Options(ignore_watermark=bool(form.ignore_watermark.data),
                   max_reject_rate=None if percent is None else float(percent) / 100,
                   dry_run=bool(form.dry_run.data))


@bp.post("/upload")
def upload():
    """Queue one run per uploaded file; go to the run (or the runs) — JSON for the page's XHR."""
    form = UploadForm()
    xhr = request.accept_mimetypes.best == "application/json"
    files = [f for f in (form.files.data or []) if getattr(f, "filename", "")]
    errors = []
    if not form.validate_on_submit():
        errors = [f"{form[name].label.text}: {' '.join(messages)}" for name, messages in form.errors.items()]
    elif not files:
        errors = ["Choose at least one file to upload."]
    run_ids = []
    if not errors:
        service = current_service()
        options = _options(form)
        for f in files:
            if not queries.storable(f.filename):  # PostgreSQL text cannot hold NUL
                errors.append("A file name must not contain NUL characters: rename the file and upload it again.")
                continue
            try:
                run_ids.append(service.submit(f.stream, f.filename, kind="upload", options=options))
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
        with db.engine.connect() as conn:
            data = queries.overview(conn)
        return render_template("home/index.html", form=form, upload_errors=errors, **data), 400
    for message in errors:
        flash(message, "error")
    flash(f"Queued {len(run_ids)} run{'s' if len(run_ids) != 1 else ''}: "
          + ", ".join(f"#{i}" for i in run_ids) + ".", "ok")
    return redirect(target, 303)
